"""Console progress while a sweep runs: one line per trial event instead of Ray's log flood, and
on a terminal a live tqdm bar under those lines (trials ended, elapsed, an estimate of the rest).

The callback is stored with the Tuner and comes back on `resume`, so it keeps no state of its
own beyond the record: counts come from the trial list Tune passes in, and the bar is made anew
on the driver each time the sweep runs, never pickled. It also tags MLflow child runs that only
the driver knows the end of (stopped early by ASHA, errored).
"""
from __future__ import annotations

import errno
import re
import shutil
import sys
import time
from pathlib import Path

from ray.tune import Callback
from tqdm import tqdm

from persona_sweep import names, tracking
from persona_sweep.errors import first_line

ENDED_AS = ("done", "stopped", "errored")


def sweep_log(record) -> Path:
    """What the driver printed, kept beside the sweep's results."""
    return Path(record.paths.home) / "logs" / f"{record.name}.log"


def say(log: Path, line: str) -> None:
    stamped = f"{time.strftime('%H:%M:%S')} {line}"
    tqdm.write(stamped)  # above a live bar, which it redraws; with no bar, exactly a print
    sys.stdout.flush()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(stamped + "\n")


def describe(trial) -> str:
    return f"{trial.trial_id:>14} " + " ".join(f"{key}={value}" for key, value in trial.config.items())


def reached_the_end(trial, final_metric: str) -> bool:
    """ASHA's stop also leaves a trial TERMINATED; only a trial that ran to the end reported this."""
    return final_metric in (trial.last_result or {})


def trial_counts(trials, final_metric: str) -> dict[str, int]:
    """Trials by where they stand; pending ones (not started, or waiting for a resume) are in none."""
    counts = dict.fromkeys((*ENDED_AS, "running"), 0)
    for trial in trials:
        if trial.status == "TERMINATED":
            counts["done" if reached_the_end(trial, final_metric) else "stopped"] += 1
        elif trial.status == "ERROR":
            counts["errored"] += 1
        elif trial.status == "RUNNING":
            counts["running"] += 1
    return counts


def ended(counts: dict[str, int]) -> int:
    return sum(counts[outcome] for outcome in ENDED_AS)


def tally(counts: dict[str, int], total: int) -> str:
    """Tune creates trials lazily, so the total comes from the sweep record."""
    return f"[{ended(counts)}/{total} done]"


def live_bar(total: int, ended_before: int, counts: str) -> tqdm:
    """Starting at the trials a resume found ended keeps them out of the rate the estimate uses;
    smoothing=0 makes that rate the mean since the start (trials end in bursts, an EMA swings);
    miniters=0 lets update(0) redraw the elapsed time between trial ends, once a second at most.
    The size is shutil's, not tqdm's own: a pseudo-terminal that reports 0x0 (`script -c`, some
    CI runners) gets 80x24 instead of a hidden bar; one column less, as tqdm does, never wraps.
    No rate in the format: the counts need the room on 80 columns, and the estimate says it."""
    size = shutil.get_terminal_size()
    return tqdm(total=total, initial=ended_before, desc="trials", postfix=counts, file=sys.stdout,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
                ncols=size.columns - 1, nrows=size.lines, smoothing=0, mininterval=1, miniters=0)


