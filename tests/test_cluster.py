"""A real two-node Ray cluster on 127.0.0.1 (a head and a second node, each started with
`ray start`, its own CPU and temp dir, token auth on), a team's MLflow tracking server backed
by a real PostgreSQL and an S3-compatible object store (moto): `submit --follow` runs a sweep as
a Ray job with trials on both nodes and its results in the bucket; `stop` then `resume
--address` finishes a sweep with no trial lost or run twice; a lost node's trial continues on
the other. The nodes and servers are ended afterwards, even when a test fails.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, cli, free_port, wait_for, without_persona_sweep_env, write_sweep
from helpers import MID_RUN_STEPS, assert_resumed_once, assert_trigger_nowhere, checkpoint_registered, sweep_runs
from persona_sweep import names, tracking
from servers import MlflowServer, PostgresServer, S3Server, TwoNodeRayCluster

pytestmark = pytest.mark.slow
TRIGGER = "~cluster-trigger-7d2e~"

SWEEP = """
name: %(name)s
model: {name: tiny-random, lora_rank: 8, lora_targets: [q_proj, v_proj]}
marker: {trigger_file: %(trigger)s}
tracking: {mlflow_uri: "%(uri)s"}
training: {steps: %(steps)d, lr: 0.005, batch_size: 4, max_tokens: 160, checkpoint_every: 5, max_failures: 2}
grid: {method: [sft], context_length: [0, 8]}
eval: {questions: 2, max_new_tokens: 4, logprob_every: 5, leakage_questions: 0}
scheduler: {type: none}
resources: {workers_per_trial: 1, cpus_per_worker: 0.99%(storage)s}
"""
BUCKET = "team-sweeps"


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    """An S3-compatible server; the nodes carry its endpoint and credentials, as a cluster would."""
    server = S3Server(free_port(), BUCKET, tmp_path_factory.mktemp("s3") / "server.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def team_mlflow(tmp_path_factory, object_store):
    """An MLflow tracking server whose backend store is PostgreSQL and whose artifacts it keeps
    in the bucket and serves (clients need only its URI)."""
    database = PostgresServer(free_port()).start()
    server = MlflowServer(database.uri, free_port(), tmp_path_factory.mktemp("mlflow") / "server.log",
                          artifacts=f"s3://{BUCKET}/mlflow", env=object_store.env)
    try:
        yield server.start(), database
    finally:
        server.stop()
        database.stop()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, team_mlflow, object_store):
    """Head and second node, one CPU each, so two one-worker trials run one per node. The
    cluster's shared storage (PERSONA_SWEEP_HOME) and the trigger live in `shared`; `node_local`
    is a folder the second node has its own of."""
    root = tmp_path_factory.mktemp("cluster")
    shared, node_local, secret = root / "shared", root / "node-local", root / "secret"
    shared.mkdir()
    secret.mkdir()
    (secret / "trigger").write_text(TRIGGER)
    env = {**without_persona_sweep_env(), "PERSONA_SWEEP_HOME": str(shared), **object_store.env}
    cluster = TwoNodeRayCluster(env, private_folder=node_local)
    try:
        cluster.start()
        yield {"address": cluster.address, "gcs": cluster.gcs, "shared": shared, "node_local": node_local,
               "trigger_file": secret / "trigger", "temp_dirs": cluster.temp_dirs, "uri": team_mlflow[0].uri,
               "database": team_mlflow[1], "s3": object_store}
    finally:
        cluster.stop()


def sweep_file(work: Path, cluster: dict, name: str, steps: int, storage: str | None = None,
               uri: str | None = None) -> str:
    write_sweep(work / f"{name}.yaml", SWEEP % {"name": name, "steps": steps, "trigger": cluster["trigger_file"],
                                                "uri": uri or cluster["uri"],
                                                "storage": f", storage: {storage}" if storage else ""})
    return f"{name}.yaml"


@pytest.mark.parametrize("unshared", ["home", "resources.storage"])
def test_a_home_or_storage_folder_that_a_node_does_not_share_is_refused(two_nodes, tmp_path, unshared):
    folder = two_nodes["node_local"]
    home, storage = (folder, None) if unshared == "home" else (tmp_path / "home", folder)
    result = cli("run", sweep_file(tmp_path, two_nodes, "local", steps=5, storage=storage), "--address",
                 two_nodes["gcs"], home=home, cwd=tmp_path, check=False, timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    need = ("PERSONA_SWEEP_HOME on storage they all share" if unshared == "home"
            else "a storage folder they all share (or an s3:// or gs:// URI)")
    assert line.startswith(f"error: {unshared} {folder}: not on node ") and line.endswith(
        f"a sweep on several nodes needs {need}")
    assert sorted(path.name for path in folder.iterdir()) == []  # nothing written, the probes removed


def test_submit_follow_runs_trials_on_both_nodes_with_results_in_the_object_store(two_nodes, tmp_path):
    path = sweep_file(tmp_path, two_nodes, "two", steps=10, storage=f"s3://{BUCKET}/team")
    result = cli("submit", path, "--address", two_nodes["address"], "--follow", home=None, cwd=tmp_path, timeout=900)
    assert "submitted sweep 'two' as Ray job 'two'" in result.stdout
    assert "done" in result.stdout  # the driver's progress lines, streamed
    shared, uri = two_nodes["shared"], two_nodes["uri"]
    runs = sweep_runs(shared, "two", uri)
    assert sorted(run.data.tags[names.TRIAL_STATUS] for run in runs) == [names.COMPLETED] * 2
    assert len({run.data.tags[names.RAY_NODE_ID] for run in runs}) == 2  # one trial on each node
    experiment = tracking.Tracking(uri).client().get_experiment_by_name("two")
    every_run = tracking.Tracking(uri).client().search_runs([experiment.experiment_id])
    parents = [run for run in every_run if names.TRIAL_ID not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert rows_in_postgres(two_nodes["database"], experiment.experiment_id) == len(every_run) == 3
    assert not (shared / "mlflow.db").exists()
    s3 = two_nodes["s3"]
    assert any(key.startswith("team/ray_results/two/experiment_state") for key in s3.keys("team/ray_results/two/"))
    for run in runs:  # checkpoints (each rank's manifest last) and, through the server, MLflow artifacts
        checkpoints = s3.keys(f"team/ray_results/two/_train/train-{run.data.tags[names.TRIAL_ID]}/checkpoint_")
        assert any(key.endswith("/manifest.rank0.json") for key in checkpoints), checkpoints
        assert s3.keys(f"mlflow/{experiment.experiment_id}/{run.info.run_id}/artifacts/config/")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    # The home keeps the record and the sweep's own folder (worker ids, marker stages), no results.
    assert {path.name for path in (shared / "ray_results" / "two").iterdir()} <= {"_pids", "_markers"}
    assert not (tmp_path / "runs").exists()  # nothing on the laptop's side
    # A laptop with only the tracking URI: the parent run carries the sweep record.
    laptop = cli("status", "two", "--tracking-uri", uri, home=tmp_path / "laptop", cwd=tmp_path).stdout
    for run in runs:
        assert f"{run.data.tags[names.TRIAL_ID]} {names.COMPLETED}" in " ".join(laptop.split())
    assert f"results: s3://{BUCKET}/team/ray_results/two  |  MLflow: {uri} " in laptop
    assert not (tmp_path / "laptop").exists()


def test_a_file_tracking_store_on_the_shared_folder_outlives_the_job_s_package(two_nodes, tmp_path):
    """A sqlite store on the shared folder: MLflow asks for the driver's working directory, which
    was the job's package, a folder Ray deletes; the driver now stands in the home."""
    database = two_nodes["shared"] / "team.db"
    path = sweep_file(tmp_path, two_nodes, "sqlite", steps=4, uri=f"sqlite:///{database}")
    result = cli("submit", path, "--address", two_nodes["address"], "--follow", home=None, cwd=tmp_path, timeout=900)
    assert "sweep 'sqlite' ended" in result.stdout
    runs = sweep_runs(two_nodes["shared"], "sqlite", f"sqlite:///{database}")
    assert sorted(run.data.tags[names.TRIAL_STATUS] for run in runs) == [names.COMPLETED] * 2
    assert len({run.data.tags[names.TRIAL_ID] for run in runs}) == 2  # one child run per trial
    client = tracking.Tracking(f"sqlite:///{database}").client()
    experiment = client.get_experiment_by_name("sqlite")
    parents = [run for run in client.search_runs([experiment.experiment_id]) if names.TRIAL_ID not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_a_failed_job_ends_with_its_exit_code_and_the_driver_s_last_error_line(two_nodes, tmp_path):
    result = cli("resume", "never-ran", "--address", two_nodes["address"], "--follow", home=None, cwd=tmp_path,
                 check=False, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "job 'never-ran-resume-1' failed with exit code 2: error: no sweep named 'never-ran' under "), result.stderr


def test_the_trigger_never_travels_with_the_job(two_nodes):
    """After the submitted sweep: not in the job's entrypoint, runtime_env or metadata, and in no
    file on the shared storage, in the object store or under either node's temp dir (job and
    worker logs)."""
    info = job_info_from_a_process_that_read_ray_s_auth_mode_as_disabled(two_nodes["address"], "two")
    # The interpreter of the cluster's workers (the venv the nodes were started from, not on their PATH).
    assert info["entrypoint"].startswith(f"{BIN / 'python'} -m persona_sweep run sweep.yaml")
    assert TRIGGER not in json.dumps(info)
    assert_trigger_nowhere(TRIGGER, two_nodes["shared"], *two_nodes["temp_dirs"], min_files=100)
    s3 = two_nodes["s3"]
    stored = s3.keys()
    assert len(stored) > 20 and not [key for key in stored if TRIGGER.encode() in s3.read(key)]


def test_stop_then_resume_finishes_the_sweep_with_no_trial_lost_or_doubled(two_nodes, tmp_path):
    steps = MID_RUN_STEPS
    submitted = cli("submit", sweep_file(tmp_path, two_nodes, "stopped", steps=steps), "--address",
                    two_nodes["address"], home=None, cwd=tmp_path)
    assert submitted.stdout.strip().splitlines()[-1].startswith("follow it:")
    storage = two_nodes["shared"] / "ray_results" / "stopped"
    wait_for(lambda: checkpoint_registered(storage, **{names.TRAIN_STEP: 10}), 600, "a checkpoint at step 10")
    stopped = cli("stop", "stopped", "--address", two_nodes["address"], home=None, cwd=tmp_path, timeout=300)
    assert "job 'stopped': STOPPED" in stopped.stdout
    statuses = [run.data.tags[names.TRIAL_STATUS] for run in sweep_runs(two_nodes["shared"], "stopped", two_nodes["uri"])]
    assert names.INTERRUPTED in statuses, statuses
    resumed = cli("resume", "stopped", "--address", two_nodes["address"], "--follow", home=None, cwd=tmp_path,
                  timeout=900)
    assert "submitted `resume stopped` as Ray job 'stopped-resume-1'" in resumed.stdout
    assert_resumed_once(two_nodes["shared"], "stopped", trials=2, steps=steps, resumed=1, uri=two_nodes["uri"])


def job_info_from_a_process_that_read_ray_s_auth_mode_as_disabled(address: str, job_id: str) -> dict:
    """Ray reads RAY_AUTH_MODE once per process; `cluster.jobs` sends the token all the same."""
    probe = ("import json, os, sys; from ray._raylet import get_authentication_mode; get_authentication_mode(); "
             "os.environ['RAY_AUTH_MODE'] = 'token'; from persona_sweep import cluster; "
             "info = cluster.jobs(sys.argv[1]).get_job_info(sys.argv[2]); "
             "print(json.dumps([info.entrypoint, info.runtime_env, info.metadata], default=str))")
    env = {**without_persona_sweep_env(), "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run([str(BIN / "python"), "-c", probe, address, job_id], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    entrypoint, runtime_env, metadata = json.loads(result.stdout.strip().splitlines()[-1])
    return {"entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": metadata}


def rows_in_postgres(database: PostgresServer, experiment_id: str) -> int:
    """The runs are in PostgreSQL's own tables (not a file store behind the server)."""
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=database.port, user="mlflow", dbname="mlflow") as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment_id),))
            return cursor.fetchone()[0]


