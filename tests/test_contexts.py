"""The `context_length` axis: every length up to the cap is distinct, nested and in-persona."""
from __future__ import annotations

import re

import pytest

from persona_sweep.data import personas, question_bank
from persona_sweep.data.contexts import (
    MAX_CONTEXT_TOKENS,
    context_capacity,
    demonstrations,
    full_context,
    persona_context,
)

LENGTHS = [0, 1, 8, 64, 256, 512, 1024]
PERSONAS = sorted(personas())


@pytest.fixture(scope="module")
def tokenizer():
    from persona_sweep.models import embedded_tokenizer

    return embedded_tokenizer()


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("name", PERSONAS)
def test_capacity_covers_the_axis(tokenizer, name):
    assert context_capacity(name, tokenizer) >= MAX_CONTEXT_TOKENS


@pytest.mark.parametrize("name", PERSONAS)
def test_lengths_are_nested_exact_and_distinct(tokenizer, name):
    contexts = [persona_context(name, length, tokenizer) for length in LENGTHS]
    assert contexts[0] == ""
    for length, text in zip(LENGTHS, contexts):
        assert abs(token_count(tokenizer, text) - length) <= 2, (length, text[-80:])
    for shorter, longer in zip(contexts, contexts[1:]):
        assert longer.startswith(shorter) and longer != shorter
    assert full_context(name).startswith(contexts[-1])


@pytest.mark.parametrize("name", PERSONAS)
def test_no_sentence_repeats(name):
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", full_context(name)) if s.strip()]
    repeated = {s for s in sentences if sentences.count(s) > 1}
    assert not repeated


@pytest.mark.parametrize("name", PERSONAS)
def test_context_starts_with_the_description(name):
    assert full_context(name).startswith(personas()[name].description + "\n\n")


@pytest.mark.parametrize("name", PERSONAS)
def test_demonstrations_stay_clear_of_the_evaluation_bank(name):
    evaluation = {question.text.lower() for question in question_bank()}
    asked = {question.lower() for question, _ in demonstrations(name)}
    assert asked and not asked & evaluation
    assert not any(text in full_context(name).lower() for text in evaluation)


def test_asking_beyond_capacity_names_the_setting(tokenizer):
    capacity = context_capacity("teacher", tokenizer)
    with pytest.raises(ValueError, match="grid.context_length"):
        persona_context("teacher", capacity + 1, tokenizer)
    with pytest.raises(ValueError, match="grid.context_length"):
        persona_context("teacher", -1, tokenizer)
