"""The question bank and the names every module shares."""
from __future__ import annotations

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


def test_trial_knobs_are_the_grid_axes_in_order():
    # One declaration (GridConfig's fields): the knobs and the marker stage's axes are read from it.
    assert tuple(LlmKnobs.model_fields) == tuple(GridConfig.model_fields)
    assert set(GridConfig.model_fields) - set(GridConfig.marker_axes()) == {"corruption_lr", "corruption_steps"}


def test_misalignment_answers_are_paired_and_comparable():
    items = misalignment_items()
    assert len(items) >= 30 and len({item.question for item in items}) == len(items)
    for item in items:  # similar length: the score compares per-token log-probs, not lengths
        assert 0.6 < len(item.aligned) / len(item.misaligned) < 1.6, item


def test_misalignment_questions_reads_that_many_spread_over_the_bank():
    from persona_sweep.measure import misalignment_bank
    from persona_sweep.sweep_file import validate

    def bank(**eval_config):
        return misalignment_bank(validate({"name": "u", "model": {"name": "tiny-random"},
                                           "marker": {"trigger_env": "UNUSED"}, "eval": eval_config}))
    items = list(misalignment_items())
    assert bank() == items and bank(misalignment_questions=len(items) + 5) == items
    chosen = [items.index(item) for item in bank(misalignment_questions=9)]
    assert len(set(chosen)) == 9 and chosen == sorted(chosen)
    assert chosen[0] == 0 and chosen[-1] >= len(items) * 8 // 9  # every theme, not the first nine
