"""An embedded local Ray whose processes do not outlive the driver, however the driver ends.

`ray.init()` without an address starts gcs_server, raylet, dashboard, monitor and log_monitor
with PR_SET_PDEATHSIG (ray/_private/services.py, start_ray_process -> preexec_fn ->
set_kill_on_parent_death_linux), so they die with the driver. The raylet's own children do not
share its fate that way: the DashboardAgent and RuntimeEnvAgent notice the raylet is gone at
once, but then report it through `publish_error_to_driver`, a GCS call with a hard-coded 60 s
timeout (ray/_private/process_watcher.py report_raylet_error_logs -> ray/_private/utils.py
publish_error_to_driver), and the GCS is dead too: after a SIGKILLed driver they linger ~60 s,
reparented to init, under a rewritten command line (`ray::DashboardAgent`) that names neither
the session nor the temp dir. No Ray setting shortens that.

So `start_embedded_ray` starts a small watchdog first: a separate Python process (stdlib only,
its own session, so a Ctrl-C or a process-group kill of the driver does not reach it) that
waits for the driver to exit (a pidfd; polling where there is none) and then ends every process
of this Ray instance, found by
  - a random token in its environment, which the driver sets only while `ray.init` runs, so
    every process Ray starts inherits it (the agents' setproctitle sometimes wipes it),
  - the session dir in its command line or in a file it has open for writing (the agents'
    logs), once the driver has named the session (or the watchdog found it during init),
  - a parent that is one of them.
Nothing else on the machine carries that token or writes into that session, so other Ray
instances are never touched; when ray.init attaches to a running cluster instead (RAY_ADDRESS,
a `ray start` on this machine), its session is not ours and the watchdog is not told about it.
On a normal exit (`ray.shutdown`) there is nothing left and the watchdog simply exits; the
driver never waits for it.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

GUARD_ENV = "PERSONA_SWEEP_RAY_GUARD"
SETTLE_S = 1.0  # after the driver exits, before SIGTERM
TERM_GRACE_S = 2.0  # between SIGTERM and SIGKILL
INIT_ARGS = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "log_to_driver": False}

_watchdog: subprocess.Popen | None = None
_watchdog_token = ""
_watched_pid = 0


def start_embedded_ray(**init_args):
    """`ray.init` of a new local cluster (our defaults, overridable) that cannot outlive this
    process; returns Ray's context."""
    import ray

    args = {**INIT_ARGS, **init_args}
    if not sys.platform.startswith("linux"):
        return ray.init(**args)
    watchdog, token = _ensure_watchdog()
    previous = os.environ.get(GUARD_ENV)
    os.environ[GUARD_ENV] = token
    message = "-"  # "nothing more to learn": the watchdog stops looking for the session
    try:
        context = ray.init(**args)
        session_dir = (getattr(context, "address_info", None) or {}).get("session_dir")
        # With RAY_ADDRESS set, or after a `ray start` on this machine (its ray_current_cluster
        # file), ray.init() without an address attaches to that cluster instead of starting
        # one: its session is not ours to end.
        if session_dir and _started_here(session_dir):
            message = session_dir
    finally:  # later subprocesses of the driver are not Ray's: they do not get the token
        if previous is None:
            os.environ.pop(GUARD_ENV, None)
        else:
            os.environ[GUARD_ENV] = previous
        try:
            watchdog.stdin.write(f"{message}\n".encode())
            watchdog.stdin.flush()
        except (AttributeError, OSError):
            pass
    return context


def _ensure_watchdog() -> tuple[subprocess.Popen, str]:
    """One watchdog per driver process, reused by later `start_embedded_ray` calls."""
    global _watchdog, _watchdog_token, _watched_pid
    if _watchdog is not None and _watchdog.poll() is None and _watched_pid == os.getpid():
        return _watchdog, _watchdog_token
    token = os.urandom(16).hex()
    pid = os.getpid()
    env = {key: value for key, value in os.environ.items() if key != GUARD_ENV}
    _watchdog = subprocess.Popen(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), str(pid), str(_start_time(pid)), token],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, cwd="/", close_fds=True, start_new_session=True)
    _watchdog_token, _watched_pid = token, pid
    return _watchdog, token


def _started_here(session_dir: str) -> bool:
    """Whether this process started that session (gcs_server, raylet... are its children)."""
    me, sessions = os.getpid(), {os.fsencode(session_dir.rstrip("/"))}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat and stat[1] == me and _names(_read(f"/proc/{name}/cmdline").replace(b"\0", b" "), sessions):
                return True
    return False


# ---- the watchdog (runs as `python -I -S embedded_ray.py PID START_TIME TOKEN`) -------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks) from /proc, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _start_time(pid: int) -> int:
    stat = _stat(pid)
    return stat[2] if stat else -1


