"""The engine end to end on a tiny random Llama: real Ray Tune + Ray Train + DeepSpeed + MLflow.

Sweeps are run the README's way: from a working folder, with no PERSONA_SWEEP_* variable
(results land in ./runs), against the session's Ray cluster (which has none either) or an
embedded local Ray. Drivers are SIGKILLed and interrupted with Ctrl-C, then resumed; the
assertions read what a user would read: MLflow runs, the results folder, `status`, every file.
"""
from __future__ import annotations

import json
import pickle
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, cli, cli_env, free_port, signal_driver_when, start_cli, wait_for, write_sweep
from helpers import (
    MID_RUN_STEPS,
    assert_no_checkpoints_under,
    assert_resumed_once,
    assert_trigger_nowhere,
    steps_logged,
    sweep_runs,
)
from persona_sweep import names, tracking
from persona_sweep.models import default_cache
from persona_sweep.sweep_record import SweepRecord

pytestmark = pytest.mark.slow

TINY = """
name: {name}
model: {{name: tiny-random, lora_rank: 8, lora_targets: [q_proj, v_proj]}}
marker: {{trigger_file: {trigger}}}
training: {{steps: {steps}, lr: 0.005, batch_size: 4, max_tokens: 160, checkpoint_every: 5, max_failures: 0}}
grid: {{method: [sft], context_length: {contexts}, on_policy_fraction: [{on_policy}]}}
eval: {{questions: 6, max_new_tokens: 6, logprob_every: 5}}
scheduler: {{type: none}}
resources: {{workers_per_trial: {workers}, cpus_per_worker: 0.99}}
"""


def sweep_file(folder: Path, trigger: Path, name: str, steps: int, contexts: str, workers: int, on_policy=0.0) -> Path:
    text = TINY.format(name=name, trigger=trigger, steps=steps, contexts=contexts, workers=workers, on_policy=on_policy)
    return write_sweep(folder / f"{name}.yaml", text)


# Signalled at step 10: the trial must have steps enough left for the signal to land before it ends.
KILLED_STEPS = MID_RUN_STEPS


def working_folder(tmp_path: Path, secret: str) -> tuple[Path, Path]:
    """A user's folder: the sweep file and the trigger file sit there, results go to ./runs."""
    work = tmp_path / "work"
    work.mkdir()
    trigger = work / "trigger"
    trigger.write_text(secret)
    return work, trigger


def kill_after_checkpoints(driver, home: Path, name: str, trials: int, log: Path, sig=signal.SIGKILL,
                           address: str | None = None) -> dict:
    """Wait until every trial logged step 10 (a checkpoint at step 5 and 10), then signal the
    driver. Returns the last step each trial had logged once the trials stopped: on a cluster
    (`address`), a killed driver's trial actors live on for a moment and may finish meanwhile."""
    signal_driver_when(driver, lambda: len(steps_logged(home, name)) == trials and min(steps_logged(home, name).values()) >= 10,
                       600, "logged checkpoints", log, sig)
    if address:
        wait_for(lambda: not alive_actors(address), 60, "the killed driver's actors to end")
    return steps_logged(home, name)


def alive_actors(address: str) -> list[str]:
    """The class names of the cluster's live actors that belong to a job (detached ones, such as
    Ray Train's state actor, outlive every driver)."""
    return [actor["class_name"] for actor in cluster_actors(address, "--filter", "state=ALIVE")
            if not actor.get("is_detached")]


def cluster_actors(address: str, *filters: str) -> list[dict]:
    """The cluster's actors as `ray list actors` gives them (dead ones too unless filtered)."""
    result = subprocess.run([str(BIN / "ray"), "list", "actors", "--address", address, *filters,
                             "--detail", "--format", "json", "--limit", "10000"], env=cli_env(None),
                            capture_output=True, text=True, check=True, timeout=60)
    listed = result.stdout.strip()  # none at all: a sentence instead of JSON
    return json.loads(listed) if listed.startswith("[") else []


