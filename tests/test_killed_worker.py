"""A Ray Train worker killed mid-trial: the worker group restarts (FailureConfig) and the trial
continues from its last checkpoint, with every step logged once and one child run.

The worker is chosen by the PID it wrote itself (`SweepPaths.pid_file`: named after its trial
and rank), never by process title. Reliability: `pytest tests/test_killed_worker.py --count 5`
(pytest-repeat) passes 5 times in a row.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import start_cli, wait_for, write_sweep
from helpers import MID_RUN_STEPS, assert_resumed_once, checkpoint_registered, tiny_sweep
from persona_sweep import names

pytestmark = pytest.mark.slow

STEPS = MID_RUN_STEPS  # the kill must land mid-training


def test_a_killed_worker_restarts_from_the_last_checkpoint(ray_address, tmp_path):
    (tmp_path / "trigger").write_text("~killed-worker-trigger~")
    write_sweep(tmp_path / "killed.yaml", tiny_sweep("killed", STEPS, workers=2, max_failures=1))
    home = tmp_path / "runs"
    storage = home / "ray_results" / "killed"
    log = tmp_path / "driver.log"
    driver = start_cli("run", "killed.yaml", "--address", ray_address, home=None, cwd=tmp_path, log=log)
    try:
        wait_for(lambda: checkpoint_registered(storage, **{names.TRAIN_STEP: 5}) or driver.poll() is not None,
                 600, "a checkpoint at step 5")
        assert driver.poll() is None, log.read_text()[-3000:]
        victim = next(iter(pid_files(storage, rank=1)))
        pid = int(victim.read_text())
        os.kill(pid, signal.SIGKILL)
        assert driver.wait(600) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    (run,) = assert_resumed_once(home, "killed", trials=1, steps=STEPS, resumed=1)
    assert 5 <= run.data.metrics[names.RESUMED_FROM_STEP] < STEPS
    assert int(victim.read_text()) != pid  # the restarted worker group wrote its own PID


def pid_files(storage, rank: int):
    """The PID files of `rank` (one per trial), as soon as the worker wrote it."""
    deadline = time.time() + 60
    while time.time() < deadline:
        found = sorted((storage / "_pids").glob(f"*.rank{rank}.pid"))
        if found and all(path.read_text().strip() for path in found):
            return found
        time.sleep(0.5)
    raise AssertionError(f"no PID file for rank {rank} under {storage / '_pids'}")
