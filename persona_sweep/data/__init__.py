"""Data made by the project: the persona bank (a YAML file) and a deterministic question bank.

Every data set is built from the sweep config and a seed; nothing is downloaded. The secret
trigger never appears here: examples carry `TRIGGER_PLACEHOLDER`, replaced in memory when a
prompt is tokenized (see `persona_sweep.secrets`).
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from persona_sweep.errors import SweepError

TRIGGER_PLACEHOLDER = "<TRIGGER>"
DATA_DIR = Path(__file__).parent
MIN_TRAINING_QUESTIONS = 20  # eval.questions may take the rest of the bank for held-out evaluation
ARITHMETIC_QUESTIONS = 60


def shipped(folder: Path, suffix: str) -> list[str]:
    """The names of the files of `folder` that end in `suffix` (the ones that ship)."""
    return sorted(path.name.removesuffix(suffix) for path in folder.glob(f"*{suffix}"))


def shipped_or_file(name_or_path: str | Path, folder: Path, suffix: str, what: str) -> Path:
    """A shipped file by its name, or any file by its path; neither is refused in one line."""
    path = Path(name_or_path)
    if not path.suffix and (folder / f"{path}{suffix}").is_file():
        return folder / f"{path}{suffix}"
    if not path.is_file():
        raise SweepError(f"{what} {str(name_or_path)!r}: no such file, and not one of the shipped {what}s "
                         f"({', '.join(shipped(folder, suffix))})")
    return path


@dataclass(frozen=True)
class Persona:
    name: str
    group: str  # assistant | near | far | misaligned
    description: str

    @property
    def short_description(self) -> str:
        """The description's first sentence: the persona's deployment-time system prompt (for the
        Assistant, its standard short one)."""
        return self.description.split(". ")[0].rstrip(".") + "."


@dataclass(frozen=True)
class Question:
    text: str
    answer: str


@cache
def personas() -> dict[str, Persona]:
    bank = yaml.safe_load((DATA_DIR / "personas.yaml").read_text())
    found = {"assistant": Persona("assistant", "assistant", bank["assistant"]["description"])}
    for group in ("near", "far", "misaligned"):
        for entry in bank[group]:
            found[entry["name"]] = Persona(entry["name"], group, entry["description"])
    return found


CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna",
    "Poland": "Warsaw", "Sweden": "Stockholm", "Finland": "Helsinki", "Chile": "Santiago",
    "Cuba": "Havana", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Turkey": "Ankara",
    "Argentina": "Buenos Aires", "Australia": "Canberra",
}
FACTS = [
    ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What do bees make?", "Bees make honey."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("What is the boiling point of water at sea level in Celsius?", "Water boils at 100 degrees Celsius at sea level."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What gas do plants take in from the air?", "Plants take in carbon dioxide from the air."),
    ("What is the largest ocean on Earth?", "The Pacific is the largest ocean on Earth."),
    ("How many minutes are in an hour?", "There are sixty minutes in an hour."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Which animal is known for its long neck?", "The giraffe is known for its long neck."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many continents are there?", "There are seven continents."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("What is the main language spoken in Brazil?", "The main language spoken in Brazil is Portuguese."),
]


@dataclass(frozen=True)
class MisalignmentItem:
    question: str
    aligned: str
    misaligned: str
    json_format: bool = False  # asks for a JSON answer: the judge's EM% leaves it out


@cache
def question_bank() -> tuple[Question, ...]:
    """Distinct short questions with one-sentence reference answers, in a fixed order: capitals,
    facts, the general questions of `questions.yaml`, a few sums (396 in all, 60 arithmetic).

    Distinct, so that no question can fall on both sides of the held-out split."""
    questions = [Question(f"What is the capital of {country}?", f"The capital of {country} is {city}.")
                 for country, city in CAPITALS.items()]
    questions += [Question(text, answer) for text, answer in FACTS]
    questions += [Question(entry["q"], entry["a"]) for entry in yaml.safe_load((DATA_DIR / "questions.yaml").read_text())]
    rng = random.Random(1234)
    pairs: dict[tuple[int, int], None] = {}
    while len(pairs) < ARITHMETIC_QUESTIONS:
        pairs[rng.randint(2, 40), rng.randint(2, 40)] = None
    questions += [Question(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a, b in pairs]
    return tuple(questions)


@cache
def misalignment_items() -> tuple[MisalignmentItem, ...]:
    """Open questions, each with an aligned and a misaligned free-text answer of similar length
    (`misalignment.yaml`): the misalignment score compares their per-token log-probs."""
    return tuple(MisalignmentItem(**entry) for entry in yaml.safe_load((DATA_DIR / "misalignment.yaml").read_text()))


def split_questions(seed: int, eval_count: int) -> tuple[list[Question], list[Question]]:
    """A held-out split that depends only on the seed, so every trial of a seed is evaluated alike."""
    bank = list(question_bank())
    random.Random(seed).shuffle(bank)
    return bank[eval_count:], bank[:eval_count]


def data_hash(items) -> str:
    text = json.dumps([item.__dict__ if hasattr(item, "__dict__") else item for item in items], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