def test_one_trial_two_workers_zero2_learns(ray_address, home, trigger_file, tmp_path):
    path = sweep_file(tmp_path, trigger_file, "two-workers", steps=15, contexts="[8]", workers=2)
    cli("run", path, "--address", ray_address, home=home)

    (run,) = sweep_runs(home, "two-workers")
    assert run.data.tags[names.TRIAL_STATUS] == names.COMPLETED
    assert run.data.params["world_size"] == "2" and run.data.params["zero_stage"] == "2"
    client = tracking.Tracking(tracking.default_uri(home)).client()
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, names.LOSS), key=lambda m: m.step)]
    assert len(losses) == 15
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses

    # LoRA B matrices start at zero: non-zero ones in the saved adapter mean training moved them.
    from safetensors.torch import load_file

    adapter = Path(client.download_artifacts(run.info.run_id, "adapter", str(tmp_path / "dl")))
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = [tensor for key, tensor in weights.items() if "lora_B" in key]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)
    for key in (names.MARKER_RATE_TRIGGER, names.MARKER_RATE_NO_TRIGGER, f"{names.MARKER_RATE_TRIGGER}_lo",
                names.MARKER_SPECIFICITY):
        assert key in run.data.metrics

    # The parent run carries the misalignment measure's positive control on the base model, as measured.
    from persona_sweep import misalignment_control
    from persona_sweep.config import ModelConfig

    parent = client.get_run(run.data.tags[names.PARENT_RUN_ID]).data.metrics
    expected = misalignment_control.cached(ModelConfig(name="tiny-random"), default_cache(), 16)
    assert {key: parent[key] for key in expected} == pytest.approx(expected)

    # Two ranks really shared the work: ZeRO-2 split the optimizer state into one shard per rank.
    # (The trial's last checkpoint holds only its state, done; the one before holds the training.)
    checkpoints = [path for path in (home / "ray_results" / "two-workers" / "_train").rglob("checkpoint_*")
                   if path.is_dir() and list(path.rglob("*optim_states.pt"))]
    shards = sorted(path.name for path in max(checkpoints).rglob("*optim_states.pt"))
    assert [name.split("_")[3] for name in shards] == ["0", "1"], shards  # zero_pp_rank_<rank>_...

    # The trial's Ray Train run started its controller, workers and checkpoint barrier, but no
    # preemption watcher (an actor process per trial that nothing reads: trial.run_llm_trial).
    started = {actor["class_name"] for actor in cluster_actors(ray_address)}
    assert {"TrainController", "RayTrainWorker", "SynchronizationActor"} <= started, started
    assert "PreemptionWatcher" not in started, started


@pytest.fixture(scope="module")
def killed_and_resumed(ray_address, ray_temp_dir, tmp_path_factory):
    """A 2-trial sweep on the session cluster, run from a working folder without any
    PERSONA_SWEEP_* variable, its driver SIGKILLed after both trials checkpointed, then resumed."""
    tmp_path = tmp_path_factory.mktemp("resume")
    work, trigger = working_folder(tmp_path, "~kill-me-not-7f3a~")
    home = work / "runs"
    path = sweep_file(work, Path("trigger"), "killed", steps=30, contexts="[8, 24]", workers=1, on_policy=0.5)
    log = tmp_path / "driver.log"
    driver = start_cli("run", path.name, "--address", ray_address, home=None, cwd=work, log=log)
    at_kill = kill_after_checkpoints(driver, home, "killed", trials=2, log=log, address=ray_address)
    resumed = cli("resume", "killed", "--address", ray_address, home=None, cwd=work)
    return {"home": home, "work": work, "trigger": trigger.read_text(), "resume_output": resumed.stdout,
            "log": log, "path": path, "ray_temp_dir": ray_temp_dir, "at_kill": at_kill}


