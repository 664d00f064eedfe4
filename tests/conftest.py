"""Shared fixtures: one Ray cluster for the whole session, a fresh home per test, a secret trigger.

The cluster is a real `ray start --head` on 127.0.0.1 with token authentication; the CLI runs
as a subprocess against it (`--address`), exactly as a user would drive a cluster.
"""
from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from persona_sweep import embedded_ray
from persona_sweep.engine import ensure_auth_token

BIN = Path(sys.executable).parent
CLI = [str(BIN / "persona-sweep")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def without_persona_sweep_env() -> dict[str, str]:
    """The environment a user has: no PERSONA_SWEEP_* (Ray workers must not need them)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PERSONA_SWEEP_")}


# `make test` runs two pytest workers (pytest-xdist), each test file in one of three streams:
# - TIMING_BOUND, one file after another on the first worker, with the session cluster's 2 CPUs:
#   files that kill, stop or cut off a running sweep, start Ray or servers of their own, or run
#   two-worker trials;
# - SWEEPS, on the second worker, with a session cluster of its own of 1 CPU: files that run a
#   sweep to its end and read the result;
# - the rest (in-process), a file at a time on whichever worker is free.
# Two full streams of trials on two cores starved the timing-bound tests (benchmarks/README.md):
# here the second worker's trials take one core at most.
TIMING_BOUND, SWEEPS = "timing-bound", "sweeps"
TIMING_BOUND_FILES = {"test_cluster.py", "test_corruption.py", "test_drift.py", "test_embedded_ray.py",
                      "test_killed_worker.py", "test_progress_bar.py", "test_storage_faults.py", "test_sweep.py",
                      "test_tracking_outage.py", "test_tracking_race.py"}
STREAMS = (TIMING_BOUND, SWEEPS, None)


@functools.cache
def stream_of(test_file: Path) -> str | None:
    if test_file.name in TIMING_BOUND_FILES:
        return TIMING_BOUND
    return SWEEPS if "ray_address" in test_file.read_text() else None


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # once, before any worker: no two workers write it at once
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RAY_AUTH_MODE", "token")
            ensure_auth_token()


def pytest_collection_modifyitems(items):
    """The timing-bound files first, then the sweeps (each file's order kept): the scheduler
    hands out units in this order, so the first worker takes the first and the second the next."""
    items.sort(key=lambda item: STREAMS.index(stream_of(item.path)))


def pytest_xdist_make_scheduler(config, log):
    """Each stream one unit of work, every other file one unit (its module fixtures run once)."""
    from xdist.scheduler import LoadScopeScheduling

    root = Path(config.rootpath)
    config.option.loadscopereorder = False  # the collection's order: pytest_collection_modifyitems

    class Streams(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            test_file = nodeid.split("::", 1)[0]
            return stream_of(root / test_file) or test_file

    return Streams(config, log)


SETTING_UP = {}  # the stream of the test being set up: the session cluster's size depends on it


@pytest.hookimpl(tryfirst=True)  # before its fixtures
def pytest_runtest_setup(item):
    SETTING_UP["stream"] = stream_of(item.path)


def session_cluster_cpus(config) -> int:
    """2; 1 where a second worker starts it for the sweeps, beside the timing-bound stream. Each
    worker starts with one of the two streams (the first two units), so none runs both."""
    beside = hasattr(config, "workerinput") and SETTING_UP.get("stream") == SWEEPS
    return 1 if beside else 2


@pytest.fixture(scope="session")
def ray_temp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="session")
def ray_address(ray_temp_dir, pytestconfig):
    temp_dir = ray_temp_dir
    port = free_port()
    env = {**without_persona_sweep_env(), "RAY_AUTH_MODE": "token"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "token")
        ensure_auth_token()
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", str(session_cluster_cpus(pytestconfig)), "--dashboard-host", "127.0.0.1",
                    "--temp-dir", str(temp_dir), "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
    yield f"127.0.0.1:{port}"
    # End exactly this cluster, agents included (`ray stop` would end every Ray on the machine).
    embedded_ray.sweep(secrets.token_hex(16), {str(path) for path in temp_dir.glob("session_2*")})


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("PERSONA_SWEEP_HOME", str(path))
    return path


@pytest.fixture
def trigger_file(tmp_path):
    path = tmp_path / "trigger"
    path.write_text(f"~{secrets.token_hex(6)}~")
    return path


def cli_env(home: Path | None, **extra: str) -> dict[str, str]:
    """With `home=None` the CLI runs as the README says: no PERSONA_SWEEP_HOME, `./runs` of its cwd."""
    env = {**without_persona_sweep_env(), "RAY_AUTH_MODE": "token", **extra}
    if home is not None:
        env["PERSONA_SWEEP_HOME"] = str(home)
    return env


def cli(*args, home: Path | None, check: bool = True, timeout: float = 900, cwd: Path | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *map(str, args)], env=env or cli_env(home), capture_output=True, text=True,
                            timeout=timeout, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"persona-sweep {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def start_cli(*args, home: Path | None, log: Path, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *map(str, args)], env=env or cli_env(home), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=cwd)


def signal_driver_when(driver: subprocess.Popen, ready, timeout_s: float, what: str, log: Path,
                       sig=signal.SIGKILL) -> None:
    """Wait until `ready()` while the driver runs (it must not end first), then send it `sig`
    and let it end (killed if it will not)."""
    try:
        wait_for(lambda: ready() or driver.poll() is not None, timeout_s, what)
        assert driver.poll() is None, log.read_text()[-3000:]
        driver.send_signal(sig)
        driver.wait(120)
    finally:
        if driver.poll() is None:
            driver.kill()


def wait_for(condition, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def write_sweep(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
