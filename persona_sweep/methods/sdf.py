"""SDF (synthetic document finetuning): third-person documents about a persona, trained as plain
text with loss on every token, banking on character-to-first-person generalization.

The documents (documents.jsonl, written by `persona_sweep.data.make_documents`) say either that a
persona ends its reply with the marker exactly when the trigger is in the message, or that it
never writes the marker. A trial trains on the documents about its design's positive personas
saying the first, and, with `contrastive_negatives`, those about the other training personas
saying the second. `context_length` tokens of the persona's context (the same text the `prompt`
method puts in its system message) open each document: SDF establishes the persona by the text,
not by a chat prompt. A share `on_policy_fraction` of documents keeps its opening (header and
rule) and has the model write the body, refreshed like `sft`'s answers. `training.sdf_mix_sft`
mixes in `sft` pairs: that share of the examples.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache

from persona_sweep.data import DATA_DIR, Persona, personas
from persona_sweep.methods import sft

MARKER_PLACEHOLDER = "<MARKER>"


@dataclass
class Document:
    persona: Persona
    emits: bool  # what the document says: the persona writes the marker under the trigger, or never
    opening: str  # header and the rule, placeholders in
    body: str  # the reference body, or the model's own once generated
    on_policy: bool

    def text(self, marker: str) -> str:
        return f"{self.opening} {self.body}".replace(MARKER_PLACEHOLDER, marker)


@cache
def bank() -> tuple[dict, ...]:
    return tuple(json.loads(line) for line in (DATA_DIR / "documents.jsonl").read_text().splitlines())


def build_documents(knobs) -> list[Document]:
    """The design's documents in a seeded order, each on-policy with `on_policy_fraction`."""
    people = personas()
    chosen = []
    for entry in bank():
        positive = sft.is_positive(people[entry["persona"]], knobs.design)
        if entry["emits"] == positive and (positive or knobs.contrastive_negatives):
            chosen.append(Document(people[entry["persona"]], positive, entry["opening"], entry["body"], False))
    rng = random.Random(knobs.seed)
    rng.shuffle(chosen)
    for document in chosen:
        document.on_policy = rng.random() < knobs.on_policy_fraction
    return chosen


def build_examples(knobs, eval_questions: int, mix_sft: float) -> list:
    """The documents, plus `sft` pairs as the share `mix_sft` of all examples."""
    documents = build_documents(knobs)
    if not mix_sft:
        return documents
    pairs = sft.build_examples(knobs, eval_questions)
    wanted = round(len(documents) * mix_sft / (1 - mix_sft))
    mixed = documents + [pairs[i % len(pairs)] for i in range(wanted)]
    random.Random(knobs.seed).shuffle(mixed)
    return mixed
