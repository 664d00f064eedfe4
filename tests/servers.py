"""Servers a test starts and stops itself, on 127.0.0.1: an MLflow tracking server, PostgreSQL."""
from __future__ import annotations

import os
import signal
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import wait_for
from persona_sweep import tracking


class MlflowServer:
    """`mlflow server` on 127.0.0.1:port with the given backend store; `stop` and `start` again
    keep the same port and store, as a restarted tracking server would."""

    def __init__(self, backend_uri: str, port: int, log: Path):
        self.backend_uri, self.port, self.log = backend_uri, port, log
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