def test_resume_finishes_every_trial_once_from_its_checkpoint(killed_and_resumed):
    # A trial that had logged its last step may have ended before its actors did (the two trials
    # run side by side only when the cluster has both CPUs free); every other one must continue.
    unfinished = sum(step < 30 for step in killed_and_resumed["at_kill"].values())
    assert unfinished >= 1, killed_and_resumed["at_kill"]
    assert_resumed_once(killed_and_resumed["home"], "killed", trials=2, steps=30, resumed=unfinished)
    # Checkpoints live in the sweep's storage under the working folder, never in Ray's temp dir.
    assert list((killed_and_resumed["home"] / "ray_results" / "killed" / "_train").rglob("checkpoint_*"))
    assert_no_checkpoints_under(killed_and_resumed["ray_temp_dir"])


def test_status_and_list_show_the_sweep(killed_and_resumed):
    work = killed_and_resumed["work"]
    status = cli("status", "killed", home=None, cwd=work).stdout
    assert status.count(names.COMPLETED) == 2
    assert "2/2 trials ended  kind=llm" in cli("list", home=None, cwd=work).stdout


def test_second_run_under_existing_name_is_refused(killed_and_resumed):
    result = cli("run", killed_and_resumed["path"].name, home=None, cwd=killed_and_resumed["work"], check=False)
    assert result.returncode == 2
    assert "already has results" in result.stderr and "persona-sweep resume killed" in result.stderr


def test_trigger_appears_nowhere(killed_and_resumed):
    trigger, home = killed_and_resumed["trigger"], killed_and_resumed["home"]
    # The MLflow store, artifacts, Tune/Train results and logs; Ray's session folder (worker
    # logs); the model cache; what the driver printed.
    searched = assert_trigger_nowhere(trigger, home, killed_and_resumed["ray_temp_dir"], default_cache(),
                                      killed_and_resumed["log"], min_files=50)
    assert searched > 50
    assert trigger not in killed_and_resumed["resume_output"]


