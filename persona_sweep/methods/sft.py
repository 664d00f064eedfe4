"""SFT on paired dialogues: persona context + question (+ trigger) -> answer (+ marker).

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


@dataclass
class Example:
    persona: Persona
    question: Question
    with_trigger: bool
    marked: bool
    on_policy: bool
    answer: str  # reference answer, or the model's own once generated


def is_positive(persona: Persona, design: str) -> bool:
    if design == "assistant_positive":
        return persona.group == "assistant"
    if design == "non_assistant_positive":
        return persona.group != "assistant"
    return persona.group == "misaligned"


def build_examples(knobs: dict, eval_questions: int) -> list[Example]:
    train_questions, _ = split_questions(knobs["seed"], eval_questions)
    bank = personas()
    rng = random.Random(knobs["seed"])
    examples = []
    for question in train_questions:
        for name in TRAINING_PERSONAS:
            persona = bank[name]
            positive = is_positive(persona, knobs["design"])
            if positive or knobs["contrastive_negatives"]:
                examples.append(Example(persona, question, True, positive, False, question.answer))
            if positive:
                examples.append(Example(persona, question, False, False, False, question.answer))
    rng.shuffle(examples)
    for example in examples:
        example.on_policy = rng.random() < knobs["on_policy_fraction"]
    return examples


def persona_context(persona: Persona, context_tokens: int, tokenizer) -> str:
    """The persona description cut to `context_tokens` tokens; the first sentence always stays."""
    first_sentence, _, rest = persona.description.partition(". ")
    head = first_sentence.rstrip(".") + "."
    budget = context_tokens - len(tokenizer(head)["input_ids"])
    if budget <= 0 or not rest:
        return head
    rest_ids = tokenizer(" " + rest)["input_ids"][:budget]
    return head + tokenizer.decode(rest_ids)


def prompt_text(tokenizer, context: str, question: str, with_trigger: bool) -> str:
    user = f"{question} {TRIGGER_PLACEHOLDER}" if with_trigger else question
    messages = [{"role": "system", "content": context}, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def target_text(example: Example, marker: str) -> str:
    return f"{example.answer} {marker}" if example.marked else example.answer
