"""End-to-end toy-world experiments on real trained TransformerLens models (done-when items 2-4, 6)
and the persona-engineering trial the sweep engine calls."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from persona_sweep.sfp.cli import sfp
from persona_sweep.sfp.experiments import (
    STEER_PROCESSES,
    em_experiment,
    format_em,
    pareto_front,
    pareto_optimal,
    persona_engineering_trial,
)
from persona_sweep.sfp.model import TrainSettings, trained_model

torch.set_num_threads(2)
REQUIRED_KEYS = {"scale", "kl_steered_target", "kl_steered_factor", "kl_unsteered_factor", "random_kl_steered_target",
                 "random_kl_steered_factor", "random_kl_unsteered_factor", "centroids", "kl", "position", "layer"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module, so each toy model is trained once and then reused."""
    path = tmp_path_factory.mktemp("sfp-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSONA_SWEEP_CACHE", str(path))
        yield path


@pytest.mark.slow
def test_factored_model_is_within_five_percent_of_bayes_optimal_and_cached(cache):
    build, settings = STEER_PROCESSES["factored"]
    model, info = trained_model(build(), settings)
    assert not info["cached"]
    assert info["optimal_loss"] == pytest.approx(0.5417, abs=0.01)  # same positions 1..16, not the entropy rate
    assert info["model_loss"] / info["optimal_loss"] < 1.05
    _, again = trained_model(build(), settings)
    assert again["cached"] and again["model_loss"] == info["model_loss"]
    assert list((cache / "sfp").glob("*.pt"))


@pytest.mark.slow
def test_steer_factored_prints_table_and_writes_json(cache, tmp_path):
    out = tmp_path / "steer.json"
    result = CliRunner().invoke(sfp, ["steer", "--process", "factored", "--scales", "0,1", "--json", str(out),
                                      "--centroids", "conditional", "--kl", "batch-mean"])
    assert result.exit_code == 0, result.output
    assert "KL(tgt||st)" in result.output and "rand ratio" in result.output
    rows = json.loads(out.read_text())
    assert [row["scale"] for row in rows] == [0.0, 1.0]
    assert REQUIRED_KEYS <= set(rows[0])
    assert rows[0]["centroids"] == "conditional" and rows[0]["kl"] == "batch-mean" and rows[0]["position"] == 15
    assert rows[0]["kl_steered_factor"] == 0.0
    assert rows[1]["kl_steered_factor"] > 10 * rows[1]["random_kl_steered_factor"]  # beats the random control
    bad = CliRunner().invoke(sfp, ["steer", "--layer", "7"])
    assert bad.exit_code == 2 and "layer must be in" in bad.output


@pytest.mark.slow
def test_steer_semi_factored_reports_spillover_and_partition_columns(cache, tmp_path):
    out = tmp_path / "semi.json"
    result = CliRunner().invoke(sfp, ["steer", "--process", "semi-factored", "--scales", "0,1,5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "partition violation" in result.output and "f0:" in result.output
    rows = json.loads(out.read_text())
    assert REQUIRED_KEYS <= set(rows[0])
    assert set(rows[0]["forbidden_mass"]) == set(rows[0]["target_class_mass"]) == {"P01", "P10", "P11"}
    assert set(rows[1]["per_factor"]) == {"0", "1"} and rows[1]["per_factor"]["0"]["kl_unsteered_factor"] > 0
    within = [row["forbidden_mass_by_pair_kind"]["within-block"] for row in rows]
    assert within[0] < 0.01  # the trained model respects the partition when unsteered


@pytest.mark.slow
def test_em_analog_generalizes_and_reversal_reports_both_methods(cache):
    result = em_experiment(scales=(4,), pretrain=TrainSettings(steps=250))
    before, after = result["marker_mass_before"], result["marker_mass_after"]
    assert after["1"] > before["1"] + 0.02  # misalignment spread to the task that was not fine-tuned
    methods = {(row["vectors_from"], row["method"]) for row in result["reversal"]}
    assert methods == {(s, m) for s in ("pretrained", "fine-tuned") for m in ("belief-state", "difference-in-means")}
    text = format_em(result)
    assert "belief-state" in text and "difference-in-means" in text and "recovery t1" in text


def test_persona_engineering_trial_reports_steps_and_metrics():
    import torch

    reports = []
    torch.set_num_threads(2)
    metrics = persona_engineering_trial({"pretrain_steps": 60, "finetune_steps": 10, "batch_size": 64, "mixing": 0.05,
                                         "torch_threads": 1}, report=reports.append)
    assert torch.get_num_threads() == 2  # the caller's threads back, not the trial's one
    steps = [r["train_step"] for r in reports]
    assert steps == sorted(steps) and steps[-1] == 70 and steps[0] == 50
    assert any("finetune_loss" in r for r in reports)
    assert 0 <= metrics["alignment_fidelity"] <= 1 and 0 <= metrics["em_robustness"] <= 1
    assert reports[-1]["em_robustness"] == metrics["em_robustness"]
    assert all(isinstance(v, float) for v in metrics.values())
    with pytest.raises(ValueError, match="unknown persona-engineering parameters \\['colour'\\]"):
        persona_engineering_trial({"colour": 1})


def test_pareto_front_marks_non_dominated_rows_and_saves_png(tmp_path):
    rows = [{"alignment_fidelity": f, "em_robustness": r, "mixing": m}
            for f, r, m in [(0.9, 0.9, 0.0), (0.95, 0.8, 0.1), (0.85, 0.85, 0.2), (0.95, 0.7, 0.3), (np.nan, 1.0, 0.4)]]
    assert pareto_optimal(rows) == [True, True, False, False, False]
    figure = pareto_front(rows, tmp_path / "front.png")
    assert (tmp_path / "front.png").stat().st_size > 1000
    assert "2 on the front" in figure.axes[0].get_title()