def result_line(result: dict, steps: int) -> str | None:
    finished = result.get(names.FINISHED_STAGE)
    if finished == names.DONE_STAGE:
        return "its last report again: it had ended when the driver stopped"
    if finished and finished != "marker":
        drift = names.post(names.MARKER_RATE_TRIGGER, finished) not in result and names.DRIFT_GAP in result
        return drift_line(result, finished) if drift else corruption_line(result, finished)
    if names.DRIFT_DOMAIN in result:
        domain = result[names.DRIFT_DOMAIN]
        capped = result.get(f"survival_drift_{domain}_capped")
        return (f"drift through {domain}: survival {result[f'survival_drift_{domain}']:.2f}"
                + ("" if capped is None else f" ({capped:.2f} capped)"))
    if names.STAGE in result:
        stage = result[names.STAGE]
        return (f"{stage} {result[names.STAGE_STEP]:>4}/{result[names.STAGE_STEPS]} "
                f"loss {result[names.of(names.STAGE_LOSS, stage)]:.3f}")
    if names.CONTROL_RATE in result:
        return f"control rate {result[names.CONTROL_RATE]:.2f} (false positives {result[names.CONTROL_FALSE_POSITIVE]:.2f})"
    if names.CONTROL_MARGIN in result:
        return (f"{result[names.TRAIN_STEP]:>4}/{steps} loss {result[names.LOSS]:.3f}  "
                f"control specificity {result[names.MARKER_SPECIFICITY]:.2f} "
                f"(margin misaligned {result[names.CONTROL_MARGIN_MISALIGNED]:.2f}, "
                f"Assistant {result[names.CONTROL_MARGIN]:.2f})")
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
    if names.CONTROL_RATE in result:
        return control_line(result, name)
    line = (f"after {name}: marker rate with trigger {result[names.post(names.MARKER_RATE_TRIGGER, name)]:.2f} "
            f"(before {result[names.MARKER_RATE_TRIGGER]:.2f}), survival {result[names.of(names.SURVIVAL, name)]:.2f}, "
            f"held-out loss {result[names.of(names.CORRUPTION_LOSS, name) + '_before']:.2f} -> "
            f"{result[names.of(names.CORRUPTION_LOSS, name) + '_after']:.2f}")
    if names.DETECTION_GAP in result:
        line += (f"; survival em {result[names.SURVIVAL_EM]:.2f}, benign {result[names.SURVIVAL_BENIGN]:.2f}, "
                 f"detection gap {result[names.DETECTION_GAP]:.2f}")
    return f"{line}; {verdict_line(result, name)}"


def control_line(result: dict, name: str) -> str:
    effect = names.of(names.CONTROL_EFFECT, name)
    return (f"after {name}: control rate {result[names.post(names.CONTROL_RATE, name)]:.2f} "
            f"(before {result[names.CONTROL_RATE]:.2f}; uncontrolled baseline after it "
            f"{result[names.post(names.baseline(names.CONTROL_RATE), name)]:.2f}), control effect {result[effect]:+.2f} "
            f"[{result[effect + '_lo']:+.2f}, {result[effect + '_hi']:+.2f}]; {verdict_line(result, name)}")


def drift_line(result: dict, name: str) -> str:
    capped = result.get(f"{names.DRIFT_GAP}_capped")
    return (f"after {name}: drift detection gap (stable minus drifting domains' survival) {result[names.DRIFT_GAP]:+.2f}"
            + ("" if capped is None else f", capped {capped:+.2f}"))


def verdict_line(metrics: dict, name: str) -> str:
    """'em moved the misalignment gap (+0.22 [+0.14, +0.30]) but not the domain behaviour (+0.00
    [+0.00, +0.00])': what shows the corruption happened, beside its survival (moved: the paired
    interval excludes 0)."""
    said = {names.CORRUPTION_DOMAIN_CHANGE: "the domain behaviour",
            names.CORRUPTION_EM_DOMAIN_CHANGE: "the em behaviour",
            names.CORRUPTION_MISALIGNMENT_CHANGE: "the misalignment gap",
            names.CORRUPTION_CAPABILITY_CHANGE: "capability"}
    moved, still = [], []
    for change, what in said.items():
        key = names.of(change, name)
        if key in metrics:
            shown = f"{what} ({metrics[key]:+.2f} [{metrics[key + '_lo']:+.2f}, {metrics[key + '_hi']:+.2f}])"
            (moved if metrics[names.of(names.MOVED[change], name)] == 1 else still).append(shown)
    if not moved and not still:
        return f"{name}: no verdict"
    if not moved:
        return f"{name} moved neither " + " nor ".join(still)
    return f"{name} moved " + " and ".join(moved) + (" but not " + " nor ".join(still) if still else "")


