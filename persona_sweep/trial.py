"""One trial: what the driver hands it (`TrialConfig`) and the LLM trial's Ray Train job.

A trial of `kind: llm` is a Ray Train `TorchTrainer` started from inside a Tune function
trainable; its workers run `train.train_worker` with a DeepSpeed engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SweepPaths:
    """Every path a trial needs, fixed on the driver: trials run in Tune's trial folder and
    workers do not inherit the driver's environment, so neither may resolve one itself."""

    home: str  # $PERSONA_SWEEP_HOME
    cache: str  # $PERSONA_SWEEP_CACHE: converted models, tokenizers, compiled ops
    storage: str  # Tune's experiment folder; Ray Train runs under <storage>/_train

    @property
    def train_storage(self) -> str:
        return str(Path(self.storage) / "_train")


@dataclass(frozen=True)
class TrialConfig:
    """What a trial gets from the driver: the same record for every rank of its workers."""

    trial_id: str
    knobs: dict[str, Any]  # this trial's point in the grid
    spec: Any  # the sweep's validated config (SweepConfig / SfpSweepConfig)
    paths: SweepPaths
    mlflow_uri: str
    experiment_id: str
    parent_run_id: str
    provenance: dict[str, str]
    started: float  # wall-clock time the trial started (for its fixed set-up cost)


def run_llm_trial(trial: TrialConfig) -> None:
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from persona_sweep.train import train_worker

    spec = trial.spec
    gpus = spec.resources.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"trial": trial},
        scaling_config=train.ScalingConfig(
            num_workers=spec.resources.workers_per_trial, use_gpu=gpus > 0,
            resources_per_worker={"CPU": spec.resources.cpus_per_worker, **({"GPU": gpus} if gpus else {})}),
        run_config=train.RunConfig(
            name=f"train-{trial.trial_id}", storage_path=trial.paths.train_storage,
            callbacks=[TuneReportCallback()],
            failure_config=train.FailureConfig(max_failures=spec.training.max_failures),
            checkpoint_config=train.CheckpointConfig(num_to_keep=spec.training.checkpoints_to_keep)),
    )
    trainer.fit()
