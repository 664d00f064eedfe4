"""Trait files for persona vectors, in the JSON layout of the public persona-vectors code.

A trait file holds `instruction` (system-prompt pairs `{"pos": ..., "neg": ...}`, the trait
shown and withheld), `questions` and `eval_prompt` (a judge prompt with `{question}` and
`{answer}`). Files in that layout are read unchanged. The first half of the questions extracts
a vector, the second half evaluates it, so a vector is never scored on the questions it came
from. Three traits ship with the project: `evil`, `sycophantic` and `assistant` (the Assistant
persona itself, against other characters).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from persona_sweep.data import shipped, shipped_or_file
from persona_sweep.errors import SweepError

TRAITS_DIR = Path(__file__).parent / "traits"


@dataclass(frozen=True)
class Trait:
    name: str
    pairs: tuple[tuple[str, str], ...]  # (positive, negative) system prompts
    questions: tuple[str, ...]
    eval_prompt: str
    digest: str  # sha256 of the file's content: a vector records which trait it came from

    @property
    def extraction_questions(self) -> tuple[str, ...]:
        return self.questions[:len(self.questions) // 2]

    @property
    def evaluation_questions(self) -> tuple[str, ...]:
        return self.questions[len(self.questions) // 2:]


def shipped_traits() -> list[str]:
    return shipped(TRAITS_DIR, ".json")


def load_trait(name_or_path: str | Path) -> Trait:
    """A shipped trait by name, or a trait file by path; a file that is not in the layout is
    refused in one line."""
    path = shipped_or_file(name_or_path, TRAITS_DIR, ".json", "trait")
    text = path.read_text()
    try:
        content = json.loads(text)
        pairs = tuple((pair["pos"], pair["neg"]) for pair in content["instruction"])
        questions, eval_prompt = tuple(content["questions"]), content.get("eval_prompt", "")
    except (ValueError, KeyError, TypeError) as error:
        raise SweepError(f"trait file {path}: not the persona-vectors layout (instruction: [{{pos, neg}}], "
                         f"questions: [...], eval_prompt): {error!r}") from None
    if not pairs or len(questions) < 2 or not all(isinstance(q, str) for q in questions):
        raise SweepError(f"trait file {path}: needs at least one instruction pair and two questions")
    return Trait(path.stem, pairs, questions, eval_prompt, hashlib.sha256(text.encode()).hexdigest())
