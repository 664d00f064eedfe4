"""An embedded Ray (persona_sweep.embedded_ray) leaves no process behind, SIGKILLed or not.

Each test starts its own driver with its own Ray temp dir, so only that instance is looked at
(other Ray clusters may run on the same machine). Without the watchdog, the DashboardAgent and
RuntimeEnvAgent of a SIGKILLed driver live on for about 60 s; the bounds below are far shorter.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from persona_sweep import embedded_ray

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

DRIVER = r"""
import json, subprocess, sys, time
import psutil, ray
from persona_sweep.embedded_ray import start_embedded_ray

temp_dir, mode = sys.argv[1], sys.argv[2]
context = start_embedded_ray(**({} if mode == "attach" else {"_temp_dir": temp_dir}))  # attach: Ray's own

@ray.remote
def spawn_grandchild():  # a process a trial might start, detached from its worker
    return subprocess.Popen(["sleep", "600"], start_new_session=True).pid

extra = [ray.get(spawn_grandchild.remote())] if mode == "kill" else []
deadline = time.monotonic() + (30 if mode != "attach" else 0)
while True:  # the raylet starts its agents on its own schedule
    tree = {}
    for proc in psutil.Process().children(recursive=True) + [psutil.Process(pid) for pid in extra]:
        try:
            tree[proc.pid] = (proc.name(), proc.create_time())
        except psutil.NoSuchProcess:
            pass
    names = sorted(name for name, _ in tree.values())
    if {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= set(names) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(json.dumps({"session_dir": context.address_info["session_dir"], "names": names,
                  "processes": {pid: created for pid, (_, created) in tree.items()}}), flush=True)
if mode == "exit":
    ray.shutdown()
    sys.exit(0)
time.sleep(600)
"""


def start_driver(tmp_path: Path, mode: str, **env_updates) -> tuple[subprocess.Popen, str, dict]:
    """A driver that has started (or attached to) Ray. One retry: on a shared machine another
    session's `ray stop --force` (tests/conftest.py teardown) SIGKILLs every Ray process, ours
    included, and a driver that was starting then fails (`return code -9`, GCS unavailable)."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | env_updates
    for attempt in range(2):
        temp_dir = f"/tmp/ps-embedded-{secrets.token_hex(4)}"  # short: Ray's socket paths must fit
        err = tmp_path / f"driver-{attempt}.err"
        driver = subprocess.Popen([sys.executable, str(script), temp_dir, mode], stdout=subprocess.PIPE,
                                  stderr=err.open("w"), text=True, env=env)
        line = driver.stdout.readline()
        if line:
            return driver, temp_dir, json.loads(line)
        driver.wait(timeout=90)
        cleanup(driver, temp_dir, {})
        time.sleep(5)
    raise AssertionError(f"driver failed twice:\n{err.read_text()[-3000:]}")


def leftovers(temp_dir: str, recorded: dict) -> dict[int, str]:
    """Live processes of that instance: recorded by the driver (same pid and start time), or
    naming the temp dir in their command line or in an open file."""
    found = {}
    for proc in psutil.process_iter(["name", "cmdline", "status", "create_time"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        ours = recorded.get(str(proc.pid)) == proc.info["create_time"]
        ours = ours or temp_dir in " ".join(proc.info["cmdline"] or [])
        if not ours:
            try:
                ours = any(file.path.startswith(temp_dir) for file in proc.open_files())
            except psutil.Error:
                pass
        if ours:
            found[proc.pid] = proc.info["name"]
    return found


def wait_gone(temp_dir: str, recorded: dict, timeout_s: float) -> tuple[dict, float]:
    start = time.monotonic()
    while True:
        left = leftovers(temp_dir, recorded)
        if not left or time.monotonic() - start > timeout_s:
            return left, time.monotonic() - start
        time.sleep(0.25)


def cleanup(driver: subprocess.Popen, temp_dir: str, recorded: dict) -> None:
    """Whatever a failed test left: only this instance's processes."""
    if driver.poll() is None:
        driver.kill()
        driver.wait()
    for pid in leftovers(temp_dir, recorded):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def test_sigkilled_driver_leaves_no_ray_process(tmp_path):
    driver, temp_dir, info = start_driver(tmp_path, "kill")
    try:
        assert "ray::DashboardAgent" in info["names"] and "ray::RuntimeEnvAgent" in info["names"], info["names"]
        assert "sleep" in info["names"]
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        left, waited = wait_gone(temp_dir, info["processes"], timeout_s=20)
        assert not left, f"still running {waited:.0f} s after the driver was SIGKILLed: {left}"
        log = Path(info["session_dir"], "logs", "persona_sweep_watchdog.log")
        assert log.is_file() and "SIG" in log.read_text()
        shutil.rmtree(temp_dir, ignore_errors=True)
    finally:
        cleanup(driver, temp_dir, info["processes"])


def test_normal_exit_leaves_no_ray_process(tmp_path):
    driver, temp_dir, info = start_driver(tmp_path, "exit")
    try:
        assert driver.wait(timeout=60) == 0
        left, waited = wait_gone(temp_dir, info["processes"], timeout_s=10)
        assert not left, f"still running {waited:.0f} s after the driver exited: {left}"
        shutil.rmtree(temp_dir, ignore_errors=True)
    finally:
        cleanup(driver, temp_dir, info["processes"])


def test_attached_cluster_is_left_alone(tmp_path):
    """With RAY_ADDRESS set, ray.init() attaches to that cluster: the driver's death must not
    end it. Then the sweep by session dir alone (no token) ends that whole instance, agents too."""
    other = f"/tmp/ps-other-{secrets.token_hex(4)}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    cluster: dict[int, float] = {}
    driver = temp_dir = info = None
    try:
        started = subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address",
                                  "127.0.0.1", "--port", str(port), "--num-cpus", "1", "--temp-dir", other,
                                  "--include-dashboard=false", "--disable-usage-stats"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, f"ray start failed:\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}"
        heads = [proc.info for proc in psutil.process_iter(["pid", "name", "cmdline", "create_time"])
                 if proc.info["name"] in ("gcs_server", "raylet") and other in " ".join(proc.info["cmdline"] or [])]
        cluster = {info["pid"]: info["create_time"] for info in heads}
        session_dir = next(arg.split("=", 1)[1] for info in heads for arg in info["cmdline"]
                           if arg.startswith(("--session-dir=", "--session_dir=")))
        driver, temp_dir, info = start_driver(tmp_path, "attach", RAY_ADDRESS=f"127.0.0.1:{port}",
                                              RAY_AUTH_MODE="token")
        assert info["session_dir"] == session_dir
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        left, waited = wait_gone(temp_dir, info["processes"], timeout_s=15)  # the watchdog included
        assert not left, f"still running {waited:.0f} s after the driver was SIGKILLed: {left}"
        for pid, created in cluster.items():
            proc = psutil.Process(pid)  # raises NoSuchProcess when it was ended
            assert proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE, "attached cluster ended"
        assert embedded_ray.sweep(secrets.token_hex(16), {session_dir}) >= len(cluster)
        left, waited = wait_gone(other, {}, timeout_s=10)
        assert not left, f"a sweep of {session_dir} left {left}"
        shutil.rmtree(other, ignore_errors=True)
    finally:
        if driver is not None:
            cleanup(driver, temp_dir, info["processes"])
        for session in Path(other).glob("session_2*"):  # this cluster only, never `ray stop`
            embedded_ray.sweep(secrets.token_hex(16), {str(session)})
