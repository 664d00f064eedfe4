"""Drift conversations: the user side of multi-turn conversations, per domain (`drift/*.yaml`,
written by `make_drift.py`), for the drift corruption and `axis project`.

A domain file holds `drifts` (whether the Assistant Axis work found such conversations to move
a model away from its Assistant persona), `description` and `conversations` (lists of user
turns). A file of your own in the same layout is read by its path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from persona_sweep.data import shipped, shipped_or_file
from persona_sweep.errors import SweepError

DRIFT_DIR = Path(__file__).parent / "drift"


@dataclass(frozen=True)
class DriftDomain:
    name: str
    drifts: bool
    description: str
    conversations: tuple[tuple[str, ...], ...]

    @property
    def turns(self) -> int:
        """User turns of the shortest conversation: the most any probe can use."""
        return min(len(conversation) for conversation in self.conversations)


def shipped_domains() -> list[str]:
    return shipped(DRIFT_DIR, ".yaml")


def load_domain(name_or_path: str | Path) -> DriftDomain:
    """A shipped domain by name, or a file in the same layout by path; refused in one line."""
    path = shipped_or_file(name_or_path, DRIFT_DIR, ".yaml", "drift domain")
    try:
        content = yaml.safe_load(path.read_text())
        conversations = tuple(tuple(str(turn) for turn in conversation) for conversation in content["conversations"])
        domain = DriftDomain(path.stem, bool(content["drifts"]), str(content.get("description", "")), conversations)
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise SweepError(f"drift file {path}: not the drift layout (drifts, description, conversations: "
                         f"[[user turn, ...], ...]): {error!r}") from None
    if not conversations or not all(conversations):
        raise SweepError(f"drift file {path}: needs at least one conversation of at least one user turn")
    return domain
