"""Sweeps on a Ray cluster through Ray's Job Submission API (`--address http://HEAD:8265`).

A submitted sweep is a Ray job whose submission id is the sweep name and whose entrypoint is
`PYTHON -m persona_sweep run SWEEP --address auto` on the head node: the same driver as a local
`run`, attached to the cluster. PYTHON is the interpreter the head's Ray workers run (the head
raylet's `--python_worker_command`, read from the dashboard), so a cluster started as
`.venv/bin/ray start` without the venv activated runs its driver in that venv too; Ray's job
API itself runs the entrypoint with whatever `python` the head's PATH finds first. The job
ships the sweep file (its working_dir) and this checkout's `persona_sweep` package
(py_modules), so the cluster runs the code that validated the sweep; the dependencies come
from the cluster's image. The trigger never travels: the sweep names a `trigger_env` /
`trigger_file` that exists on the cluster's nodes.

On the cluster, `PERSONA_SWEEP_HOME` (shared storage: records, results, checkpoints) and the
tracking URI come from the nodes' environment (the cluster config), never from the laptop.
`stop` sends the driver SIGINT, as Ctrl-C would (Ray's RAY_JOB_STOP_SIGNAL), and gives it
`STOP_GRACE_S` to tag its unfinished trials `interrupted`; `resume` is a new job.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from persona_sweep.errors import SweepError, first_line
from persona_sweep.tracking import is_server

SWEEP_FILE = "sweep.yaml"  # the sweep file's name in the job's working_dir
STOP_GRACE_S = 120
PACKAGE = Path(__file__).resolve().parent
WORKER_COMMAND = "--python_worker_command="
# Ray's own lines in a job's log: "2026-01-01 12:00:00,000\tINFO ...", "(pid=...) ...", "Running entrypoint ...".
RAY_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\([^)]*pid=\d+|Running entrypoint for job ")


def is_job_address(address: str | None) -> bool:
    """An http(s) URL: the Job Submission API (anything else attaches as the driver)."""
    return bool(address) and is_server(address)


def names_a_dashboard(address: str | None) -> bool:
    """`--address`, or else RAY_ADDRESS (for these verbs only), is a dashboard URL."""
    return is_job_address(address or os.environ.get("RAY_ADDRESS"))


def job_address(address: str | None) -> str:
    """`--address`, or RAY_ADDRESS for these verbs only; it must be a dashboard URL."""
    if not names_a_dashboard(address):
        raise SweepError("--address: the cluster's dashboard, http://HEAD:8265 (or set RAY_ADDRESS to it)")
    return address or os.environ["RAY_ADDRESS"]


def jobs(address: str | None):
    """Ray's Job Submission client, with the cluster's token (auth stays on)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = job_address(address)
    try:
        return JobSubmissionClient(address, headers=token_header())
    except AuthenticationError as error:
        raise SweepError(f"--address: the Ray dashboard at {address} refused this machine's token "
                         f"({first_line(error)}); put the cluster's token in ~/.ray/auth_token "
                         "or RAY_AUTH_TOKEN") from None
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise SweepError(f"--address: no Ray dashboard answers at {address} ({first_line(error)})") from None


def token_header() -> dict:
    """The cluster's token from where Ray keeps it (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH,
    ~/.ray/auth_token), whatever RAY_AUTH_MODE says: Ray reads the mode once per process, so a
    process that touched Ray before the mode was set would send no token."""
    from ray._raylet import AuthenticationTokenLoader

    return AuthenticationTokenLoader.instance().get_token_for_http_header(ignore_auth_mode=True)


def job_env() -> dict:
    """Stop = Ctrl-C for the driver, with time to tag its unfinished trials."""
    return {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)}


