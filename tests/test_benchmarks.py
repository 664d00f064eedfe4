"""Each benchmark runs at its smallest size and ends on its figure, the line `make bench` (and
benchmarks/README.md) reads: a run that fails, or ends on anything else, breaks `make bench`.

They run as a user runs them: `python benchmarks/NAME.py`, in a process of their own (each
starts its own Ray; grid_scale its own PostgreSQL, MLflow server and two-node cluster, on free
ports, beside the session's cluster if a test started one).
"""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import without_persona_sweep_env

pytestmark = pytest.mark.slow  # each takes a minute or more: Ray, models, servers

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
NUMBER = r"([-+]?\d+(?:\.\d+)?)"


def last_line_figure(script: str, arguments: list[str], last_line: str, timeout_s: float) -> float:
    """Runs the benchmark; its last line of stdout must match `last_line` (one group: the figure)."""
    path = BENCHMARKS / script
    result = subprocess.run([sys.executable, str(path), *arguments], capture_output=True, text=True,
                            timeout=timeout_s, cwd=BENCHMARKS.parent, env=without_persona_sweep_env())
    command = f"python benchmarks/{script} {' '.join(arguments)}"
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    assert lines, f"{command} printed nothing:\n{result.stderr[-3000:]}"
    match = re.fullmatch(last_line, lines[-1])
    assert match, f"{command}: last line {lines[-1]!r} does not match {last_line!r}"
    return float(match.group(1))


def test_step_overhead_ends_on_the_step_time_ratio():
    ratio = last_line_figure("step_overhead.py", ["--steps", "2", "--model", "tiny-random"],
                             rf"step-time ratio engine/bare: {NUMBER}x", timeout_s=900)
    assert ratio > 0


def test_grid_scale_ends_on_the_overhead_per_trial():
    overhead_ms = last_line_figure("grid_scale.py", ["--trials", "4"],
                                   rf"engine overhead per trial beyond bare Tune: {NUMBER} ms \(4 trials\)",
                                   timeout_s=900)
    # A difference of two wall times, not a ratio: at 4 trials, with Tune reusing trial processes,
    # it is a few ms either side of zero, so only its being a number is checked.
    assert math.isfinite(overhead_ms)


def test_eval_throughput_ends_on_its_ratio():
    # The tiny model: the embedded one's fixed cost (the misalignment bank, twice) took 79 s here.
    ratio = last_line_figure("eval_throughput.py", ["--questions", "2", "--model", "tiny-random"],
                             rf"evaluation speed-up new/old ratio, CPU seconds \(results identical\): {NUMBER}x",
                             timeout_s=900)
    assert ratio > 0


def test_asha_savings_ends_on_the_steps_saved():
    # One trial, with ASHA and without: the whole path (two sweeps on one embedded Ray, MLflow
    # read back, the table) at its smallest; nothing for ASHA to stop, so nothing saved.
    saved = last_line_figure("asha_savings.py", ["--designs", "assistant_positive", "--context-lengths", "8",
                                                 "--seeds", "1", "--steps", "4", "--grace", "2"],
                             rf"ASHA saved {NUMBER}% of trial-steps \(4 of 4\); winner kept: yes \(same configuration\)",
                             timeout_s=900)
    assert saved == 0
