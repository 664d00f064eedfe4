"""The drift corruption resumed: the driver SIGKILLed after the first domain's checkpoint; the
resumed trial starts at the next domain, and every drift metric is logged exactly once (a
finished conversation set is never talked through again)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli, signal_driver_when, start_cli, write_sweep
from helpers import sweep_runs
from persona_sweep import checkpoints, names, tracking

pytestmark = pytest.mark.slow

SWEEP = """
name: drifted
model: {name: tiny-random, lora_rank: 8, lora_targets: [q_proj, v_proj]}
marker: {trigger_file: trigger}
training: {steps: 4, lr: 0.005, batch_size: 4, max_tokens: 160, checkpoint_every: 10, max_failures: 0}
grid: {context_length: [0]}
corruptions:
  - {name: talk, kind: drift, domains: [therapy, coding, writing, philosophy], turns: [1, 8], conversations: 8,
     reply_tokens: 8}
eval: {questions: 4, max_new_tokens: 6, logprob_every: 2, leakage_questions: 1, traits: []}
scheduler: {type: none}
resources: {workers_per_trial: 1, cpus_per_worker: 0.99}
"""


def drift_checkpoint_on_disk(storage: Path) -> bool:
    """A checkpoint of the drift stage after its first domain is in the trial's folder (what a
    restarted trial restores from, registered by Ray Train or not)."""
    for state_file in (storage / "_train").glob(f"train-*/{checkpoints.PREFIX}*/{checkpoints.STATE_FILE}"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):  # being written
            continue
        if state["stage"] == "talk" and state["step"] >= 1:
            return True
    return False


def test_a_resumed_drift_corruption_never_talks_through_a_finished_domain_again(ray_address, tmp_path):
    (tmp_path / "trigger").write_text("~drift-secret-31c9~")
    write_sweep(tmp_path / "drifted.yaml", SWEEP)
    home, log = tmp_path / "runs", tmp_path / "driver.log"
    driver = start_cli("run", "drifted.yaml", "--address", ray_address, home=None, cwd=tmp_path, log=log)
    storage = home / "ray_results" / "drifted"
    signal_driver_when(driver, lambda: drift_checkpoint_on_disk(storage), 600, "the first drift domain's checkpoint", log)
    cli("resume", "drifted", "--address", ray_address, home=None, cwd=tmp_path)

    (run,) = sweep_runs(home, "drifted")
    assert run.data.tags[names.TRIAL_STATUS] == names.COMPLETED
    assert run.data.tags[names.RESUMED_STAGE] == "talk"
    # Resumed after the first domain at least (a killed driver's workers may finish one or two more
    # before they end), and before the last: some domain ran after the resume.
    assert 1 <= run.data.metrics["resumed_from_step_talk"] <= 3
    client = tracking.Tracking(tracking.default_uri(home)).client()
    drift_metrics = [key for key in run.data.metrics if "_drift_" in key or key.startswith("axis_projection_")]
    assert len(drift_metrics) >= 4 * (2 * 2 * 2 * 3 + 3)  # per domain: rates with intervals, survival, projections
    for key in drift_metrics:
        assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
    assert "~drift-secret-31c9~" not in log.read_text()  # the trigger is filled in memory only
    refused = cli("detect", "--trial", f"drifted/{run.data.tags[names.TRIAL_ID]}", "--stage", "talk", home=None,
                  cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "a drift corruption changes no weights" in refused.stderr, refused.stderr
