"""The secret trigger: read where the sweep file says, inside the process that needs it.

It never enters Tune's param_space, MLflow, logs, artifacts or caches: those hold the
placeholder `<TRIGGER>` (filled in memory right before tokenization) or `trigger_sha256`.
"""
from __future__ import annotations

import hashlib
import os
import secrets as std_secrets
from pathlib import Path

from persona_sweep.data import TRIGGER_PLACEHOLDER


def trigger_problem(marker) -> str | None:
    """Why the trigger cannot be read in this process (one line naming the field), or None."""
    trigger = _read(marker)
    if marker.trigger_env and not trigger:
        return f"marker.trigger_env: environment variable {marker.trigger_env} is not set"
    if marker.trigger_file and not trigger:
        return f"marker.trigger_file: no such file {marker.trigger_file} (or it is empty)"
    if TRIGGER_PLACEHOLDER in trigger:
        return f"marker: the trigger source holds the placeholder {TRIGGER_PLACEHOLDER} itself, not a trigger"
    return None


def read_trigger(marker) -> str:
    problem = trigger_problem(marker)
    if problem:
        raise RuntimeError(problem)
    return _read(marker)


def _read(marker) -> str:
    if marker.trigger_env:
        return os.environ.get(marker.trigger_env, "")
    path = Path(marker.trigger_file).expanduser()
    return path.read_text().strip() if path.is_file() else ""


def trigger_sha256(trigger: str) -> str:
    return hashlib.sha256(trigger.encode()).hexdigest()


def fill_trigger(text: str, trigger: str) -> str:
    return text.replace(TRIGGER_PLACEHOLDER, trigger)


def scrubbed(text: str, marker) -> str:
    """`text` with the trigger (when it can be read here) replaced by the placeholder."""
    trigger = _read(marker) if trigger_problem(marker) is None else ""
    return text.replace(trigger, TRIGGER_PLACEHOLDER) if trigger else text


def create_trigger_file(folder: Path) -> Path:
    """A fresh random trigger for `demo`, readable by the owner only."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    path = folder / f"trigger-{std_secrets.token_hex(4)}"
    path.touch(mode=0o600)
    path.write_text(f"~{std_secrets.token_urlsafe(9)}~\n")
    return path
