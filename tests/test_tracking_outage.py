"""The MLflow tracking server goes away mid-sweep.

Back within `tracking.wait_for_server_s`: the trial waits, then goes on; nothing is lost or
logged twice. Away for longer: the trial errors with one clear line, `run` exits 1 with the way
back, and `resume` (server up again) finishes the trial from its last checkpoint.
"""
from __future__ import annotations

import threading
import time

import pytest

from conftest import cli, free_port, start_cli, write_sweep
from helpers import MID_RUN_STEPS, assert_resumed_once, checkpoint_registered, tiny_sweep
from persona_sweep import names, tracking
from servers import MlflowServer

pytestmark = pytest.mark.slow

STEPS = MID_RUN_STEPS  # the outage must land mid-training


def tracked_sweep(name: str, steps: int, uri: str, wait_s: int) -> str:
    return tiny_sweep(name, steps, extra=f'tracking: {{mlflow_uri: "{uri}", wait_for_server_s: {wait_s}}}\n')


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", free_port(), tmp_path / "server.log",
                          artifacts=str(tmp_path / "server-artifacts")).start()
    yield server
    server.stop()


def start_sweep(tmp_path, server: MlflowServer, ray_address: str, name: str, wait_s: int):
    (tmp_path / "trigger").write_text("~outage-trigger~")
    write_sweep(tmp_path / f"{name}.yaml", tracked_sweep(name, STEPS, server.uri, wait_s))
    log = tmp_path / "driver.log"
    return start_cli("run", f"{name}.yaml", "--address", ray_address, home=None, cwd=tmp_path, log=log), log


def wait_for_checkpoint(storage, driver, log) -> None:
    deadline = time.monotonic() + 600
    while not checkpoint_registered(storage, **{names.TRAIN_STEP: 5}):
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def test_a_server_back_within_the_wait_loses_nothing(tmp_path, server, ray_address, ray_temp_dir):
    driver, log = start_sweep(tmp_path, server, ray_address, "outage", wait_s=300)
    try:
        wait_for_checkpoint(tmp_path / "runs" / "ray_results" / "outage", driver, log)
        server.stop()
        time.sleep(5)
        assert driver.poll() is None, log.read_text()[-3000:]
        server.start()
        back = time.time()
        assert driver.wait(600) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    # The trial's worker said so in its log (Ray keeps worker output out of the driver's console).
    worker_logs = "".join(path.read_text(errors="replace") for path in ray_temp_dir.glob("session_2*/logs/worker-*.err"))
    assert f"{server.uri} unreachable; retrying for up to 300 s" in worker_logs
    assert f"{server.uri} answered again after" in worker_logs
    (run,) = assert_resumed_once(tmp_path / "runs", "outage", trials=1, steps=STEPS, resumed=0, uri=server.uri)
    assert names.MARKER_RATE_TRIGGER in run.data.metrics
    mlflow = tracking.Tracking(server.uri).client()
    # The trial trained across the outage: it logged steps after the server came back.
    assert max(m.timestamp for m in mlflow.get_metric_history(run.info.run_id, names.LOSS)) > back * 1000
    parent = mlflow.get_run(run.data.tags[names.PARENT_RUN_ID])
    assert parent.info.status == "FINISHED"


def test_the_drivers_writes_wait_for_the_server_and_its_answers_raise_at_once(tmp_path, server):
    mlflow = tracking.Tracking(server.uri).client()
    run_id = mlflow.create_run(mlflow.create_experiment("driver-writes")).info.run_id
    with pytest.raises(Exception, match="RESOURCE_DOES_NOT_EXIST|not found"):
        mlflow.get_run("0" * 32)  # the server's own answer: no waiting
    server.stop()
    tagged = threading.Thread(target=mlflow.set_tag, args=(run_id, "status", "written during the outage"))
    tagged.start()
    time.sleep(3)
    assert tagged.is_alive()
    server.start()
    tagged.join(120)
    assert not tagged.is_alive()
    assert mlflow.get_run(run_id).data.tags["status"] == "written during the outage"
    server.stop()
    with pytest.raises(tracking.TrackingUnreachable, match=rf"{server.uri} did not answer for 2 s"):
        tracking.Tracking(server.uri, wait_for_server_s=2).client().set_tag(run_id, "status", "never")


def test_a_server_away_past_the_wait_errors_the_trial_and_resume_finishes_it(tmp_path, server, ray_address):
    driver, log = start_sweep(tmp_path, server, ray_address, "outage-long", wait_s=4)
    try:
        wait_for_checkpoint(tmp_path / "runs" / "ray_results" / "outage-long", driver, log)
        server.stop()
        assert driver.wait(600) == 1, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    output = log.read_text()
    assert f"{server.uri} did not answer for 4 s" in output
    assert output.rstrip().splitlines()[-1].endswith(
        "once that is fixed, `persona-sweep resume outage-long` continues from the last checkpoints")
    assert "Traceback" not in output.rstrip().splitlines()[-1]
    server.start()
    cli("resume", "outage-long", "--address", ray_address, home=None, cwd=tmp_path)
    (run,) = assert_resumed_once(tmp_path / "runs", "outage-long", trials=1, steps=STEPS, resumed=1, uri=server.uri)
    assert run.data.metrics[names.RESUMED_FROM_STEP] >= 5


def test_a_sweep_whose_server_does_not_answer_is_refused(tmp_path, home):
    (tmp_path / "trigger").write_text("~outage-trigger~")
    uri = f"http://127.0.0.1:{free_port()}"
    write_sweep(tmp_path / "nobody.yaml", tracked_sweep("nobody", 5, uri, 60))
    result = cli("run", "nobody.yaml", home=home, cwd=tmp_path, check=False, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: tracking.mlflow_uri: no MLflow server answers at {uri}"
    assert not (home / "sweeps").exists()


def test_credentials_in_the_tracking_uri_are_refused(tmp_path, home):
    (tmp_path / "trigger").write_text("~outage-trigger~")
    write_sweep(tmp_path / "creds.yaml", tracked_sweep("creds", 5, "http://alice:s3cret@127.0.0.1:5000", 60))
    result = cli("validate", "creds.yaml", home=home, cwd=tmp_path, check=False, timeout=120)
    assert result.returncode == 2 and "s3cret" not in result.stderr + result.stdout
    assert result.stderr.startswith("error: tracking.mlflow_uri: holds credentials")
