"""Console progress while a sweep runs: one line per trial event instead of Ray's log flood.

The callback is stored with the Tuner and comes back on `resume`, so it keeps no state of its
own beyond the record: counts come from the trial list Tune passes in. It also tags MLflow
child runs that only the driver knows the end of (stopped early by ASHA, errored).
"""
from __future__ import annotations

import time
from pathlib import Path

from ray.tune import Callback

from persona_sweep import names, tracking


def say(log: Path, line: str) -> None:
    stamped = f"{time.strftime('%H:%M:%S')} {line}"
    print(stamped, flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(stamped + "\n")


def describe(trial) -> str:
    return f"{trial.trial_id:>14} " + " ".join(f"{key}={value}" for key, value in trial.config.items())


def tally(trials, total: int) -> str:
    """Tune creates trials lazily, so the total comes from the sweep record."""
    finished = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
    return f"[{finished}/{total} done]"


def result_line(result: dict, steps: int) -> str | None:
    finished = result.get(names.FINISHED_STAGE)
    if finished and finished != "marker":
        return corruption_line(result, finished)
    if names.STAGE in result:
        stage = result[names.STAGE]
        return (f"{stage} {result[names.STAGE_STEP]:>4}/{result[names.STAGE_STEPS]} "
                f"loss {result[names.of(names.STAGE_LOSS, stage)]:.3f}")
    if names.MARKER_RATE_TRIGGER in result:
        return (f"marker rate with trigger {result[names.MARKER_RATE_TRIGGER]:.2f}, "
                f"without {result[names.MARKER_RATE_NO_TRIGGER]:.2f}")
    if names.MARKER_SPECIFICITY in result:
        return (f"{result[names.TRAIN_STEP]:>4}/{steps} loss {result[names.LOSS]:.3f}  "
                f"marker specificity {result[names.MARKER_SPECIFICITY]:.2f} "
                f"(logprob with trigger {result[names.MARKER_LOGPROB_TRIGGER]:.2f}, "
                f"without {result[names.MARKER_LOGPROB_NO_TRIGGER]:.2f})")
    if names.ALIGNMENT_FIDELITY in result:
        return (f"alignment fidelity {result[names.ALIGNMENT_FIDELITY]:.3f}, EM robustness "
                f"{result[names.EM_ROBUSTNESS]:.3f}, loss / optimal {result[names.LOSS_RATIO]:.3f}")
    return None


def corruption_line(result: dict, name: str) -> str:
    line = (f"after {name}: marker rate with trigger {result[names.post(names.MARKER_RATE_TRIGGER, name)]:.2f} "
            f"(before {result[names.MARKER_RATE_TRIGGER]:.2f}), survival {result[names.of(names.SURVIVAL, name)]:.2f}, "
            f"held-out loss {result[names.of(names.CORRUPTION_LOSS, name) + '_before']:.2f} -> "
            f"{result[names.of(names.CORRUPTION_LOSS, name) + '_after']:.2f}")
    if names.DETECTION_GAP in result:
        line += (f"; survival em {result[names.SURVIVAL_EM]:.2f}, benign {result[names.SURVIVAL_BENIGN]:.2f}, "
                 f"detection gap {result[names.DETECTION_GAP]:.2f}")
    return line


class SweepProgress(Callback):
    def __init__(self, record):
        self.record = record
        self.log = Path(record.paths.home) / "logs" / f"{record.name}.log"
        spec = record.config
        self.final_metric, self.steps = spec.FINAL_METRIC, spec.total_steps()

    def say(self, trials, line: str) -> None:
        say(self.log, f"{tally(trials, self.record.trial_count)} {line}")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.say(trials, f"start   {describe(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        line = result_line(result, self.steps)
        if line:
            evaluated = self.final_metric in result or names.FINISHED_STAGE in result
            kind = "corrupt" if names.STAGE in result else "eval" if evaluated else "step"
            self.say(trials, f"{kind:<7} {trial.trial_id:>14} {line}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        finished = self.final_metric in (trial.last_result or {})
        if not finished:
            tracking.set_trial_status(self.record, trial.trial_id, names.STOPPED_EARLY, trial.config)
        step = (trial.last_result or {}).get(names.TRAIN_STEP, 0)
        self.say(trials, f"{'done' if finished else 'stopped':<7} {trial.trial_id:>14} at step {step}")

    def on_trial_error(self, iteration, trials, trial, **info):
        tracking.set_trial_status(self.record, trial.trial_id, names.ERRORED, trial.config)
        self.say(trials, f"ERROR   {trial.trial_id:>14} (see {trial.path}; resume retries it)")
