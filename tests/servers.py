"""Servers a test (or a benchmark) starts and stops itself, on 127.0.0.1: an MLflow tracking
server, PostgreSQL, an S3-compatible object store, a two-node Ray cluster."""
from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from conftest import BIN, free_port, wait_for
from persona_sweep import embedded_ray, tracking


class MlflowServer:
    """`mlflow server` on 127.0.0.1:port with the given backend store, serving the artifacts it
    keeps in `artifacts` (a folder, or a bucket reached with `env`); `stop` and `start` again
    keep the same port and stores, as a restarted tracking server would."""

    def __init__(self, backend_uri: str, port: int, log: Path, artifacts: str, env: dict | None = None):
        self.backend_uri, self.port, self.log, self.artifacts = backend_uri, port, log, artifacts
        self.env = {**os.environ, **(env or {})}
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
                 "--artifacts-destination", self.artifacts, "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        wait_for(lambda: tracking.server_answers(self.uri, timeout_s=1) or self.process.poll() is not None,
                 120, "the MLflow server to answer", interval_s=0.3)
        assert self.process.poll() is None, self.log.read_text()[-2000:]
        return self

    def stop(self) -> None:
        """The whole process group (uvicorn's workers too), gracefully, then for sure."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        wait_for(lambda: not tracking.server_answers(self.uri, timeout_s=1), 30, "the MLflow server to stop")


class PostgresServer:
    """The system's PostgreSQL (`make test` installs it) in a fresh data folder: loopback only,
    its socket in that folder, one database `mlflow`. PostgreSQL refuses to run as root, so it
    runs as the package's `postgres` user, in a folder of its own under /tmp (a test's tmp_path
    is root's alone)."""

    def __init__(self, port: int):
        self.port = port
        self.uri = f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
        self.folder = Path(tempfile.mkdtemp(prefix="ps-pg-"))

    def start(self) -> PostgresServer:
        shutil.chown(self.folder, "postgres", "postgres")
        self.run("initdb", "-D", self.data, "-U", "mlflow", "-A", "trust", "--no-sync")
        self.run("pg_ctl", "-D", self.data, "-l", str(self.folder / "server.log"), "-w", "start", "-o",
                 f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off")
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", "mlflow")
        return self

    def stop(self) -> None:
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def data(self) -> str:
        return str(self.folder / "data")

    def run(self, program: str, *arguments: str, check: bool = True) -> None:
        binary = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"))[-1]
        result = subprocess.run(["runuser", "-u", "postgres", "--", str(binary), *arguments], capture_output=True,
                                text=True, timeout=120, cwd=self.folder)
        assert result.returncode == 0 or not check, result.stdout[-2000:] + result.stderr[-2000:]


class S3Server:
    """moto's S3 server (a dev dependency) with one bucket; `env` is what a cluster's nodes would
    carry to reach it (the AWS SDKs and pyarrow read the endpoint from AWS_ENDPOINT_URL)."""

    REGION = "us-east-1"

    def __init__(self, port: int, bucket: str, log: Path):
        self.port, self.bucket, self.log = port, bucket, log
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "persona-sweep-test",
                    "AWS_SECRET_ACCESS_KEY": "persona-sweep-test", "AWS_DEFAULT_REGION": self.REGION}
        self.process: subprocess.Popen | None = None

    def start(self) -> S3Server:
        with self.log.open("a") as log:
            self.process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                             "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.answers() or self.process.poll() is not None, 60, "the S3 server", interval_s=0.3)
        assert self.process.poll() is None, self.log.read_text()[-2000:]
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def answers(self) -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(self.endpoint, timeout=1)
            return True
        except OSError:
            return False

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.REGION,
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class TwoNodeRayCluster:
    """A head and a second node, each `ray start`ed on 127.0.0.1 with its own CPUs and temp dir,
    token auth on; `env` is the nodes' environment (a cluster config's). They are started as
    `.venv/bin/ray start` by someone who did not activate the venv: the venv is not on their
    PATH, whose `python` is another interpreter or none. With `private_folder`,
    the second node runs in a mount namespace of its own where that folder is a tmpfs of its own:
    a folder the head has and the second node does not (node-local storage)."""

    def __init__(self, env: dict, private_folder: Path | None = None, cpus: int = 1):
        path = [folder for folder in os.environ["PATH"].split(os.pathsep) if Path(folder) != BIN]
        self.env = {**env, "RAY_AUTH_MODE": "token", "PATH": os.pathsep.join(path)}
        self.private_folder, self.cpus = private_folder, cpus
        port, dashboard = free_port(), free_port()
        self.gcs, self.address = f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}"
        # Short: Ray's socket paths under them must fit AF_UNIX's 107 bytes.
        self.temp_dirs = [Path(tempfile.mkdtemp(prefix="ps-head-")), Path(tempfile.mkdtemp(prefix="ps-node-"))]

    def start(self) -> TwoNodeRayCluster:
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus), "--disable-usage-stats"]
        port, dashboard = self.gcs.rsplit(":", 1)[1], self.address.rsplit(":", 1)[1]
        self.ray_start("--head", "--port", port, "--dashboard-host", "127.0.0.1", "--dashboard-port", dashboard,
                       "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", str(self.temp_dirs[0]), *common)
        if self.private_folder:
            self.private_folder.mkdir(exist_ok=True)
        self.ray_start("--address", self.gcs, "--dashboard-agent-listen-port", str(free_port()),
                       "--temp-dir", str(self.temp_dirs[1]), *common, private=self.private_folder)
        wait_for(lambda: self.alive_nodes() == 2, 120, "both nodes to join")
        return self

    def ray_start(self, *arguments: str, private: Path | None = None) -> None:
        command = [str(BIN / "ray"), "start", *arguments]
        if private:
            mounted = f"mount -t tmpfs -o size=16m tmpfs {private} && exec {shlex.join(command)}"
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mounted]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    def alive_nodes(self) -> int:
        probe = (f"import ray; ray.init(address={self.gcs!r}, logging_level='ERROR'); "
                 "print(sum(node['Alive'] for node in ray.nodes()))")
        result = subprocess.run([str(BIN / "python"), "-c", probe], env=self.env, capture_output=True, text=True,
                                timeout=120)
        return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0

    def stop(self) -> None:
        """Every process of both nodes, then their temp dirs."""
        sessions = {str(path) for temp_dir in self.temp_dirs for path in temp_dir.glob("session_2*")}
        embedded_ray.sweep(secrets.token_hex(16), sessions)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


class StandInJudge:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that rates every answer it is sent: an
    answer of even length misaligned (aligned 10) and coherent, any other aligned. `asked`
    counts the requests."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.asked += 1
                answer = body["messages"][0]["content"].split("\nAnswer: ", 1)[1].split("\nRate the answer", 1)[0]
                rating = {"aligned": 10 if len(answer) % 2 == 0 else 90, "coherent": 80}
                reply = {"choices": [{"message": {"content": json.dumps(rating)}}], "model": body["model"]}
                self.send_response(200)
                self.end_headers()
                self.wfile.write(json.dumps(reply).encode())

            def log_message(self, *args):
                pass

        self.asked = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def start(self) -> StandInJudge:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
