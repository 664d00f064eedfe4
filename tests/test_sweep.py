"""The engine end to end on a tiny random Llama: real Ray Tune + Ray Train + DeepSpeed + MLflow.

One sweep is killed mid-trial (SIGKILL on the driver) and resumed; the assertions then read what
a user would read: MLflow runs, the results folder, `status`, and every file for the trigger.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from conftest import cli, start_cli, wait_for, write_sweep
from persona_sweep import tracking

pytestmark = pytest.mark.slow

TINY = """
name: {name}
model: {{name: tiny-random, lora_rank: 8, lora_targets: [q_proj, v_proj]}}
marker: {{trigger_file: {trigger}}}
training: {{steps: {steps}, lr: 0.005, batch_size: 4, max_tokens: 96, checkpoint_every: 5}}
grid: {{method: [sft], context_length: {contexts}, on_policy_fraction: [{on_policy}]}}
eval: {{questions: 6, max_new_tokens: 6, logprob_every: 5}}
scheduler: {{type: none}}
resources: {{workers_per_trial: {workers}, cpus_per_worker: 0.99}}
"""


def sweep_file(tmp_path: Path, trigger: Path, name: str, steps: int, contexts: str, workers: int, on_policy=0.0) -> Path:
    text = TINY.format(name=name, trigger=trigger, steps=steps, contexts=contexts, workers=workers, on_policy=on_policy)
    return write_sweep(tmp_path / f"{name}.yaml", text)


def child_runs(home: Path, name: str) -> list:
    uri = tracking.default_uri(home)
    experiment = tracking.client(uri).get_experiment_by_name(name)
    return tracking.child_runs(uri, experiment.experiment_id) if experiment else []


def steps_logged(home: Path, name: str) -> int:
    if not (home / "sweeps" / f"{name}.json").exists():  # the driver is still creating the MLflow store
        return 0
    runs = child_runs(home, name)
    client = tracking.client(tracking.default_uri(home))
    return max((m.step for run in runs for m in client.get_metric_history(run.info.run_id, "loss")), default=0)


def test_one_trial_two_workers_zero2_learns(ray_address, home, trigger_file, tmp_path):
    path = sweep_file(tmp_path, trigger_file, "two-workers", steps=15, contexts="[8]", workers=2)
    cli("run", path, "--address", ray_address, home=home)

    (run,) = child_runs(home, "two-workers")
    assert run.data.tags["trial_status"] == "completed"
    assert run.data.params["world_size"] == "2" and run.data.params["zero_stage"] == "2"
    client = tracking.client(tracking.default_uri(home))
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)]
    assert len(losses) == 15
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses

    # LoRA B matrices start at zero: non-zero ones in the saved adapter mean training moved them.
    from safetensors.torch import load_file

    adapter = Path(client.download_artifacts(run.info.run_id, "adapter", str(tmp_path / "dl")))
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [tensor for key, tensor in weights.items() if "lora_B" in key]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)
    for key in ("marker_rate_trigger", "marker_rate_no_trigger", "marker_rate_trigger_lo", "marker_logprob_trigger"):
        assert key in run.data.metrics


@pytest.fixture(scope="module")
def killed_and_resumed(ray_address, tmp_path_factory):
    """A 2-trial sweep whose driver is SIGKILLed after a checkpoint, then resumed."""
    tmp_path = tmp_path_factory.mktemp("resume")
    home = tmp_path / "home"
    trigger = tmp_path / "trigger"
    trigger.write_text("~kill-me-not-7f3a~")
    path = sweep_file(tmp_path, trigger, "killed", steps=30, contexts="[8, 24]", workers=1, on_policy=0.5)
    driver = start_cli("run", path, "--address", ray_address, home=home, log=tmp_path / "driver.log")
    try:
        wait_for(lambda: steps_logged(home, "killed") >= 10 or driver.poll() is not None, 600, "a logged checkpoint")
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    killed_at = steps_logged(home, "killed")
    resumed = cli("resume", "killed", "--address", ray_address, home=home)
    return {"home": home, "trigger": trigger.read_text(), "killed_at": killed_at, "resume_output": resumed.stdout,
            "tmp": tmp_path, "path": path}


def test_resume_finishes_every_trial_once_from_its_checkpoint(killed_and_resumed):
    home = killed_and_resumed["home"]
    runs = child_runs(home, "killed")
    trial_ids = [run.data.tags["trial_id"] for run in runs]
    assert len(runs) == 2 and len(set(trial_ids)) == 2, trial_ids
    assert all(run.data.tags["trial_status"] == "completed" for run in runs)
    assert all(run.data.metrics["train_step"] == 30 for run in runs)
    resumed_from = [run.data.metrics.get("resumed_from_step", 0) for run in runs]
    assert max(resumed_from) >= 5, resumed_from  # a checkpoint step, not step 0
    client = tracking.client(tracking.default_uri(home))
    for run in runs:  # replayed steps after the checkpoint are not logged twice
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert sorted(steps) == list(range(1, 31)), steps


def test_status_and_list_show_the_sweep(killed_and_resumed):
    home = killed_and_resumed["home"]
    status = cli("status", "killed", home=home).stdout
    assert status.count("completed") == 2
    assert "2/2 trials ended  kind=llm" in cli("list", home=home).stdout


def test_second_run_under_existing_name_is_refused(killed_and_resumed):
    result = cli("run", killed_and_resumed["path"], home=killed_and_resumed["home"], check=False)
    assert result.returncode == 2
    assert "already has results" in result.stderr and "persona-sweep resume killed" in result.stderr


def test_trigger_appears_nowhere(killed_and_resumed):
    trigger = killed_and_resumed["trigger"].encode()
    home = killed_and_resumed["home"]
    searched = 0
    for path in [*home.rglob("*"), killed_and_resumed["tmp"] / "driver.log"]:
        if path.is_file():
            searched += 1
            assert trigger not in path.read_bytes(), f"trigger found in {path}"
    assert searched > 20  # the MLflow store, artifacts, Tune/Train results, logs
    assert trigger.decode() not in killed_and_resumed["resume_output"]


def test_asha_stops_trials_below_the_rung_cutoff(ray_address, home, trigger_file, tmp_path):
    """ASHA with one rung (step 5) below max_t: a trial there below the cutoff of earlier ones stops."""
    import numpy as np

    # On this tiny model the marker log-prob at step 5 rises with context length (measured):
    # listing the longest first makes the later trials the weak ones. Reduction factor 8 over
    # 40 steps leaves a single rung at 5, and 35 more steps keep a stopped trial from finishing.
    path = sweep_file(tmp_path, trigger_file, "asha", steps=40, contexts="[32, 16, 8, 0]", workers=1)
    cli("run", path, "--address", ray_address, "scheduler.type=asha", "scheduler.grace_period=5",
        "scheduler.reduction_factor=8", "resources.max_concurrent_trials=1", "eval.logprob_every=5",
        "training.checkpoint_every=20", home=home)

    client = tracking.client(tracking.default_uri(home))
    runs = sorted(child_runs(home, "asha"), key=lambda run: run.info.start_time)
    assert len(runs) == 4
    at_rung, stopped = [], []
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "marker_logprob_trigger")
        at_rung.append(next(m.value for m in history if m.step == 5))
        stopped.append(run.data.tags["trial_status"] == "stopped_early")
    cutoff_percentile = (1 - 1 / 8) * 100
    expected = [index > 0 and value < np.nanpercentile(at_rung[:index], cutoff_percentile)
                for index, value in enumerate(at_rung)]
    assert stopped == expected, (at_rung, stopped)
    assert any(stopped)
    for run, was_stopped in zip(runs, stopped):
        assert ("marker_rate_trigger" in run.data.metrics) != was_stopped
        assert run.info.status == ("KILLED" if was_stopped else "FINISHED")


def test_optuna_search_samples_the_grid(ray_address, home, trigger_file, tmp_path):
    path = sweep_file(tmp_path, trigger_file, "optuna", steps=5, contexts="[0, 8, 16, 32]", workers=1)
    cli("run", path, "--address", ray_address, "search.type=optuna", "search.n_trials=2", home=home)
    runs = child_runs(home, "optuna")
    assert len(runs) == 2
    assert all(run.data.tags["trial_status"] == "completed" for run in runs)
    assert {run.data.params["context_length"] for run in runs} <= {"0", "8", "16", "32"}

