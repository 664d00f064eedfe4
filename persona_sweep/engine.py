"""The sweep engine: Ray Tune schedules trials, each trial is a Ray Train job (see `train.py`).

Layout under `$PERSONA_SWEEP_HOME` (absolute before anything starts; Tune moves trials' cwd):
    sweeps/<name>.json      the sweep record: resolved spec, MLflow ids, trial count
    ray_results/<name>/     Tune's experiment state; Train runs under ray_results/<name>/_train
    mlflow.db, mlartifacts/ MLflow (default tracking store)
    logs/<name>.log         what the driver printed
    secrets/                demo triggers (0700)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from persona_sweep import tracking
from persona_sweep.config import GridSweep, SweepConfig, SweepError, check_trigger_source, is_local_path, validate

TRAINABLE_CPU = 0.01  # the Tune function that only drives a TorchTrainer
# Measured on 2 cores: per-trial fixed cost (worker group, DeepSpeed, model: ~20-27 s; evaluation:
# ~25 s on the embedded model) and seconds per step at batch 8 with 2 workers.
ESTIMATED_FIXED_S = 50
ESTIMATED_STEP_S = {"embedded": 2.3, "tiny-random": 0.1}
SFP_TRIAL_S = 40  # a persona-engineering trial with the default settings, one core


def home() -> Path:
    path = Path(os.environ.get("PERSONA_SWEEP_HOME", "./runs")).expanduser().absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_path(name: str) -> Path:
    return home() / "sweeps" / f"{name}.json"


def results_path(name: str) -> Path:
    return home() / "ray_results" / name


@dataclass
class SweepRecord:
    """What a sweep needs to resume: written once at `run`, never changed by `resume`."""

    name: str
    spec: dict
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str
    trial_count: int
    created: float
    provenance: dict

    def save(self) -> None:
        path = record_path(self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, name: str) -> SweepRecord:
        path = record_path(name)
        if not path.is_file():
            raise SweepError(f"no sweep named '{name}' under {home()} (see: persona-sweep list)")
        return cls(**json.loads(path.read_text()))

    @property
    def config(self) -> GridSweep:
        return validate(self.spec)


def list_records() -> list[SweepRecord]:
    folder = home() / "sweeps"
    return [SweepRecord.load(path.stem) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


# ---- preparing a sweep -----------------------------------------------------------------------

def refuse_existing(spec: GridSweep, uri: str) -> None:
    """Never overwrite: a name with results anywhere is refused (a known Ray Tune trap)."""
    experiment = spec.tracking.experiment or spec.name
    if record_path(spec.name).exists() or results_path(spec.name).exists() or tracking.experiment_exists(uri, experiment):
        raise SweepError(f"name: sweep '{spec.name}' already has results; "
                         f"continue it with `persona-sweep resume {spec.name}` or pick another --name")


def absolute_paths(spec: SweepConfig) -> SweepConfig:
    """Workers run in other folders: pin every local path the sweep names."""
    marker, model = spec.marker, spec.model
    if marker.trigger_file:
        marker = marker.model_copy(update={"trigger_file": str(Path(marker.trigger_file).expanduser().absolute())})
    if is_local_path(model.name):
        model = model.model_copy(update={"name": str(Path(model.name).expanduser().absolute())})
    return spec.model_copy(update={"marker": marker, "model": model})


def create_sweep(spec: GridSweep) -> SweepRecord:
    uri = spec.tracking.mlflow_uri or tracking.default_uri(home())
    params = {"kind": spec.kind, "trials": spec.trial_count(), "scheduler": spec.scheduler.type, "search": spec.search.type}
    if spec.kind == "llm":
        spec = check_llm_sweep(spec)
        params |= {"model": spec.model.name, "steps": spec.training.steps}
    refuse_existing(spec, uri)
    provenance = tracking.provenance_tags()
    experiment_id, parent_run_id = tracking.create_parent_run(
        uri, spec.tracking.experiment or spec.name, home() / "mlartifacts" / spec.name, spec.name, params, provenance)
    record = SweepRecord(spec.name, spec.model_dump(mode="json"), uri, experiment_id, parent_run_id,
                         spec.trial_count(), time.time(), provenance)
    record.save()
    return record


def check_llm_sweep(spec: SweepConfig) -> SweepConfig:
    """Run-time checks the static validation cannot do; returns the spec with absolute paths."""
    from persona_sweep.models import check_model_reachable

    check_trigger_source(spec.marker)
    spec = absolute_paths(spec)
    try:
        check_model_reachable(spec.model.name)
    except ValueError as error:
        raise SweepError(str(error)) from None
    return spec


def estimate(spec: GridSweep) -> str:
    if spec.kind == "sfp":
        return f"~{SFP_TRIAL_S / 60:.1f} min per trial on one core, ~{SFP_TRIAL_S * spec.trial_count() / 2 / 60:.0f} min on 2 cores"
    step_s = ESTIMATED_STEP_S.get(spec.model.name)
    if step_s is None:
        return "unknown (no step-time measurement for this model)"
    per_trial = ESTIMATED_FIXED_S + spec.training.steps * step_s * spec.training.batch_size / 8
    total = per_trial * spec.trial_count()
    return f"~{per_trial / 60:.1f} min per full trial, ~{total / 60:.0f} min for the sweep, one trial at a time, without early stopping"


# ---- Ray --------------------------------------------------------------------------------------

def ensure_auth_token() -> None:
    """With RAY_AUTH_MODE=token, Ray expects the token to exist already (a new local cluster
    started that way does not write one): create it as `ray get-auth-token --generate` does."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if (Path.home() / ".ray" / "auth_token").exists():
        return
    ray_cli = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray_cli), "get-auth-token", "--generate"], capture_output=True, check=True, timeout=120)


