"""The toy world through the sweep engine: Tune trials, MLflow child runs, Pareto front on the
parent, and its report (the Pareto front and steering KL against the random control)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cli
from helpers import assert_panel_shows_mlflow, panels_of
from persona_sweep import names, tracking

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def test_persona_engineering_sweep_runs_through_the_engine(ray_address, home, tmp_path):
    cli("run", REPO / "sweeps" / "sfp-persona-engineering.yaml", "--address", ray_address, "--name", "sfp-small",
        "grid.mixing=[0.0, 0.3]", "grid.persona_dim=[3]", "grid.n_personas=[2]", "grid.noise=[0.0, 0.05]",
        "training.pretrain_steps=60", "training.finetune_steps=10", home=home)

    uri = tracking.default_uri(home)
    client = tracking.Tracking(uri).client()
    experiment = client.get_experiment_by_name("sfp-small")
    runs = tracking.child_runs(tracking.Tracking(uri), experiment.experiment_id)
    assert len(runs) == 4 and len({run.data.tags["trial_id"] for run in runs}) == 4
    for run in runs:
        assert run.data.tags["trial_status"] == "completed"
        assert 0.0 <= run.data.metrics["alignment_fidelity"] <= 1.0
        assert 0.0 <= run.data.metrics["em_robustness"] <= 1.0
        losses = client.get_metric_history(run.info.run_id, "loss")
        assert len(losses) >= 2 and losses[-1].value < losses[0].value
    (parent,) = client.search_runs([experiment.experiment_id], "tags.sweep = 'sfp-small'")
    artifacts = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.png", "trials.json"} <= artifacts
    assert cli("status", "sfp-small", home=home).stdout.count("completed") == 4

    cli("report", "sfp-small", home=home)
    panels = panels_of(home / "reports" / "sfp-small" / "index.html")
    assert {"pareto-front", "steering-kl", "trials"} <= set(panels) and "survival-heatmaps" not in panels
    by_trial = {run.data.tags[names.TRIAL_ID]: run for run in runs}
    assert {series["name"] for series in panels["steering-kl"]["series"]} == {"steer", "random_steer"}
    for series in panels["steering-kl"]["series"]:
        assert [point["x"] for point in series["points"]] == [0.5, 1.0, 2.0, 4.0]
    assert assert_panel_shows_mlflow(panels["steering-kl"], by_trial, client) == 2 * 4 * 4  # lines x scales x trials
