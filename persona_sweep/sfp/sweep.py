"""Toy-world trials inside the sweep engine (`kind: sfp`) and the sweep's Pareto front.

A trial is a plain Ray Tune function trial in one process (no Ray Train, no DeepSpeed): it
trains in about the time Ray Train would need to start a worker group. MLflow gets a child run
per trial, as for LLM sweeps, and the parent run gets the Pareto-front figure.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from persona_sweep import names, tracking

# Per-step metrics; the rest arrive once at the end.
STEP_KEYS = (names.TRAIN_STEP, names.LOSS, names.FINETUNE_LOSS)
FRONT_AXES = (names.ALIGNMENT_FIDELITY, names.EM_ROBUSTNESS)


def run_sfp_trial(trial) -> None:
    from ray import tune

    from persona_sweep.sfp.experiments import persona_engineering_trial

    spec = trial.spec
    params = {**spec.training.model_dump(), **trial.knobs}
    run = tracking.TrialRun(trial.sweep_run, trial.trial_id, params, trial.provenance)

    def report(metrics: dict) -> None:
        step_metrics = {k: v for k, v in metrics.items() if k in STEP_KEYS}
        run.log_steps({int(metrics[names.TRAIN_STEP]): step_metrics})
        tune.report(metrics)

    threads = max(1, round(spec.resources.cpus_per_worker))
    final = persona_engineering_trial({**params, "torch_threads": threads}, report)
    run.complete(final, spec.training.pretrain_steps + spec.training.finetune_steps)


def log_pareto_front(record) -> Path | None:
    """Collect the finished trials from MLflow and attach the front to the parent run."""
    from persona_sweep.sfp.experiments import pareto_front

    sweep = record.sweep_run
    runs = [run for run in tracking.child_runs(sweep.tracking, sweep.experiment_id)
            if all(axis in run.data.metrics for axis in FRONT_AXES)]
    if not runs:
        return None
    rows = [{**{k: float(v) for k, v in run.data.params.items() if _is_number(v)}, **run.data.metrics,
             names.TRIAL_ID: run.data.tags[names.TRIAL_ID]} for run in runs]
    client = sweep.tracking.client()
    with tempfile.TemporaryDirectory() as folder:
        figure_path = Path(folder) / "pareto_front.png"
        pareto_front(rows, figure_path)
        (Path(folder) / "trials.json").write_text(json.dumps(rows, indent=2))
        client.log_artifacts(sweep.parent_run_id, folder)
    return figure_path


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