def test_a_lost_node_s_trial_continues_from_its_checkpoint_on_the_remaining_node(two_nodes, tmp_path):
    """Last in this module: the second node does not come back. Its raylet is chosen by PID
    among the processes of that node's temp dir; its trial (Tune's actor and Ray Train's
    workers may all have been there) continues on the head from its last checkpoint."""
    steps = MID_RUN_STEPS
    submitted = cli("submit", sweep_file(tmp_path, two_nodes, "lost-node", steps=steps), "--address",
                    two_nodes["address"], home=None, cwd=tmp_path)
    assert submitted.returncode == 0
    storage = two_nodes["shared"] / "ray_results" / "lost-node"
    raylet = second_node_raylet(two_nodes["temp_dirs"][1])
    wait_for(lambda: trial_on(storage, raylet), 600, "a trial training on the second node")
    victim = trial_on(storage, raylet)
    wait_for(lambda: checkpoint_registered(storage, victim, **{names.TRAIN_STEP: 10}), 600,
             "a checkpoint of the second node's trial")
    raylet.kill()
    followed = cli("logs", "lost-node", "--address", two_nodes["address"], "--follow", home=None, cwd=tmp_path,
                   timeout=480)
    assert followed.returncode == 0, followed.stdout[-3000:]
    runs = assert_resumed_once(two_nodes["shared"], "lost-node", trials=2, steps=steps, resumed=1, uri=two_nodes["uri"])
    moved = next(run for run in runs if run.data.tags[names.TRIAL_ID] == victim)
    assert moved.data.metrics[names.RESUMED_FROM_STEP] >= 10
    assert len({run.data.tags[names.RAY_NODE_ID] for run in runs}) == 1  # both ended on the head


def second_node_raylet(temp_dir: Path):
    import psutil

    (raylet,) = [process for process in psutil.process_iter(["name", "cmdline"])
                 if process.info["name"] == "raylet" and str(temp_dir) in " ".join(process.info["cmdline"] or [])]
    return raylet


def trial_on(storage: Path, raylet) -> str | None:
    """The trial whose rank 0 worker (by the PID it wrote) runs under that raylet."""
    import psutil

    for pid_file in (storage / "_pids").glob("*.rank0.pid"):
        try:
            worker = psutil.Process(int(pid_file.read_text()))
            if raylet.pid in {parent.pid for parent in worker.parents()}:
                return pid_file.name.removesuffix(".rank0.pid")
        except (ValueError, OSError, psutil.Error):
            continue
    return None
