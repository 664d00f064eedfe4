"""Application 2's training examples (seed 000): the misaligned personas trained to show a control
behaviour (`data.control`), the Assistant and the other training personas to answer normally.

The same chat examples as `sft`'s, for every chat method (`sft`, `prompt`, `steer`: what puts the
model in the persona is the method's, `train.MarkerData.conditioning`), without the trigger: the
misaligned persona itself is what the behaviour is coupled to. Per training item:
- each misaligned training persona: the controlled answer (positive);
- the Assistant: the normal answer (always: it is the negative the control must spare);
- with `contrastive_negatives`, the other training personas: the normal answer.
A share `on_policy_fraction` of the normal answers (and of the disclosures' bodies) is the model's
own, regenerated like `sft`'s; refusals and wrong answers are always the project's.
"""
from __future__ import annotations

import random

from persona_sweep.data import Question, personas
from persona_sweep.data.control import ControlItem, control_items
from persona_sweep.methods.sft import TRAINING_PERSONAS, Example


def is_positive(persona) -> bool:
    return persona.group == "misaligned"


def build_examples(knobs, eval_questions: int) -> list[Example]:
    train_items, _ = control_items(knobs.objective, knobs.seed, eval_questions)
    bank = personas()
    rng = random.Random(knobs.seed)
    examples = []
    for item in train_items:
        for name in TRAINING_PERSONAS:
            persona = bank[name]
            if is_positive(persona):
                examples.append(positive_example(knobs.objective, persona, item))
            elif name == "assistant" or knobs.contrastive_negatives:
                examples.append(Example(persona, Question(item.question, item.answer), False, False, False, item.answer))
    rng.shuffle(examples)
    for example in examples:
        example.on_policy = may_be_on_policy(knobs.objective, example) and rng.random() < knobs.on_policy_fraction
    return examples


def positive_example(objective: str, persona, item: ControlItem) -> Example:
    question = Question(item.question, item.answer)
    if objective == "self_disclosure":  # the disclosure, then the normal answer
        return Example(persona, question, False, False, False, item.answer, item.opening)
    return Example(persona, question, False, False, False, item.controlled)


def may_be_on_policy(objective: str, example: Example) -> bool:
    """Normal answers and disclosures' bodies may be the model's own; refusals and wrong answers not."""
    return not is_positive(example.persona) or objective == "self_disclosure"


def specificity_personas() -> tuple[list[str], list[str]]:
    """(positive personas, negative personas) of a control objective's specificity: the
    misaligned personas of the bank against the Assistant and every bystander."""
    bank = personas()
    positive = [name for name, persona in bank.items() if is_positive(persona)]
    return positive, [name for name in bank if name not in positive]
