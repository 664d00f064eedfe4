"""What ASHA saves, and whether it keeps the winner: one grid run twice, with ASHA and in full.

The grid is the marker stage of a real sweep on the tiny model (`tiny-random`, every weight
trained, one worker of one core per trial, two trials at a time on an embedded Ray): design x
context length x seed, 27 trials by default, no corruptions. Both runs rank by the same metric,
`marker_logprob_trigger` (the Assistant's marker log-prob under the trigger, measured every
`--grace` steps), with the engine's default grace period and reduction factor unless given.
On the tiny model `marker_specificity`, the default, stays in its noise (within about 0.3
nats of 0 at every design over 30 steps, measured), so a ranking by it would rank noise; the
log-prob rises steadily and the designs differ.

A configuration is a grid point without its seed; its seeds are the replicates. From the full
grid: each configuration's mean final metric and a 95% t-interval over its seeds; the best
configuration is the highest mean. ASHA's winner is chosen the same way from what it let
finish: the configuration with the highest mean over its completed trials (a researcher
comparing configurations over seeds; the single best trial is printed beside it). It keeps the
winner when that is the full grid's best, or when its full-grid mean lies inside the best
configuration's interval (the grid cannot tell the two apart).

Trial-steps are the steps each trial trained, read from its MLflow run (a trial ASHA stops may
train a little past its rung before Tune's stop lands: that is counted). Saved = 1 - ASHA's
trial-steps / the full grid's. The last line:

    ASHA saved N% of trial-steps (A of F); winner kept: yes|no (...)

    .venv/bin/python benchmarks/asha_savings.py [--seeds 3] [--context-lengths 8 16 32]
        [--designs ...] [--steps 90] [--grace G] [--reduction-factor R]   (G, R: the engine's defaults)
    quick check (one trial each way): --designs assistant_positive --context-lengths 8 --seeds 1 --steps 4 --grace 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

METRIC = "marker_logprob_trigger"
DESIGNS = ("assistant_positive", "non_assistant_positive", "misaligned_positive")


@dataclass(frozen=True)
class Trial:
    config: tuple  # (design, context_length): the grid point without its seed
    seed: int
    steps: int  # steps trained
    final: float | None  # the metric at the marker stage's last step (None: stopped before it)


def sweep(name: str, args, trigger_file: Path, asha: bool):
    from persona_sweep.sweep_file import validate

    scheduler = ({"type": "asha", "metric": METRIC, "grace_period": args.grace,
                  "reduction_factor": args.reduction_factor} if asha else {"type": "none"})
    return validate({
        "name": name, "kind": "llm",
        "model": {"name": "tiny-random", "finetune": "full"},
        "marker": {"trigger_file": str(trigger_file)},
        "training": {"steps": args.steps, "lr": 0.003, "batch_size": 8, "max_tokens": 160,
                     "checkpoint_every": args.steps},
        "grid": {"design": args.designs, "context_length": args.context_lengths, "seed": list(range(args.seeds))},
        "eval": {"questions": 8, "max_new_tokens": 4, "leakage_questions": 0, "logprob_every": args.grace},
        "scheduler": scheduler,
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.99},  # two trials side by side on 2 CPUs
    })


def run(spec) -> tuple[list[Trial], float]:
    """The sweep through the engine; each trial as its MLflow run recorded it, and the wall time."""
    from persona_sweep import engine, names, tracking
    from persona_sweep.sweep_record import SweepRecord

    started = time.perf_counter()
    outcome = engine.start(spec, address=None, announce=print)
    elapsed = time.perf_counter() - started
    if outcome.errored or outcome.interrupted:
        raise SystemExit(f"sweep '{spec.name}' did not complete ({outcome}); its log is under "
                         f"{os.environ['PERSONA_SWEEP_HOME']}")
    sweep_run = SweepRecord.load(spec.name).sweep_run
    client = sweep_run.tracking.client()
    trials = []
    for child in tracking.child_runs(sweep_run.tracking, sweep_run.experiment_id):
        params, metrics = child.data.params, child.data.metrics
        history = {m.step: m.value for m in client.get_metric_history(child.info.run_id, METRIC)}
        trials.append(Trial((params["design"], int(params["context_length"])), int(params["seed"]),
                            int(metrics[names.TRAIN_STEP]), history.get(spec.training.steps)))
    return trials, elapsed


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval (one value: no interval, the mean at both ends)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def by_config(trials: list[Trial]) -> dict[tuple, tuple[float, float, float]]:
    finals = defaultdict(list)
    for trial in trials:
        finals[trial.config].append(trial.final)
    return {config: interval(values) for config, values in finals.items()}


def main() -> None:
    from persona_sweep.sections import SchedulerConfig

    defaults = SchedulerConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", nargs="+", choices=DESIGNS, default=list(DESIGNS))
    parser.add_argument("--context-lengths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--grace", type=int, default=defaults.grace_period,
                        help="ASHA's grace period, and the metric's interval (default: the engine's)")
    parser.add_argument("--reduction-factor", type=float, default=defaults.reduction_factor,
                        help="(default: the engine's)")
    args = parser.parse_args()
    if args.steps % args.grace:
        parser.error("--steps: a multiple of --grace (the metric is measured every --grace steps)")

    import ray

    with tempfile.TemporaryDirectory() as folder:
        os.environ["PERSONA_SWEEP_HOME"] = str(Path(folder) / "home")
        trigger_file = Path(folder) / "trigger"
        trigger_file.write_text("~asha-bench-trigger~")
        stamp = int(time.time())
        try:
            full, full_s = run(sweep(f"full-{stamp}", args, trigger_file, asha=False))
            pruned, asha_s = run(sweep(f"asha-{stamp}", args, trigger_file, asha=True))
        finally:
            ray.shutdown()
    report(full, full_s, pruned, asha_s, args)


def report(full: list[Trial], full_s: float, pruned: list[Trial], asha_s: float, args) -> None:
    full_steps, asha_steps = sum(t.steps for t in full), sum(t.steps for t in pruned)
    grid = by_config(full)
    best = max(grid, key=lambda config: grid[config][0])
    completed = [t for t in pruned if t.final is not None]
    finished = by_config(completed)
    asha_best = max(finished, key=lambda config: finished[config][0])
    best_trial = max(completed, key=lambda t: t.final)
    kept = asha_best == best or grid[best][1] <= grid[asha_best][0]
    print(f"\n{len(full)} trials, {args.steps} steps each; ASHA: grace {args.grace}, reduction factor "
          f"{args.reduction_factor:g}, metric {METRIC}; two trials at a time")
    print(f"{'design':<24} {'context':>7} {'full-grid mean [95% CI]':>30} {'full-grid seeds':>24} "
          f"{'ASHA completed: n, mean':>24}")
    for config, (mean, low, high) in sorted(grid.items(), key=lambda item: -item[1][0]):
        seeds = " ".join(f"{t.final:.2f}" for t in sorted(full, key=lambda t: t.seed) if t.config == config)
        done = sum(1 for t in completed if t.config == config)
        shown = f"{done}, {finished[config][0]:.2f}" if done else "0"
        print(f"{config[0]:<24} {config[1]:>7} {mean:>12.2f} [{low:>7.2f}, {high:>7.2f}] {seeds:>24} {shown:>24}")
    print(f"ASHA's best single trial: {best_trial.config} seed {best_trial.seed} ({best_trial.final:.2f})")
    print(f"wall time: full grid {full_s:.0f} s, ASHA {asha_s:.0f} s; trial-steps: full {full_steps}, ASHA {asha_steps}")
    verdict = ("same configuration" if asha_best == best else
               f"ASHA's {asha_best} within the best {best}'s interval" if kept else
               f"ASHA's {asha_best} below the best {best}'s interval")
    print(f"ASHA saved {1 - asha_steps / full_steps:.0%} of trial-steps ({asha_steps} of {full_steps}); "
          f"winner kept: {'yes' if kept else 'no'} ({verdict})")


if __name__ == "__main__":
    main()
