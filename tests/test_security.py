"""What the tool starts listens on loopback, and Ray keeps token authentication on."""
from __future__ import annotations

import json
import os
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
