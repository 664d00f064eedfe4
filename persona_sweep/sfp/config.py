"""The toy world's sweep file (`kind: sfp`): its training and grid sections and its sweep class.

What runs its trials is `sfp/sweep.py`, reached through `kinds.KINDS`; configuration is data
and imports nothing that runs.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt, field_validator

from persona_sweep import names
from persona_sweep.sections import GridSweep, ResourcesConfig, SchedulerConfig, SearchConfig, Section, TrackingConfig


class SfpTrainingConfig(Section):
    pretrain_steps: int = Field(300, gt=0)
    finetune_steps: int = Field(30, gt=0)  # the narrow (EM-analog) fine-tune
    lr: float = Field(1e-3, gt=0)
    finetune_lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(128, gt=0)


class SfpGridConfig(Section):
    """Persona engineering: mixing of aligned/misaligned subspaces, persona dimensionality,
    number of persona subspaces, noise breaking the exact SFP structure."""

    mixing: list[float] = Field(default=[0.0], min_length=1)
    persona_dim: list[int] = Field(default=[3], min_length=1)
    n_personas: list[int] = Field(default=[2], min_length=1)
    noise: list[float] = Field(default=[0.0], min_length=1)
    misaligned_prior: list[float] = Field(default=[0.2], min_length=1)
    seed: list[NonNegativeInt] = Field(default=[0], min_length=1)  # numpy refuses negative seeds

    @field_validator("mixing", "noise", "misaligned_prior")
    @classmethod
    def unit_interval(cls, values: list[float]) -> list[float]:
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise ValueError("values must be between 0 and 1")
        return values

    @field_validator("persona_dim")
    @classmethod
    def dims(cls, dims: list[int]) -> list[int]:
        if any(d < 1 for d in dims):
            raise ValueError("persona_dim must be at least 1")
        return dims

    @field_validator("n_personas")
    @classmethod
    def personas(cls, counts: list[int]) -> list[int]:
        if any(n < 2 for n in counts):
            raise ValueError("n_personas must be at least 2 (one aligned, one misaligned)")
        return counts


class SfpSweepConfig(GridSweep):
    """A toy-world sweep (`kind: sfp`): plain Tune trials, one process each, no DeepSpeed
    (a trial trains in ~30 s, less than Ray Train's per-trial start-up).

    Every trial runs to the end: its per-step reports carry only losses, so neither ASHA nor
    Optuna would have a metric to rank on before the final report."""

    REPORTED_METRICS: ClassVar = (names.EM_ROBUSTNESS, names.ALIGNMENT_FIDELITY, names.LOSS_RATIO)
    FINAL_METRIC: ClassVar = names.ALIGNMENT_FIDELITY
    SUMMARY_METRICS: ClassVar = (names.ALIGNMENT_FIDELITY, names.EM_ROBUSTNESS, names.LOSS_RATIO)
    TRIAL_S: ClassVar = 40  # a persona-engineering trial with the default settings, one core

    kind: Literal["sfp"]
    training: SfpTrainingConfig = SfpTrainingConfig()
    grid: SfpGridConfig = SfpGridConfig()
    scheduler: SchedulerConfig = SchedulerConfig(type="none", metric=names.EM_ROBUSTNESS)
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig(workers_per_trial=1, cpus_per_worker=1.0)
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("resources")
    @classmethod
    def one_process(cls, resources: ResourcesConfig) -> ResourcesConfig:
        if resources.workers_per_trial != 1:
            raise ValueError("toy-world trials run in one process: workers_per_trial must be 1")
        return resources

    @field_validator("scheduler")
    @classmethod
    def no_early_stopping(cls, scheduler: SchedulerConfig) -> SchedulerConfig:
        if scheduler.type != "none":
            raise ValueError("toy-world trials report their metrics only at the end: use type 'none'")
        return scheduler

    @field_validator("search")
    @classmethod
    def grid_search(cls, search: SearchConfig) -> SearchConfig:
        if search.type != "grid":
            raise ValueError("toy-world sweeps run their whole grid: use type 'grid'")
        return search

    def total_steps(self) -> int:
        return self.training.pretrain_steps + self.training.finetune_steps

    def trial_resources(self) -> tuple[dict[str, float], float]:
        return {"CPU": self.resources.cpus_per_worker}, self.resources.cpus_per_worker  # trains in its own process

    def trial_retries(self) -> int:
        return 0  # no checkpoints: `resume` reruns a lost toy trial, in minutes

    def parent_params(self) -> dict[str, Any]:
        return {}

    def estimate(self) -> str:
        return (f"~{self.TRIAL_S / 60:.1f} min per trial on one core, "
                f"~{self.TRIAL_S * self.trial_count() / 2 / 60:.0f} min on 2 cores")
