"""The toy world through the sweep engine: Tune trials, MLflow child runs, Pareto front on the parent."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cli
from persona_sweep import tracking

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def test_persona_engineering_sweep_runs_through_the_engine(ray_address, home, tmp_path):
    cli("run", REPO / "sweeps" / "sfp-persona-engineering.yaml", "--address", ray_address, "--name", "sfp-small",
        "grid.mixing=[0.0, 0.3]", "grid.persona_dim=[3]", "grid.n_personas=[2]", "grid.noise=[0.0, 0.05]",
        "training.pretrain_steps=60", "training.finetune_steps=10", home=home)

    uri = tracking.default_uri(home)
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("sfp-small")
    runs = tracking.child_runs(uri, experiment.experiment_id)
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
