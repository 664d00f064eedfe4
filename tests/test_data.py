"""The question bank and the names every module shares."""
from __future__ import annotations

from persona_sweep import names
from persona_sweep.config import GridConfig, LlmKnobs
from persona_sweep.data import misalignment_items, question_bank, split_questions


def test_questions_are_distinct_so_none_falls_on_both_sides_of_the_split():
    texts = [question.text for question in question_bank()]
    assert len(texts) == len(set(texts)) >= 300
    assert sum(" plus " in text for text in texts) < len(texts) / 5  # mostly not arithmetic
    for seed in range(5):
        train, held_out = split_questions(seed, 16)
        assert not {q.text for q in train} & {q.text for q in held_out}
        assert len(train) + len(held_out) == len(texts)


def test_grid_axes_and_trial_knobs_use_the_names_module():
    assert tuple(GridConfig.model_fields) == names.LLM_AXES
    assert tuple(LlmKnobs.model_fields) == names.LLM_AXES


def test_misalignment_answers_are_paired_and_comparable():
    items = misalignment_items()
    assert len(items) >= 30 and len({item.question for item in items}) == len(items)
    for item in items:  # similar length: the score compares per-token log-probs, not lengths
        assert 0.6 < len(item.aligned) / len(item.misaligned) < 1.6, item