def head_python(client) -> str:
    """The interpreter of the head's Ray workers, or `python` where the dashboard does not say."""
    request = urllib.request.Request(f"{client.get_address()}/nodes?view=summary", headers=token_header())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            nodes = json.load(answer)["data"]["summary"]
    except (OSError, ValueError, KeyError):
        return "python"
    for node in nodes:  # "cmdline": the node's raylet process, as the dashboard's node view shows it
        if (node.get("raylet") or {}).get("isHeadNode"):
            for flag in node.get("cmdline") or []:
                if flag.startswith(WORKER_COMMAND):
                    return shlex.split(flag.removeprefix(WORKER_COMMAND))[0]
    return "python"


def submit(client, job_id: str, arguments: list[str], sweep_file: Path | None = None) -> str:
    """A job running `PYTHON -m persona_sweep ARGUMENTS --address auto`; returns its id."""
    with tempfile.TemporaryDirectory() as folder:
        if sweep_file is not None:
            shutil.copyfile(sweep_file, Path(folder) / SWEEP_FILE)
        runtime_env = {"working_dir": folder, "py_modules": [str(PACKAGE)], "env_vars": job_env(),
                       "excludes": ["__pycache__", "*.pyc"]}
        entrypoint = shlex.join([head_python(client), "-m", "persona_sweep", *arguments, "--address", "auto"])
        try:
            return client.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env)
        except RuntimeError as error:
            if "already exists" in str(error):
                raise SweepError(f"--name: the cluster already has a job '{job_id}' "
                                 f"(`persona-sweep status {job_id} --address ...`)") from None
            raise


def submit_sweep(client, sweep_file: Path, overrides: tuple[str, ...], name: str) -> str:
    return submit(client, name, ["run", SWEEP_FILE, *overrides, "--name", name], sweep_file)


def submit_resume(client, name: str) -> str:
    """A new job (ids are never reused): `<name>-resume-<n>`."""
    taken = {job.submission_id for job in client.list_jobs()}
    job_id = next(f"{name}-resume-{n}" for n in range(1, 10_000) if f"{name}-resume-{n}" not in taken)
    return submit(client, job_id, ["resume", name])


def latest_job(client, name: str) -> str:
    """The sweep's newest job: its `run`, or the last `resume`."""
    ids = {job.submission_id: job.start_time or 0 for job in client.list_jobs()
           if job.submission_id == name or (job.submission_id or "").startswith(f"{name}-resume-")}
    if not ids:
        raise SweepError(f"no job for sweep '{name}' on this cluster (see `ray job list`)")
    return max(ids, key=ids.get)


def follow(client, job_id: str, echo) -> int:
    """Print the job's output as it comes; the driver's exit code once it ends, and for a
    failed job one last line on stderr with that code and the driver's last error line."""

    async def tail():
        async for lines in client.tail_job_logs(job_id):
            echo(lines.rstrip("\n"))

    asyncio.run(tail())
    code = exit_code(client, job_id)
    if code != 0:
        echo(f"job '{job_id}' failed with exit code {code}: {last_error_line(client.get_job_logs(job_id))}", err=True)
    return code


def last_error_line(logs: str) -> str:
    """The driver's last words: its last line that is not one of Ray's own log lines."""
    ours = [line.strip() for line in logs.splitlines() if line.strip() and not RAY_LOG_LINE.match(line)]
    return ours[-1][:500] if ours else "(no output)"


def exit_code(client, job_id: str) -> int:
    from ray.job_submission import JobStatus

    while not (info := client.get_job_info(job_id)).status.is_terminal():
        time.sleep(1)
    if info.driver_exit_code is not None:
        return info.driver_exit_code
    return 0 if info.status == JobStatus.SUCCEEDED else 1


def stop(client, job_id: str) -> str:
    """Ask the job to stop and wait until it has (the driver tags its trials meanwhile)."""
    client.stop_job(job_id)
    deadline = time.monotonic() + STOP_GRACE_S + 30
    while not (status := client.get_job_status(job_id)).is_terminal() and time.monotonic() < deadline:
        time.sleep(1)
    return str(status)
