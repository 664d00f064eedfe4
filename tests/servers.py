"""Servers a test starts and stops itself: an MLflow tracking server on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
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
