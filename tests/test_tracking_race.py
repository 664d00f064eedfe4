"""MLflow's telemetry client sets and unsets `_MLFLOW_TELEMETRY_SESSION_ID` in os.environ from its
own thread; `requests` walks os.environ for proxies on every call, so a request made meanwhile
failed with a KeyError on that name, which MLflow reports as "API request ... failed with
exception '_MLFLOW_TELEMETRY_SESSION_ID'" (a trial in ~70 errored at its start at 100 trials).

Our processes turn the telemetry off before MLflow is imported, and a request that failed in
this process before any answer is retried like an outage. The flipping is reproduced here as the
telemetry client does it, against a real MLflow server, with many threads opening trial runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import free_port
from persona_sweep import tracking
from servers import MlflowServer

SESSION_ENV = "_MLFLOW_TELEMETRY_SESSION_ID"
THREADS, RUNS_PER_THREAD = 8, 6


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("race")
    server = MlflowServer(f"sqlite:///{folder / 'server.db'}", free_port(), folder / "server.log",
                          artifacts=str(folder / "artifacts")).start()
    # Patience as a sweep's default (600 s) has: under a loaded suite a request met the flip on all
    # six tries that backoff (1, 2, 4 .. 30 s) fits in 60 s.
    where = tracking.Tracking(server.uri, wait_for_server_s=600)
    yield tracking.create_parent_run(where, "race", None, "race", {}, {})
    server.stop()


class TelemetryFlipping:
    """What MLflow's telemetry client does to the environment when it starts and gives up, over
    and over, with threads switching every microsecond so the race shows within seconds."""

    def __init__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.flip, daemon=True)
        self.interval = sys.getswitchinterval()

    def flip(self):
        while not self.stop.is_set():
            os.environ[SESSION_ENV] = "session"
            os.environ.pop(SESSION_ENV, None)

    def __enter__(self):
        sys.setswitchinterval(1e-6)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        sys.setswitchinterval(self.interval)


def open_runs(sweep: tracking.SweepRun, open_one) -> list[str]:
    """THREADS x RUNS_PER_THREAD runs opened concurrently; the errors, as text."""
    def thread(index: int) -> list[str]:
        errors = []
        for run in range(RUNS_PER_THREAD):
            try:
                open_one(sweep, f"t{index}-{run}")
            except Exception as error:  # noqa: BLE001 - counted
                errors.append(str(error))
        return errors

    with TelemetryFlipping(), ThreadPoolExecutor(THREADS) as pool:
        return [error for errors in pool.map(thread, range(THREADS)) for error in errors]


def bare_open(sweep: tracking.SweepRun, trial_id: str) -> None:
    """The requests a trial makes at its start, through MLflow's own client, nothing retried."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=sweep.tracking.uri)
    run = client.create_run(sweep.experiment_id, run_name=trial_id)
    client.log_batch(run.info.run_id, params=[tracking._param("trial", trial_id)])


def test_the_flipping_environment_fails_bare_requests(sweep):
    """The reproduction: without our retry, requests fail with the reported error."""
    errors = []
    for _attempt in range(5):  # a race: in practice within the first round
        errors = open_runs(sweep, bare_open)
        if errors:
            break
    assert errors, "the race did not show in 5 rounds"
    assert any(SESSION_ENV in error and "failed with exception" in error for error in errors), errors[:3]


def test_trial_runs_open_while_the_environment_flips(sweep):
    errors = open_runs(sweep, lambda sweep, trial_id: tracking.open_child_run(sweep, trial_id, {"a": 1}, {}))
    assert errors == []
    assert len(tracking.child_runs(sweep.tracking, sweep.experiment_id)) == THREADS * RUNS_PER_THREAD


def test_our_processes_start_without_mlflow_telemetry():
    """Set before MLflow is imported: its telemetry client never starts, so nothing flips."""
    program = ("import os, persona_sweep.tracking, mlflow\n"
               "from mlflow.telemetry.client import get_telemetry_client\n"
               "print(get_telemetry_client() is None, os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES'),"
               f" '{SESSION_ENV}' in os.environ)\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120,
                            check=True)
    assert result.stdout.split() == ["True", "0", "False"]


def test_a_user_setting_wins():
    program = "import os, persona_sweep.tracking; print(os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'])"
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3"}
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120,
                            check=True)
    assert result.stdout.strip() == "3"


class FailsFirst:
    """A trial's run function that raises `error` on its first call only."""

    def __init__(self, error: Exception):
        self.error, self.calls = error, 0

    def __call__(self, trial) -> None:
        self.calls += 1
        if self.calls == 1:
            raise self.error


def worker_group_error(error: Exception) -> Exception:
    """How Ray Train hands a rank's error to `trainer.fit()`'s caller."""
    from ray.train import WorkerGroupError
    from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

    return WorkerGroupError("rank 0 failed", {0: UserExceptionWithTraceback(error, "Traceback ...")})


@pytest.mark.parametrize("wrap", [lambda error: error, worker_group_error], ids=["toy", "llm"])
def test_a_trial_whose_run_did_not_open_runs_once_more(wrap, capsys):
    from types import SimpleNamespace

    from persona_sweep.engine import run_once_more_if_transient

    run = FailsFirst(wrap(tracking.RunNotOpened("trial t1: its MLflow run did not open: connection reset")))
    run_once_more_if_transient(run, SimpleNamespace(trial_id="t1"))
    assert run.calls == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "trial t1: a transient tracking failure before training" in lines[0]


def test_a_trial_s_own_error_is_not_run_again():
    from types import SimpleNamespace

    from persona_sweep.engine import run_once_more_if_transient

    for error in (ValueError("bad data"), worker_group_error(ValueError("bad data"))):
        run = FailsFirst(error)
        with pytest.raises(type(error)):
            run_once_more_if_transient(run, SimpleNamespace(trial_id="t1"))
        assert run.calls == 1
