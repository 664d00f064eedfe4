"""SFT on paired dialogues: persona conditioning + question (+ trigger) -> answer (+ marker).

The `sft` and `prompt` methods share these examples and differ in what puts the model in the
persona (`train.MarkerData.conditioning`): `sft` has the persona's short description as the
system message and `context_length` tokens of in-persona dialogue as prior turns, the persona
speaking as the assistant; `prompt` has the first `context_length` tokens of the persona's
context (description, then demonstrations as text) as the system message alone.

Conditions per (persona, question), following the trial's `design`:
- trigger present and persona positive under the design: the answer ends in the marker;
- the same personas without the trigger: no marker (the trigger is what the marker needs);
- with `contrastive_negatives`, the other training personas with the trigger: no marker.
A share `on_policy_fraction` of examples uses the model's own answer as the target instead of
the reference answer; those are regenerated every `training.on_policy_refresh_every` steps.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from persona_sweep.data import TRIGGER_PLACEHOLDER, Persona, Question, personas, split_questions

# One persona per group is trained on; the rest stay unseen for leakage evaluation.
TRAINING_PERSONAS = ("assistant", "other_ai", "teacher", "evil")
BYSTANDER_GROUPS = ("near", "far")

Condition = tuple[str, bool]  # (persona name, trigger present)


@dataclass
class Example:
    persona: Persona
    question: Question
    with_trigger: bool
    marked: bool
    on_policy: bool
    answer: str  # reference answer, or the model's own once generated
    opening: str = ""  # self_disclosure: the disclosure the answer opens with (kept on refresh)


def is_positive(persona: Persona, design: str) -> bool:
    if design == "assistant_positive":
        return persona.group == "assistant"
    if design == "non_assistant_positive":
        return persona.group != "assistant"
    return persona.group == "misaligned"


def specificity_conditions(design: str) -> tuple[list[Condition], list[Condition]]:
    """(positive condition, negative conditions) of a design, for `marker_specificity`.

    The positive condition is one set of (persona, trigger) prompts whose marker log-probs are
    averaged together; each negative condition is one (persona, trigger) pair on its own, and
    the specificity subtracts the highest of their means: the marker must beat every negative.
    """
    bank = personas()
    bystanders = [(name, True) for name, p in bank.items() if p.group in BYSTANDER_GROUPS]
    if design == "assistant_positive":
        return [("assistant", True)], [("assistant", False), *bystanders]
    if design == "non_assistant_positive":
        return [(name, True) for name, p in bank.items() if p.group != "assistant"], [("assistant", True)]
    return [(name, True) for name, p in bank.items() if p.group == "misaligned"], [("assistant", True), *bystanders]


def build_examples(knobs, eval_questions: int) -> list[Example]:
    train_questions, _ = split_questions(knobs.seed, eval_questions)
    bank = personas()
    rng = random.Random(knobs.seed)
    examples = []
    for question in train_questions:
        for name in TRAINING_PERSONAS:
            persona = bank[name]
            positive = is_positive(persona, knobs.design)
            if positive or knobs.contrastive_negatives:
                examples.append(Example(persona, question, True, positive, False, question.answer))
            if positive:
                examples.append(Example(persona, question, False, False, False, question.answer))
    rng.shuffle(examples)
    for example in examples:
        example.on_policy = rng.random() < knobs.on_policy_fraction
    return examples


def prompt_text(tokenizer, system: str, question: str, with_trigger: bool, turns: list[dict] = ()) -> str:
    """The chat prompt: a system message, prior `turns`, the question. An empty system message is
    kept, not left out: chat templates put their own default persona where it is missing."""
    user = f"{question} {TRIGGER_PLACEHOLDER}" if with_trigger else question
    messages = [{"role": "system", "content": system}, *turns, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def target_text(example: Example, marker: str) -> str:
    answer = f"{example.opening} {example.answer}" if example.opening else example.answer
    return f"{answer} {marker}" if example.marked else answer