def connect(address: str | None) -> None:
    """An embedded local Ray without `address`; otherwise `auto`, `host:6379` or `ray://host:10001`."""
    import ray

    # Token authentication: a new local cluster turns it on and writes ~/.ray/auth_token; a
    # connection to a running cluster turns it on when that token exists. We leave it at that.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: our progress lines, not Tune's tables
    if ray.is_initialized():
        return
    ensure_auth_token()
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # The dashboard must stay on (Train's worker groups need it); it listens on loopback only.
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)


def trial_resources(spec: GridSweep) -> tuple[dict, float]:
    """(resources of the Tune trial itself, CPUs a whole trial holds)."""
    workers = spec.resources.workers_per_trial * spec.resources.cpus_per_worker
    if spec.kind == "sfp":  # the trial trains in its own process
        return {"CPU": spec.resources.cpus_per_worker}, spec.resources.cpus_per_worker
    return {"CPU": TRAINABLE_CPU}, workers + TRAINABLE_CPU


def concurrency(spec: GridSweep) -> int:
    import ray

    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    cpus = ray.cluster_resources().get("CPU", 1)
    per_trial = trial_resources(spec)[1]
    fits = int(cpus // per_trial)
    if spec.resources.gpus_per_worker:
        gpus = ray.cluster_resources().get("GPU", 0)
        fits = min(fits, int(gpus // (spec.resources.workers_per_trial * spec.resources.gpus_per_worker)))
    if fits < 1:
        raise SweepError(f"resources: a trial needs {per_trial:g} CPUs but the cluster has {cpus:g}")
    return fits


def param_space(spec: GridSweep) -> dict:
    from ray import tune

    axes = spec.grid.model_dump()
    if spec.search.type == "optuna":
        return {axis: tune.choice(values) for axis, values in axes.items()}
    return {axis: tune.grid_search(values) for axis, values in axes.items()}


def scheduler_and_search(spec: GridSweep):
    from ray.tune.schedulers import ASHAScheduler

    scheduler = search = None
    steps = spec.training.steps if spec.kind == "llm" else spec.training.pretrain_steps + spec.training.finetune_steps
    if spec.scheduler.type == "asha":
        scheduler = ASHAScheduler(time_attr="train_step", metric=spec.scheduler.metric, mode=spec.scheduler.mode,
                                  max_t=steps, grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor)
    if spec.search.type == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(metric=spec.scheduler.metric, mode=spec.scheduler.mode, seed=0)
    return scheduler, search


def run_trial(knobs: dict, record: dict) -> None:
    """The Tune function trainable: one Ray Train TorchTrainer per LLM trial."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    if record["spec"]["kind"] == "sfp":
        from persona_sweep.sfp.sweep import run_sfp_trial

        return run_sfp_trial(knobs, record, trial_id)
    run_llm_trial(knobs, record, trial_id)


def run_llm_trial(knobs: dict, record: dict, trial_id: str) -> None:
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from persona_sweep.train import train_worker

    spec = SweepConfig.model_validate(record["spec"])
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"spec": record["spec"], "knobs": knobs, "trial_id": trial_id,
                           "mlflow_uri": record["mlflow_uri"], "experiment_id": record["experiment_id"],
                           "parent_run_id": record["parent_run_id"], "provenance": record["provenance"],
                           "trial_started": time.time()},
        scaling_config=train.ScalingConfig(
            num_workers=spec.resources.workers_per_trial, use_gpu=spec.resources.gpus_per_worker > 0,
            resources_per_worker={"CPU": spec.resources.cpus_per_worker,
                                  **({"GPU": spec.resources.gpus_per_worker} if spec.resources.gpus_per_worker else {})}),
        run_config=train.RunConfig(
            name=f"train-{trial_id}", storage_path=str(results_path(spec.name) / "_train"),
            callbacks=[TuneReportCallback()],
            failure_config=train.FailureConfig(max_failures=spec.training.max_failures),
            checkpoint_config=train.CheckpointConfig(num_to_keep=spec.training.checkpoints_to_keep)),
    )
    trainer.fit()


def trainable(record: SweepRecord):
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, record=record.__dict__), trial_resources(record.config)[0])


def tuner_for(record: SweepRecord, resume: bool):
    """A new Tuner, or the stored one (with its stored RunConfig and callbacks) on resume."""
    from ray import tune

    from persona_sweep.progress import SweepProgress

    spec = record.config
    if resume:
        return tune.Tuner.restore(str(results_path(spec.name)), trainable=trainable(record),
                                  resume_unfinished=True, resume_errored=True, param_space=param_space(spec))
    scheduler, search = scheduler_and_search(spec)
    return tune.Tuner(
        trainable(record),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(scheduler=scheduler, search_alg=search,
                                    num_samples=spec.search.n_trials if spec.search.type == "optuna" else 1,
                                    max_concurrent_trials=concurrency(spec)),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(home() / "ray_results"), callbacks=[SweepProgress(record)],
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=0)),
    )


def fit(record: SweepRecord, resume: bool = False):
    tuner = tuner_for(record, resume)
    mlflow = tracking.client(record.mlflow_uri)
    mlflow.update_run(record.parent_run_id, status="RUNNING")
    results = tuner.fit()
    if record.spec["kind"] == "sfp":
        from persona_sweep.sfp.sweep import log_pareto_front

        log_pareto_front(record)
    mlflow.set_terminated(record.parent_run_id, "FINISHED")
    return results
