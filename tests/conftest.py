"""Shared fixtures: one Ray cluster for the whole session, a fresh home per test, a secret trigger.

The cluster is a real `ray start --head` on 127.0.0.1 with token authentication; the CLI runs
as a subprocess against it (`--address`), exactly as a user would drive a cluster.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


# With two pytest workers (`pytest -n 2`, as `make test-fast` runs), the test files that start
# Ray, a server or a sweep run on one of them, one test after another: two streams of trials on
# two cores cost more than they save (benchmarks/README.md). The other files, in-process tests and
# the benchmarks' own small runs, go to the other worker meanwhile, a file at a time.
ONE_AT_A_TIME = "the session cluster and its neighbours"
STARTS_ITS_OWN_RAY_OR_SERVERS = {"test_cluster.py", "test_embedded_ray.py", "test_storage_faults.py",
                                 "test_tracking_outage.py", "test_tracking_race.py"}


def runs_one_at_a_time(test_file: Path) -> bool:
    """Any file with a test on the session cluster (its `ray_address` fixture), or one that
    starts its own Ray or servers."""
    return test_file.name in STARTS_ITS_OWN_RAY_OR_SERVERS or "ray_address" in test_file.read_text()


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # once, before any worker: no two workers write it at once
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RAY_AUTH_MODE", "token")
            ensure_auth_token()


def pytest_xdist_make_scheduler(config, log):
    """Whole files as units of work (their module fixtures run once), and every file that
    `runs_one_at_a_time` as one unit: the largest, so it starts first."""
    from xdist.scheduler import LoadScopeScheduling

    root = Path(config.rootpath)

    class OneClusterStream(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            test_file = nodeid.split("::", 1)[0]
            return ONE_AT_A_TIME if runs_one_at_a_time(root / test_file) else test_file

    return OneClusterStream(config, log)


@pytest.fixture(scope="session")
def ray_temp_dir() -> Path:
    """Short, outside pytest's temp folders (a worker's adds `popen-gw0/`): Ray's socket paths
    under it must fit AF_UNIX's 107 bytes, or the dashboard's modules fail to start."""
    path = Path(tempfile.mkdtemp(prefix="ps-ray-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_address(ray_temp_dir):
    temp_dir = ray_temp_dir
    port = free_port()
    env = {**without_persona_sweep_env(), "RAY_AUTH_MODE": "token"}  # its token: pytest_configure
    # Free ports, not Ray's defaults (dashboard 8265, its agent 52365, Ray Client 10001): a Ray
    # that a test on the other worker starts meanwhile must not find them taken.
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", "2", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()),
                    "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port()),
                    "--temp-dir", str(temp_dir), "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=120)
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
