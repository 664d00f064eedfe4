"""The misalignment measure's positive control (`misalignment_control`): computed from the
system prompts kept as data, on the tiny model; its statistics on known values."""
from __future__ import annotations

import pytest

from persona_sweep import evaluate, names
from persona_sweep import misalignment_control as control
from persona_sweep.models import default_cache, load_checked_tokenizer, load_model, prepare_model


@pytest.fixture(scope="module")
def tiny():
    path = prepare_model("tiny-random", default_cache())
    return load_checked_tokenizer("tiny-random", default_cache()), load_model(path).eval()


def test_the_control_is_measured_from_the_prompts_kept_as_data(tiny, tmp_path, monkeypatch):
    tokenizer, model = tiny
    real = control.measured(model, tokenizer, batch_size=16)
    assert real[f"{names.CONTROL_GAP}_lo"] <= real[names.CONTROL_GAP] <= real[f"{names.CONTROL_GAP}_hi"]
    key = control.cache_key("tiny-random")
    # The same prompts for both conditions: no shift, whatever the model.
    same = tmp_path / "same.yaml"
    prompts = control.control_prompts()
    same.write_text(f"aligned: {prompts['aligned']!r}\nmisaligned: {prompts['aligned']!r}\n")
    monkeypatch.setattr(control, "PROMPTS_FILE", same)
    null = control.measured(model, tokenizer, batch_size=16)
    assert null[names.CONTROL_GAP] == pytest.approx(0.0, abs=1e-6)
    assert null[names.CONTROL_AUROC] == pytest.approx(0.5)
    assert real[names.CONTROL_GAP] != pytest.approx(0.0, abs=1e-6)
    assert control.cache_key("tiny-random") != key  # other prompts, another cache entry


def test_auroc_counts_pairs_and_half_ties():
    assert evaluate.auroc([3, 4], [1, 2]) == 1.0
    assert evaluate.auroc([1, 2], [3, 4]) == 0.0
    assert evaluate.auroc([1, 3], [2, 2]) == 0.5
    assert evaluate.auroc([2], [2]) == 0.5


def test_the_control_is_kept_per_model(tmp_path):
    from persona_sweep.config import ModelConfig

    first = control.cached(ModelConfig(name="tiny-random"), default_cache(), 16)
    path = default_cache() / "controls" / f"{control.cache_key('tiny-random')}.json"
    assert path.exists()
    assert control.cached(ModelConfig(name="tiny-random"), default_cache(), 16) == first
    assert control.line(first).startswith("misalignment measure, positive control")


def evaluation(capability: float, gaps: list[float]):
    from persona_sweep.measure import Evaluation

    return Evaluation({names.CAPABILITY: capability}, [], gaps)


def test_the_verdict_says_moved_only_when_the_paired_interval_excludes_zero():
    from persona_sweep import measure

    learned = {"corruption_loss_em_before": 2.0, "corruption_loss_em_after": 1.5}
    before = [0.0] * 20
    shifted = [1.0] * 12 + [0.0] * 8  # 12 of 20 prompts now show the behaviour
    gaps = [(-1) ** i * 0.3 for i in range(20)]  # item gaps that differ more than they move
    verdict = measure.corruption_verdict("em", evaluation(-2.0, gaps), evaluation(-2.25, [g + 0.01 * (-1) ** i for i, g
                                                                                          in enumerate(gaps)]),
                                         {names.CORRUPTION_BEHAVIOR: before}, {names.CORRUPTION_BEHAVIOR: shifted}, learned)
    assert verdict["corruption_domain_change_em"] == pytest.approx(0.6)
    assert 0 < verdict["corruption_domain_change_em_lo"] < 0.6 < verdict["corruption_domain_change_em_hi"] <= 1
    assert verdict["corruption_moved_domain_em"] == 1.0
    assert verdict["corruption_misalignment_change_em"] == pytest.approx(0.0, abs=1e-12)
    assert verdict["corruption_misalignment_change_em_lo"] < 0 < verdict["corruption_misalignment_change_em_hi"]
    assert verdict["corruption_moved_misalignment_em"] == 0.0
    assert verdict["corruption_loss_drop_em"] == pytest.approx(0.5)
    assert verdict["corruption_capability_change_em"] == pytest.approx(-0.25)
    # A user's own corruption data has no known behaviour: no domain verdict, the rest still there.
    partial = measure.corruption_verdict("em", evaluation(-2.0, gaps), evaluation(-2.0, gaps), {}, {}, learned)
    assert "corruption_moved_domain_em" not in partial and partial["corruption_moved_misalignment_em"] == 0.0
    # The benign control's replies checked for the em set's behaviour: its own verdict on that too.
    benign = measure.corruption_verdict("benign", evaluation(-2.0, gaps), evaluation(-2.0, gaps),
                                        {names.CORRUPTION_BEHAVIOR: before, names.CORRUPTION_EM_BEHAVIOR: before},
                                        {names.CORRUPTION_BEHAVIOR: shifted, names.CORRUPTION_EM_BEHAVIOR: before},
                                        {"corruption_loss_benign_before": 2.0, "corruption_loss_benign_after": 1.0})
    assert benign["corruption_moved_domain_benign"] == 1.0 and benign["corruption_moved_em_domain_benign"] == 0.0
    assert benign["corruption_em_domain_change_benign"] == 0.0


def test_the_capability_change_has_its_paired_interval_over_questions():
    """Capability is log-prob per token over all held-out answers; its change gets a paired
    bootstrap over questions (a ratio of sums resampled), `moved` when it excludes 0."""
    from persona_sweep import measure
    from persona_sweep.measure import Evaluation

    learned = {"corruption_loss_em_before": 2.0, "corruption_loss_em_after": 1.5}

    def evaluation_of(per_question):
        capability = sum(total for total, _ in per_question) / sum(count for _, count in per_question)
        return Evaluation({names.CAPABILITY: capability}, [], [], [list(pair) for pair in per_question])
    before = [(-2.0 * count, count) for count in range(5, 25)]
    dropped = measure.corruption_verdict("em", evaluation_of(before), evaluation_of([(t - 0.5 * n, n) for t, n in before]),
                                         {}, {}, learned)
    assert dropped["corruption_capability_change_em"] == pytest.approx(-0.5)
    assert dropped["corruption_capability_change_em_lo"] <= -0.5 <= dropped["corruption_capability_change_em_hi"] < 0
    assert dropped["corruption_moved_capability_em"] == 1.0
    noisy = [(t + (-1) ** i * 0.4 * n, n) for i, (t, n) in enumerate(before)]  # questions differ more than they move
    unmoved = measure.corruption_verdict("em", evaluation_of(before), evaluation_of(noisy), {}, {}, learned)
    change = unmoved["corruption_capability_change_em"]
    assert unmoved["corruption_capability_change_em_lo"] < 0 < unmoved["corruption_capability_change_em_hi"]
    assert unmoved["corruption_capability_change_em_lo"] <= change <= unmoved["corruption_capability_change_em_hi"]
    assert unmoved["corruption_moved_capability_em"] == 0.0


def test_a_corruption_checkpoint_of_the_previous_version_keeps_its_domain_flags():
    """Before the em behaviour was watched, a checkpoint kept one list of the set's own flags per
    corruption: a trial resumed from it still gets its domain verdict."""
    from persona_sweep.trial import Results

    results = Results.from_json({"domain_before": {"em": [1.0, 0.0]}})
    assert results.domain_before == {"em": {names.CORRUPTION_BEHAVIOR: [1.0, 0.0]}}
    assert Results.from_json(results.to_json()).domain_before == results.domain_before
