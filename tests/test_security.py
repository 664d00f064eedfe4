"""What the tool starts listens on loopback, and Ray keeps token authentication on."""
from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import psutil
import pytest

from conftest import CLI, free_port, wait_for

pytestmark = pytest.mark.slow

EMBEDDED_RAY_PROBE = """
import json, ray
from persona_sweep.engine import connect
connect(None)
print(json.dumps({"dashboard": ray._private.worker.global_worker.node.address_info["webui_url"]}), flush=True)
input()  # keep Ray up until the test has looked
"""


ALL_RAY_LISTENERS_PROBE = """
import json, os, ray, time
from persona_sweep.engine import connect
connect(None)
@ray.remote
def pid():
    time.sleep(1)
    return os.getpid()
ray.get([pid.remote() for _ in range(2)])  # worker processes listen too
session = ray._private.worker.global_worker.node.get_session_dir_path()
print(json.dumps({"session": session, "pid": os.getpid()}), flush=True)
input()
"""
# Services whose stubs only Ray's C++ side has (not among ray.core.generated's Python modules).
CPP_ONLY_RPC_METHODS = ("/ray.rpc.ObjectManagerService/Push", "/ray.rpc.ObjectManagerService/Pull",
                        "/ray.rpc.ObjectManagerService/FreeObjects")
PROMETHEUS_LINE = re.compile(r"^(# (HELP|TYPE) .*|[a-zA-Z_:][\w:]*(\{.*\})? \S+( \d+)?)$")


def listening_hosts(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_embedded_ray_dashboard_is_loopback_only_and_needs_the_token(tmp_path):
    env = {**os.environ, "PERSONA_SWEEP_HOME": str(tmp_path / "home")}
    env.pop("RAY_AUTH_MODE", None)  # the embedded default: the tool must not need it set
    probe = subprocess.Popen([sys.executable, "-c", EMBEDDED_RAY_PROBE], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = "http://" + json.loads(probe.stdout.readline())["dashboard"]
        port = int(url.rsplit(":", 1)[1])
        assert listening_hosts(port) == {"127.0.0.1"}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/jobs/", timeout=10)
        assert refused.value.code in (401, 403)
        token = open(os.path.expanduser("~/.ray/auth_token")).read().strip()
        request = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
        assert urllib.request.urlopen(request, timeout=10).status == 200
    finally:
        probe.communicate("\n", timeout=120)


def test_mlflow_ui_is_loopback_only(tmp_path):
    port = free_port()
    env = {**os.environ, "PERSONA_SWEEP_HOME": str(tmp_path / "home")}
    ui = subprocess.Popen([*CLI, "ui", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        hosts = wait_for(lambda: listening_hosts(port), 120, "the MLflow UI to listen")
        assert hosts == {"127.0.0.1"}
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).status == 200
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(30)


def test_every_listener_of_the_embedded_ray_is_loopback_or_needs_the_token(tmp_path):
    """Each listening socket of the instance (its session's processes, their children, the
    driver): on loopback; or a Ray RPC server that refuses every call without the token
    (UNAUTHENTICATED; UNIMPLEMENTED for services it does not serve); or HTTP that answers 401/403;
    or Ray's Prometheus endpoints, which serve metric values only (README, "Listeners")."""
    env = {**os.environ, "PERSONA_SWEEP_HOME": str(tmp_path / "home")}
    env.pop("RAY_AUTH_MODE", None)
    probe = subprocess.Popen([sys.executable, "-c", ALL_RAY_LISTENERS_PROBE], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        started = json.loads(probe.stdout.readline())
        kinds = {}
        for (host, port), process in ray_listeners(started["session"], started["pid"]).items():
            kinds[(host, port)] = protection(host, port)
            assert kinds[(host, port)], f"{process} listens on {host}:{port} without protection"
    finally:
        probe.communicate("\n", timeout=120)
    found = set(kinds.values())
    assert {"loopback", "token: rpc", "token: http", "metrics only"} <= found, kinds
    assert sum(kind == "token: rpc" for kind in kinds.values()) >= 4, kinds  # GCS, raylet x2, workers


def ray_listeners(session: str, driver_pid: int) -> dict[tuple[str, int], str]:
    roots = [process for process in psutil.process_iter(["cmdline"])
             if session in " ".join(process.info["cmdline"] or []) or process.pid == driver_pid]
    processes = {process.pid: process for root in roots for process in [root, *root.children(recursive=True)]}
    return {(c.laddr.ip, c.laddr.port): processes[c.pid].name() for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in processes}


def protection(host: str, port: int) -> str | None:
    if host in ("127.0.0.1", "::1"):
        return "loopback"
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return http_protection(reachable, port) or rpc_protection(reachable, port)


def http_protection(host: str, port: int) -> str | None:
    try:
        response = urllib.request.urlopen(f"http://{host}:{port}/", timeout=5)
    except urllib.error.HTTPError as error:
        return "token: http" if error.code in (401, 403) else None
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return None  # not HTTP/1: gRPC
    lines = response.read().decode(errors="replace").splitlines()
    return "metrics only" if lines and all(PROMETHEUS_LINE.match(line) for line in lines if line) else None


def rpc_protection(host: str, port: int) -> str | None:
    import grpc

    codes = set()
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        for method in ray_rpc_methods():
            try:
                channel.unary_unary(method)(b"", timeout=5)
                return None  # answered without the token
            except grpc.RpcError as error:
                codes.add(error.code())
    return "token: rpc" if codes == {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED} else None


def ray_rpc_methods() -> list[str]:
    import importlib
    import pkgutil

    import ray.core.generated as generated

    methods = list(CPP_ONLY_RPC_METHODS)
    for module in pkgutil.iter_modules(generated.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"{generated.__name__}.{module.name}").DESCRIPTOR
            methods += [f"/{service.full_name}/{method.name}"
                        for service in descriptor.services_by_name.values() for method in service.methods]
    return methods