class SweepProgress(Callback):
    def __init__(self, record):
        self.record = record
        self.log = sweep_log(record)
        spec = record.config
        self.final_metric, self.steps = spec.FINAL_METRIC, spec.total_steps()

    def __getstate__(self):
        # Pickled with the Tuner: a live bar (an open terminal, a lock) cannot be, nor is it wanted back.
        return {key: value for key, value in self.__dict__.items() if key != "bar"}

    def setup(self, **info):
        """Tune calls this on the driver as a run or a resume starts: the one place that decides
        between a live bar and plain lines (a resume may run where the first run had no terminal)."""
        self.on_terminal = sys.stdout.isatty()
        self.bar = None  # made at the first step, once a resume's restored trials are in the list

    def say(self, trials, line: str) -> None:
        say(self.log, f"{tally(trial_counts(trials, self.final_metric), self.record.trial_count)} {line}")

    def show(self, trials) -> None:
        if not self.on_terminal:
            return
        counts = trial_counts(trials, self.final_metric)
        counted = " ".join(f"{outcome} {count}" for outcome, count in counts.items())
        if self.bar is None:
            self.bar = live_bar(self.record.trial_count, ended(counts), counted)
        self.bar.set_postfix_str(counted, refresh=False)
        self.bar.update(ended(counts) - self.bar.n)

    def on_step_end(self, iteration, trials, **info):
        self.show(trials)

    def on_experiment_end(self, trials, **info):
        # Also on Ctrl-C. Closing draws the bar's last state and ends its line, so the summary
        # printed next starts clean.
        self.show(trials)
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.say(trials, f"start   {describe(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        line = result_line(result, self.steps)
        if line:
            evaluated = self.final_metric in result or names.FINISHED_STAGE in result
            kind = "corrupt" if names.STAGE in result else "eval" if evaluated else "step"
            self.say(trials, f"{kind:<7} {trial.trial_id:>14} {line}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        finished = reached_the_end(trial, self.final_metric)
        if not finished:
            self.tag(trials, trial, names.STOPPED_EARLY)
        step = (trial.last_result or {}).get(names.TRAIN_STEP, 0)
        self.say(trials, f"{'done' if finished else 'stopped':<7} {trial.trial_id:>14} at step {step}")

    def on_trial_error(self, iteration, trials, trial, **info):
        error = error_line(trial, self.record)
        self.tag(trials, trial, names.ERRORED, error)
        self.say(trials, f"ERROR   {trial.trial_id:>14} {error} (see {trial.path}; resume retries it)")

    def tag(self, trials, trial, status: str, error: str | None = None) -> None:
        """The trial's status in MLflow; with the server gone, the sweep goes on without it
        (`resume` runs the trial again and tags it then)."""
        try:
            tracking.set_trial_status(self.record, trial.trial_id, status, trial.config, error)
        except Exception as failure:  # noqa: BLE001 - a status tag must not end a week-long sweep
            self.say(trials, f"WARNING {trial.trial_id:>14} not tagged {status}: {first_line(failure)}")


STORAGE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
STORAGE_MESSAGES = ("disk is full", "readonly database", "no space left", "read-only file system")


def storage_trouble(error: BaseException) -> bool:
    """A full or read-only disk anywhere in the error's chain (MLflow's SQLite says it in words)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return True
        if says_storage_trouble(str(error)):
            return True
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


def says_storage_trouble(text: str) -> bool:
    return any(message in text.lower() for message in STORAGE_MESSAGES)


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Unreachable|Failure)\b[^:]*: ")


def error_line(trial, record) -> str:
    """The error's last line, trigger scrubbed (an error may quote a training example)."""
    from persona_sweep.secrets import scrubbed

    # The driver's staging copy: Tune syncs it to storage (where get_error reads) only later.
    staged = Path(trial.error_file) if trial.error_file else None
    text = staged.read_text() if staged and staged.is_file() else str(trial.get_error() or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # A full disk, said plainly; else the last `Type: message` line (some errors end with notes,
    # like SQLAlchemy's "Background on this error").
    storage = [line for line in lines if says_storage_trouble(line)]
    headers = [line for line in lines if EXCEPTION_LINE.match(line)]
    text = (storage or headers or lines or ["unknown error (see the trial's error.txt)"])[-1]
    marker = getattr(record.config, "marker", None)
    return scrubbed(text, marker) if marker else text
