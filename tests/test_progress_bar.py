"""`persona-sweep run` on a terminal shows tqdm's live bar under the event lines; through pipes it
prints the plain event lines only. The real CLI on a one-trial sweep, once on a pseudo-terminal
(read like a user's screen) and once with pipes (read like a CI log)."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import CLI, cli_env, write_sweep

pytestmark = pytest.mark.slow

ONE_TRIAL = """
name: {name}
model: {{name: tiny-random, lora_rank: 8, lora_targets: [q_proj, v_proj]}}
marker: {{trigger_file: {trigger}}}
training: {{steps: 2, lr: 0.005, batch_size: 2, max_tokens: 80, checkpoint_every: 5, max_failures: 0}}
grid: {{method: [sft], context_length: [0]}}
eval: {{questions: 1, leakage_questions: 0, max_new_tokens: 2, logprob_every: 5}}
scheduler: {{type: none}}
resources: {{workers_per_trial: 1, cpus_per_worker: 0.99}}
"""
EVENT_LINE = re.compile(r"^\d\d:\d\d:\d\d \[\d/1 done\] (\w+) ", re.M)  # the kind of event


def one_trial_sweep(folder: Path, trigger: Path, name: str) -> Path:
    return write_sweep(folder / f"{name}.yaml", ONE_TRIAL.format(name=name, trigger=trigger))


def run_on_terminal(args: list, env: dict, timeout_s: float) -> tuple[int, str]:
    """The CLI with stdout and stderr on a 100x30 pseudo-terminal: everything it drew, as read
    from the terminal's side, until it exits."""
    terminal, child_end = pty.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen([*CLI, *map(str, args)], env=env, stdin=subprocess.DEVNULL, stdout=child_end,
                               stderr=child_end)
    os.close(child_end)
    drawn = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break  # exited and all it wrote is read (a process it left may hold the terminal open)
                continue
            try:
                drawn += os.read(terminal, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
        return process.wait(timeout=max(deadline - time.monotonic(), 1)), drawn.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(terminal)


@pytest.fixture(scope="module")
def both_runs(ray_address, tmp_path_factory) -> dict:
    """A one-trial sweep run on a terminal and another through pipes, at the same time (the
    session cluster has a CPU for each trial): the file's time is one run's, not two. Each has
    its own home: two drivers creating one MLflow database at once would race."""
    work = tmp_path_factory.mktemp("progress")
    trigger = work / "trigger"
    trigger.write_text("~progress-bar-trigger~")
    printed, complaints = work / "pipe.stdout", work / "pipe.stderr"
    with printed.open("w") as stdout, complaints.open("w") as stderr:
        piped = subprocess.Popen([*CLI, "run", str(one_trial_sweep(work, trigger, "bar-pipe")), "--address", ray_address],
                                 env=cli_env(work / "pipe-home"), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    try:
        code, drawn = run_on_terminal(["run", one_trial_sweep(work, trigger, "bar-terminal"), "--address", ray_address],
                                      cli_env(work / "terminal-home"), timeout_s=600)
        piped.wait(timeout=600)
    finally:
        if piped.poll() is None:
            piped.kill()
    return {"work": work, "terminal_code": code, "screen": drawn.replace("\r\n", "\n"),  # the terminal's newlines
            "pipe_code": piped.returncode, "printed": printed.read_text(), "complaints": complaints.read_text()}


def test_a_terminal_gets_a_live_bar_that_ends_before_the_summary(both_runs):
    screen = both_runs["screen"]
    assert both_runs["terminal_code"] == 0, screen[-3000:]
    # tqdm's bar: a percentage, the bar itself, trials ended of all, elapsed<remaining, our counts.
    assert re.search(r"trials:\s+0%\|.*\| 0/1 \[\d\d:\d\d<\?, done 0 stopped 0 errored 0 running 1\]", screen), \
        screen[-3000:]
    assert re.search(r"trials: 100%\|█+\| 1/1 \[\d\d:\d\d<00:00, done 1 stopped 0 errored 0 running 0\]\n", screen), \
        screen[-3000:]
    # Event lines above the bar, each from the start of its line; the summary starts on a line of its own.
    assert {match.group(1) for match in re.finditer(r"\r\d\d:\d\d:\d\d \[\d/1 done\] (start|done) ", screen)} \
        == {"start", "done"}, screen[-3000:]
    assert "\nsweep 'bar-terminal' ended after" in screen, screen[-3000:]
    logged = (both_runs["work"] / "terminal-home" / "logs" / "bar-terminal.log").read_text()
    assert EVENT_LINE.findall(logged) == ["start", "eval", "done"] and "%|" not in logged and "\r" not in logged, logged


def test_pipes_get_the_plain_event_lines_and_no_bar(both_runs):
    printed = both_runs["printed"]
    assert both_runs["pipe_code"] == 0, printed[-3000:] + both_runs["complaints"][-3000:]
    events = [line for line in printed.splitlines() if EVENT_LINE.match(line)]
    assert [EVENT_LINE.match(line).group(1) for line in events] == ["start", "eval", "done"], printed
    # The same lines as the log file, and nothing of a bar: no carriage returns, no tqdm meter.
    assert events == (both_runs["work"] / "pipe-home" / "logs" / "bar-pipe.log").read_text().splitlines(), printed
    assert "\r" not in printed and "%|" not in printed and "running" not in printed, printed