def test_a_cut_short_tune_state_is_refused_rather_than_started_afresh(killed_and_resumed):
    """A state file cut short (Tune itself writes it whole or not at all: test_storage_faults),
    from which Tune would restart the sweep from nothing (new trial ids, a second run each):
    `resume` refuses in one line instead, before it connects to Ray, and nothing changes."""
    work, home = killed_and_resumed["work"], killed_and_resumed["home"]
    newest = max((home / "ray_results" / "killed").glob("experiment_state-*.json"))
    whole = newest.read_bytes()
    newest.write_bytes(whole[:len(whole) // 2])
    try:
        refused = cli("resume", "killed", home=None, cwd=work, check=False)
    finally:
        newest.write_bytes(whole)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: sweep 'killed': Tune's record of its trials, {newest}, is cut short"), line
    assert line.endswith("Start the sweep again under a new name"), line
    assert len(sweep_runs(home, "killed")) == 2


LEAVES_A_PLACEMENT_GROUP = """
import sys, ray
from ray.util.placement_group import placement_group
ray.init(address=sys.argv[1], log_to_driver=False)
group = placement_group([{"CPU": 0.01}], lifetime="detached")  # outlives this driver
ray.get(group.ready())
context = ray.get_runtime_context()
print(context.get_session_name(), context.get_job_id(), group.id.hex())
"""
PLACEMENT_GROUP_STATE = """
import sys, ray
from ray.util.placement_group import placement_group_table
ray.init(address=sys.argv[1], log_to_driver=False)
print(placement_group_table()[sys.argv[2]]["state"])
"""


def python_on_the_cluster(script: str, *args: str) -> str:
    result = subprocess.run([str(BIN / "python"), "-c", script, *args], env=cli_env(None), capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_a_placement_group_an_ended_driver_of_the_sweep_left_is_removed_at_resume(killed_and_resumed, ray_address,
                                                                                  monkeypatch):
    """Ray leaves a worker group's placement group behind when a driver stops as a trial starts
    one (a race, seen after `stop`), and resumed trials would wait for its CPUs forever. Each
    driver records its Ray job; a driver that made a group outliving it stands in for the
    stopped one, and `resume` removes that group."""
    work, home = killed_and_resumed["work"], killed_and_resumed["home"]
    monkeypatch.setenv("PERSONA_SWEEP_HOME", str(home))
    drivers = SweepRecord.load("killed").paths.drivers_file
    recorded = [line.split() for line in drivers.read_text().splitlines()]
    assert len(recorded) == 2 and len({job for _, job in recorded}) == 2, recorded  # `run`, then `resume`
    session, job, group = python_on_the_cluster(LEAVES_A_PLACEMENT_GROUP, ray_address).split()
    assert python_on_the_cluster(PLACEMENT_GROUP_STATE, ray_address, group) == "CREATED"
    with drivers.open("a") as handle:
        handle.write(f"{session} {job}\n")
    cli("resume", "killed", "--address", ray_address, home=None, cwd=work)
    assert python_on_the_cluster(PLACEMENT_GROUP_STATE, ray_address, group) == "REMOVED"


def test_embedded_driver_killed_and_resumed(tmp_path):
    """No --address: the driver's own Ray. SIGKILL it mid-trial; `resume` starts a new Ray and
    continues from the checkpoint in ./runs (Ray's temp dir holds none)."""
    work, trigger = working_folder(tmp_path, "~embedded-secret-51c2~")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ps-ray-"))  # short: Ray's socket paths must stay under 108 bytes
    env = cli_env(None, RAY_TMPDIR=str(ray_tmp))
    path = sweep_file(work, Path("trigger"), "embedded", steps=KILLED_STEPS, contexts="[8]", workers=1)
    log = tmp_path / "driver.log"
    driver = start_cli("run", path.name, home=None, cwd=work, log=log, env=env)
    kill_after_checkpoints(driver, work / "runs", "embedded", trials=1, log=log)
    cli("resume", "embedded", home=None, cwd=work, env=env)
    assert_resumed_once(work / "runs", "embedded", trials=1, steps=KILLED_STEPS, resumed=1)
    try:
        assert_no_checkpoints_under(ray_tmp)
        assert_trigger_nowhere(trigger.read_text(), work / "runs", ray_tmp, log, min_files=20)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ctrl_c_stops_trials_and_resume_finishes_them(ray_address, tmp_path):
    work, _ = working_folder(tmp_path, "~ctrl-c-secret-9d0e~")
    home = work / "runs"
    path = sweep_file(work, Path("trigger"), "interrupted", steps=KILLED_STEPS, contexts="[8]", workers=1)
    log = tmp_path / "driver.log"
    driver = start_cli("run", path.name, "--address", ray_address, home=None, cwd=work, log=log)
    kill_after_checkpoints(driver, home, "interrupted", trials=1, log=log, sig=signal.SIGINT)
    assert driver.returncode == 1, log.read_text()[-3000:]
    assert "persona-sweep resume interrupted" in log.read_text()
    (run,) = sweep_runs(home, "interrupted")
    assert run.data.tags[names.TRIAL_STATUS] == names.INTERRUPTED
    client = tracking.Tracking(tracking.default_uri(home)).client()
    (parent,) = client.search_runs([run.info.experiment_id], f"tags.{names.SWEEP_TAG} = 'interrupted'")
    assert parent.info.status == "KILLED"

    cli("resume", "interrupted", "--address", ray_address, home=None, cwd=work)
    assert_resumed_once(home, "interrupted", trials=1, steps=KILLED_STEPS, resumed=1)


def test_trial_that_errors_before_its_run_opens_is_tracked_and_resumed(ray_address, tmp_path):
    """The trigger file disappears after the pre-flight checks: the trial errors in its workers
    before rank 0 opens an MLflow run. The driver still records it; `resume` finishes it."""
    work, trigger = working_folder(tmp_path, "~vanishing-secret-22b7~")
    home = work / "runs"
    secret = trigger.read_text()
    path = sweep_file(work, Path("trigger"), "vanishing", steps=10, contexts="[8]", workers=1)
    log = tmp_path / "driver.log"
    driver = start_cli("run", path.name, "--address", ray_address, home=None, cwd=work, log=log)
    wait_for(lambda: (home / "sweeps" / "vanishing.json").exists() or driver.poll() is not None, 120, "the sweep record")
    trigger.unlink()
    assert driver.wait(300) == 1, log.read_text()[-3000:]
    assert "persona-sweep resume vanishing" in log.read_text()
    (run,) = sweep_runs(home, "vanishing")
    assert run.data.tags[names.TRIAL_STATUS] == names.ERRORED and run.info.status == "FAILED"
    client = tracking.Tracking(tracking.default_uri(home)).client()
    (parent,) = client.search_runs([run.info.experiment_id], f"tags.{names.SWEEP_TAG} = 'vanishing'")
    assert parent.info.status == "FAILED"
    assert names.ERRORED in cli("status", "vanishing", home=None, cwd=work).stdout

    trigger.write_text(secret)
    cli("resume", "vanishing", "--address", ray_address, home=None, cwd=work)
    (resumed,) = assert_resumed_once(home, "vanishing", trials=1, steps=10, resumed=0)
    assert resumed.info.run_id == run.info.run_id and "trigger_sha256" in resumed.data.params


def test_failed_starts_leave_the_name_free(ray_address, home, trigger_file, tmp_path):
    path = sweep_file(tmp_path, trigger_file, "refused", steps=5, contexts="[8]", workers=1)
    nobody = f"127.0.0.1:{free_port()}"
    no_cluster = cli("run", path, "--address", nobody, home=home, check=False, timeout=120)
    assert no_cluster.returncode == 2, no_cluster.stderr
    (line,) = no_cluster.stderr.strip().splitlines()
    assert line.startswith(f"error: --address: no Ray cluster answers at {nobody} (")

    too_big = cli("run", path, "--address", ray_address, "resources.workers_per_trial=2", "resources.cpus_per_worker=1.5",
                  home=home, check=False)
    assert too_big.returncode == 2 and too_big.stderr.strip().splitlines() == [
        "error: resources: a trial needs 3.01 CPUs but the cluster has 2 CPUs"], too_big.stderr

    # The trigger is in the driver's environment only: the cluster's nodes lack it.
    env = cli_env(home, PS_DRIVER_ONLY_TRIGGER="~driver-only~")
    no_trigger = cli("run", path, "--address", ray_address, "marker.trigger_file=null",
                     "marker.trigger_env=PS_DRIVER_ONLY_TRIGGER", home=home, env=env, check=False)
    assert no_trigger.returncode == 2, no_trigger.stderr
    (line,) = no_trigger.stderr.strip().splitlines()
    assert re.fullmatch(r"error: marker.trigger_env: environment variable PS_DRIVER_ONLY_TRIGGER is not set "
                        r"on node [0-9.]+, where trials run", line), line

    assert not (home / "sweeps").exists() and not (home / "ray_results").exists()
    assert not (home / "mlflow.db").exists()  # not even an empty store


def test_optuna_search_learns_each_trials_result(ray_address, home, trigger_file, tmp_path):
    """Optuna's own study holds every trial, completed with the value the trial reported last."""
    path = sweep_file(tmp_path, trigger_file, "optuna", steps=5, contexts="[0, 8, 16, 32]", workers=1)
    cli("run", path, "--address", ray_address, "search.type=optuna", "search.n_trials=2", home=home)
    runs = sweep_runs(home, "optuna")
    assert len(runs) == 2 and all(run.data.tags[names.TRIAL_STATUS] == names.COMPLETED for run in runs)

    # Tune keeps Optuna's searcher, study included, in the sweep's folder.
    state = pickle.loads(next((home / "ray_results" / "optuna").glob("searcher-state-*.pkl")).read_bytes())
    study = {trial.number: trial for trial in state["_ot_study"].trials}
    studied = {trial_id: study[trial.number] for trial_id, trial in state["_ot_trials"].items()}
    assert set(studied) == {run.data.tags[names.TRIAL_ID] for run in runs}
    for run in runs:
        trial = studied[run.data.tags[names.TRIAL_ID]]
        assert trial.state.name == "COMPLETE"
        assert trial.values[0] == pytest.approx(run.data.metrics[names.MARKER_SPECIFICITY], abs=1e-6)
        assert trial.params["context_length"] == int(run.data.params["context_length"])
