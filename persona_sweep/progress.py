"""Console progress while a sweep runs: one line per trial event instead of Ray's log flood.

The callback is stored with the Tuner and comes back on `resume`, so it keeps no state of its
own: counts come from the trial list Tune passes in. It also tags MLflow child runs that only
the driver knows the end of (stopped early by ASHA, errored).
"""
from __future__ import annotations

import time

from ray.tune import Callback

from persona_sweep import tracking


def say(sweep: str, line: str) -> None:
    from persona_sweep.engine import home

    stamped = f"{time.strftime('%H:%M:%S')} {line}"
    print(stamped, flush=True)
    log = home() / "logs" / f"{sweep}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(stamped + "\n")


# The metric only a trial's final result has, per kind: its presence means "ran to the end".
FINAL_METRIC = {"llm": "marker_rate_trigger", "sfp": "alignment_fidelity"}


def describe(trial) -> str:
    return f"{trial.trial_id:>14} " + " ".join(f"{key}={value}" for key, value in trial.config.items())


def tally(trials, total: int) -> str:
    """Tune creates trials lazily, so the total comes from the sweep record."""
    finished = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
    return f"[{finished}/{total} done]"


class SweepProgress(Callback):
    def __init__(self, record):
        self.sweep, self.uri, self.experiment_id = record.name, record.mlflow_uri, record.experiment_id
        self.kind, self.total = record.spec["kind"], record.trial_count
        self.steps = record.spec["training"].get("steps")

    def on_trial_start(self, iteration, trials, trial, **info):
        say(self.sweep, f"{tally(trials, self.total)} start   {describe(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "marker_rate_trigger" in result:
            say(self.sweep, f"{tally(trials, self.total)} eval    {trial.trial_id:>14} marker rate with trigger "
                            f"{result['marker_rate_trigger']:.2f}, without {result['marker_rate_no_trigger']:.2f}")
        elif "marker_logprob_trigger" in result:
            say(self.sweep, f"{tally(trials, self.total)} step    {trial.trial_id:>14} {result['train_step']:>4}/{self.steps} "
                            f"loss {result['loss']:.3f}  marker logprob {result['marker_logprob_trigger']:.2f} "
                            f"(no trigger {result['marker_logprob_no_trigger']:.2f})")
        elif "alignment_fidelity" in result:
            say(self.sweep, f"{tally(trials, self.total)} eval    {trial.trial_id:>14} alignment fidelity "
                            f"{result['alignment_fidelity']:.3f}, EM robustness {result['em_robustness']:.3f}, "
                            f"loss / optimal {result['loss_ratio']:.3f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        finished = FINAL_METRIC[self.kind] in (trial.last_result or {})
        if not finished:
            tracking.set_trial_status(self.uri, self.experiment_id, trial.trial_id, tracking.STOPPED_EARLY)
        word = "done   " if finished else "stopped"
        step = (trial.last_result or {}).get("train_step", 0)
        say(self.sweep, f"{tally(trials, self.total)} {word} {trial.trial_id:>14} at step {step}")

    def on_trial_error(self, iteration, trials, trial, **info):
        tracking.set_trial_status(self.uri, self.experiment_id, trial.trial_id, tracking.ERRORED)
        say(self.sweep, f"{tally(trials, self.total)} ERROR   {trial.trial_id:>14} (see {trial.path}; resume retries it)")