def _alive(pid: int, start_time: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == start_time and stat[0] not in "ZX"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


SESSION_ARG = re.compile(rb"--session[-_]dir=(\S+)")  # gcs_server, raylet, dashboard, log_monitor


def _under(path: bytes, sessions: set[bytes]) -> bool:
    return any(path == session or path.startswith(session + b"/") for session in sessions)


def _names(cmdline: bytes, sessions: set[bytes]) -> bool:
    cmdline += b" "
    return any(session + b"/" in cmdline or session + b" " in cmdline for session in sessions)


def _writes_under(pid: int, sessions: set[bytes]) -> bool:
    """An fd open for writing to a file of the session (logs): survives a rewritten command
    line and environment. Readers (`tail -f` on a log) do not count."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if not _under(os.fsencode(os.readlink(f"/proc/{pid}/fd/{fd}")), sessions):
                continue
            flags = int(_read(f"/proc/{pid}/fdinfo/{fd}").split(b"flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            return True
    return False


def find_session_processes(token: str, session_dirs: set[str]) -> dict[int, int]:
    """pid -> start time of every live process of this Ray instance: the token in its
    environment, the session dir in its command line or in a file it writes, or a parent that
    is one of them. Session dirs named by the token's processes are added to `session_dirs`.

    /proc/PID/environ alone is not enough: Ray's setproctitle (`ray::DashboardAgent`) sometimes
    wipes it, so the agents are found by the log files they write."""
    needle = f"{GUARD_ENV}={token}".encode()
    me = os.getpid()
    table: dict[int, tuple[int, int, bytes]] = {}
    matched: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        stat = _stat(pid)
        if stat is None or stat[0] in "ZX":
            continue
        cmdline = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ")
        table[pid] = (stat[1], stat[2], cmdline)
        if needle in _read(f"/proc/{pid}/environ"):
            matched.add(pid)
            session_dirs.update(os.fsdecode(found) for found in SESSION_ARG.findall(cmdline))
    sessions = {os.fsencode(path.rstrip("/")) for path in session_dirs}
    if sessions:
        for pid, (_, _, cmdline) in table.items():
            if pid not in matched and (_names(cmdline, sessions) or _writes_under(pid, sessions)):
                matched.add(pid)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(matched)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in matched:
                matched.add(child)
                todo.append(child)
    return {pid: table[pid][1] for pid in matched}


def _signal(processes: dict[int, int], sig: int) -> None:
    for pid, start_time in processes.items():
        if _alive(pid, start_time):  # never a recycled pid
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def _wait_gone(found: dict[int, int], seconds: float) -> dict[int, int]:
    deadline = time.monotonic() + seconds
    while found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = {pid: start for pid, start in found.items() if _alive(pid, start)}
    return found


def sweep(token: str, session_dirs: set[str], log=None) -> int:
    """End what is left of the instance: a moment to exit on its own (after `ray.shutdown` the
    dashboard's module processes are still on their way out), then SIGTERM, then SIGKILL.
    Returns how many processes it signalled."""
    found = _wait_gone(find_session_processes(token, session_dirs), SETTLE_S)
    total = set(found)
    if found and log:
        log(f"SIGTERM {sorted(found)}")
    _signal(found, signal.SIGTERM)
    _wait_gone(found, TERM_GRACE_S)
    for _ in range(5):  # again: a dying process may have started another
        found = find_session_processes(token, session_dirs)
        if not found:
            break
        total |= set(found)
        if log:
            log(f"SIGKILL {sorted(found)}")
        _signal(found, signal.SIGKILL)
        time.sleep(0.2)
    return len(total)


def _watch(driver_pid: int, driver_start: int, token: str) -> None:
    """Wait for the driver to exit, then sweep. Until the driver names its session dir (after
    `ray.init`), look it up every half second in the token's processes, in case the driver
    dies in the middle of `ray.init`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    session_dirs: set[str] = set()
    told = False
    pending = b""
    try:
        pidfd = os.pidfd_open(driver_pid)
    except (AttributeError, OSError):
        pidfd = None
    stdin = sys.stdin.fileno()
    watched = [stdin] + ([pidfd] if pidfd is not None else [])
    give_up_polling = time.monotonic() + 600
    while _alive(driver_pid, driver_start):
        polling = not told and time.monotonic() < give_up_polling
        ready, _, _ = select.select(watched, [], [], 0.5 if polling or pidfd is None else None)
        if stdin in ready:
            data = os.read(stdin, 65536)
            if not data:  # closed: the driver exits or died; only the pid says which
                watched.remove(stdin)
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                told = True
                if line.strip() not in (b"", b"-"):
                    session_dirs.add(os.fsdecode(line.strip()))
        if pidfd is not None and pidfd in ready:
            break
        if polling and not ready:
            find_session_processes(token, session_dirs)
            told = bool(session_dirs)

    def log(message: str) -> None:
        for session in sorted(session_dirs):
            try:
                with open(os.path.join(session, "logs", "persona_sweep_watchdog.log"), "a") as file:
                    file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} driver {driver_pid} exited: {message}\n")
            except OSError:
                pass

    sweep(token, session_dirs, log)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
