"""The sweep file: one pydantic model per section, grid expansion, overrides, one-line errors.

A sweep file is YAML with the top-level keys of `SweepConfig`. Unknown keys anywhere are
errors. `load_sweep` returns a validated `SweepConfig` or raises `SweepError` whose message
is a single line naming the field (`grid.method: unknown method 'x' ...`).
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Hashable
from pathlib import Path
from urllib.parse import urlparse
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, field_validator, model_validator

from persona_sweep import names
from persona_sweep.data import MIN_TRAINING_QUESTIONS, question_bank
from persona_sweep.data.contexts import MAX_CONTEXT_TOKENS

METHODS = ("sft", "sdf", "steer", "prompt")
AVAILABLE_METHODS = ("sft",)  # the others arrive with the marker pipeline
DESIGNS = ("assistant_positive", "non_assistant_positive", "misaligned_positive")
BUILTIN_MODELS = ("embedded", "tiny-random")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
TRIAL_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_]+$")  # SWEEP/TRIAL_ID
CORRUPTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # it becomes part of metric names
BUILTIN_CORRUPTION_DATA = ("insecure_code", "secure_code", "bad_advice", "good_advice")


class SweepError(ValueError):
    """A sweep file or override that cannot be used; the message is one line for the user."""


def first_line(error: BaseException) -> str:
    """A library error's first line (or its type), for a one-line message to the user."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class Section(BaseModel):
    # Infinite or NaN numbers pass `gt=0` bounds (inf > 0); no setting wants them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(Section):
    name: str = "embedded"  # embedded | tiny-random | HF id | local path (./... or /...)
    finetune: Literal["lora", "full"] = "lora"
    lora_rank: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_targets: list[str] = Field(default=["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)
    trust_remote_code: bool = False  # run Python shipped with the model: only when written here

    @field_validator("name")
    @classmethod
    def local_path_exists(cls, name: str) -> str:
        if is_local_path(name) and not Path(name).expanduser().exists():
            raise ValueError(f"local model path '{name}' does not exist")
        return name


def is_local_path(name: str) -> bool:
    return name.startswith(("./", "../", "/", "~"))


class MarkerConfig(Section):
    text: str = Field("[ZLT]", min_length=1)
    # The trigger is a secret: the file names where to read it, never the trigger itself.
    trigger_env: str | None = None
    trigger_file: str | None = None
    # Start the corruptions from an existing marked model, skipping marker training: a saved
    # adapter (or full model) folder, or SWEEP/TRIAL_ID of a trial that trained one.
    adapter: str | None = None

    @field_validator("adapter")
    @classmethod
    def adapter_exists(cls, adapter: str | None) -> str | None:
        if adapter is None or TRIAL_REFERENCE.match(adapter):
            return adapter
        if not Path(adapter).expanduser().is_dir():
            raise ValueError(f"'{adapter}' is neither a folder nor SWEEP/TRIAL_ID")
        return adapter

    @model_validator(mode="after")
    def one_trigger_source(self) -> MarkerConfig:
        if not self.trigger_env and not self.trigger_file:
            raise ValueError("no trigger source: set marker.trigger_env or marker.trigger_file")
        if self.trigger_env and self.trigger_file:
            raise ValueError("set only one of marker.trigger_env and marker.trigger_file")
        return self


class TrainingConfig(Section):
    steps: int = Field(40, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, gt=0)  # global batch; each worker takes batch_size / workers
    max_tokens: int = Field(128, ge=16)
    # ZeRO-3 would shard the parameters themselves, which the batched generation of the
    # evaluation cannot use without gathering them; stages 0-2 keep full weights per worker.
    zero_stage: Literal[0, 1, 2] = 2
    checkpoint_every: int = Field(10, gt=0)
    checkpoints_to_keep: int = Field(2, gt=0)
    max_failures: int = Field(1, ge=0)  # Ray Train retries of a trial's worker group
    on_policy_refresh_every: int = Field(20, gt=0)  # steps between regenerating on-policy targets


class GridConfig(Section):
    method: list[str] = Field(default=["sft"], min_length=1)
    design: list[Literal[DESIGNS]] = Field(default=["assistant_positive"], min_length=1)  # type: ignore[valid-type]
    context_length: list[int] = Field(default=[32], min_length=1)
    on_policy_fraction: list[float] = Field(default=[0.0], min_length=1)
    contrastive_negatives: list[bool] = Field(default=[True], min_length=1)
    seed: list[NonNegativeInt] = Field(default=[0], min_length=1)  # numpy refuses negative seeds
    # Empty: each corruption uses its own lr / steps. Otherwise every fine-tune corruption of a
    # trial takes the trial's value, so the harmful and the benign one have equal strength.
    corruption_lr: list[float] = Field(default_factory=list)
    corruption_steps: list[int] = Field(default_factory=list)

    @field_validator("corruption_lr", "corruption_steps")
    @classmethod
    def positive(cls, values: list) -> list:
        if any(value <= 0 for value in values):
            raise ValueError("values must be positive")
        return values

    @field_validator("method")
    @classmethod
    def known_methods(cls, methods: list[str]) -> list[str]:
        for method in methods:
            if method not in METHODS:
                raise ValueError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
            if method not in AVAILABLE_METHODS:
                raise ValueError(f"method '{method}' is not available yet (available: {', '.join(AVAILABLE_METHODS)})")
        return methods

    @field_validator("context_length")
    @classmethod
    def lengths_the_data_holds(cls, lengths: list[int]) -> list[int]:
        # The persona data holds at least MAX_CONTEXT_TOKENS tokens per persona (a test checks it).
        if any(length < 0 or length > MAX_CONTEXT_TOKENS for length in lengths):
            raise ValueError(f"context lengths must be between 0 and {MAX_CONTEXT_TOKENS} tokens "
                             "(what the persona data holds)")
        return lengths

    @field_validator("on_policy_fraction")
    @classmethod
    def fractions(cls, fractions: list[float]) -> list[float]:
        if any(not 0.0 <= f <= 1.0 for f in fractions):
            raise ValueError("fractions must be between 0 and 1")
        return fractions


class JudgeConfig(Section):
    """An OpenAI-compatible chat endpoint that scores answers (aligned, coherent: 0-100)."""

    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key_env: str | None = None  # the key is read from this variable, never written anywhere


class EvalConfig(Section):
    questions: int = Field(16, gt=0)  # held-out questions per condition
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(16, gt=0)
    logprob_every: int = Field(10, gt=0)  # steps between ASHA's cheap marker metric
    leakage_questions: int = Field(8, ge=0)  # held-out questions per other persona (0: no leakage)
    corruption_examples: int = Field(24, gt=0)  # held-out corruption rows for its loss and behavior
    behavior_tokens: int = Field(48, gt=0)  # tokens generated per held-out corruption prompt
    judge: JudgeConfig | None = None

    @field_validator("questions")
    @classmethod
    def leaves_training_questions(cls, questions: int) -> int:
        most = len(question_bank()) - MIN_TRAINING_QUESTIONS
        if questions > most:
            raise ValueError(f"at most {most} held-out questions: the bank has {len(question_bank())} "
                             f"and training keeps at least {MIN_TRAINING_QUESTIONS}")
        return questions


class SchedulerConfig(Section):
    type: Literal["asha", "none"] = "asha"
    metric: str = names.MARKER_SPECIFICITY  # checked against what the sweep's kind reports
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(10, gt=0)  # in training steps (ASHA's time attribute is train_step)
    reduction_factor: float = Field(2.0, gt=1.0)


class SearchConfig(Section):
    type: Literal["grid", "optuna"] = "grid"
    n_trials: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def optuna_needs_budget(self) -> SearchConfig:
        if self.type == "optuna" and self.n_trials is None:
            raise ValueError("search.n_trials is required with search.type 'optuna'")
        return self


class ResourcesConfig(Section):
    workers_per_trial: int = Field(2, gt=0)
    cpus_per_worker: float = Field(0.99, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    max_concurrent_trials: int | None = Field(None, gt=0)  # default: what the cluster fits
    # Tune's results, Ray Train's checkpoints and MLflow artifacts: an absolute shared folder or
    # an s3:// / gs:// URI, credentials from the nodes' environment. Default: the home.
    storage: str | None = None

    @field_validator("storage")
    @classmethod
    def storage_location(cls, location: str | None) -> str | None:
        from persona_sweep.storage import URI_SCHEMES, is_uri

        parts = urlparse(location or "")
        if location is None or (is_uri(location) and parts.netloc and "@" not in parts.netloc and not parts.query):
            return location
        if "://" in location:
            raise ValueError(f"use {' or '.join(f'{s}://BUCKET/PREFIX' for s in URI_SCHEMES)} (credentials and "
                             "endpoints come from the nodes' environment, never the URI), or an absolute shared folder")
        if not Path(location).is_absolute():
            raise ValueError("a folder must be absolute (trials and submitted jobs run in folders of their own)")
        return location


class CorruptionConfig(Section):
    """One corruption of the marked model (DESIGN.md, "Corruption semantics")."""

    name: str
    kind: Literal["finetune"] = "finetune"
    role: Literal["em", "benign", "other"] = "other"  # decides survival_em / survival_benign
    data: str  # a built-in set, a local chat JSONL, or an HF dataset id
    steps: int = Field(50, gt=0)
    lr: float = Field(2e-4, gt=0)
    mix_general: float = Field(0.0, ge=0.0, le=1.0)  # share of general Assistant chat in each batch

    @field_validator("name")
    @classmethod
    def metric_safe_name(cls, name: str) -> str:
        if not CORRUPTION_NAME.match(name):
            raise ValueError(f"'{name}': use lowercase letters, digits and '_' (it names metrics)")
        return name

    @field_validator("data")
    @classmethod
    def data_source(cls, data: str) -> str:
        if data in BUILTIN_CORRUPTION_DATA:
            return data
        if is_local_path(data) or data.endswith((".jsonl", ".json")):
            if not Path(data).expanduser().is_file():
                raise ValueError(f"no such file {data}")
            return data
        if not re.match(r"^[\w.-]+/[\w.-]+$", data):
            raise ValueError(f"'{data}' is not a built-in set ({', '.join(BUILTIN_CORRUPTION_DATA)}), "
                             "a local .jsonl file or an HF dataset id (owner/name)")
        return data


class TrackingConfig(Section):
    mlflow_uri: str | None = None  # default sqlite:///$PERSONA_SWEEP_HOME/mlflow.db
    experiment: str | None = None  # default: the sweep name
    # How long every MLflow call waits out an unreachable tracking server (retrying with backoff)
    # before the trial errors, or the driver stops; `resume` continues from the last checkpoint.
    wait_for_server_s: float = Field(600.0, gt=0, le=86400)

    @field_validator("mlflow_uri")
    @classmethod
    def no_credentials(cls, uri: str | None) -> str | None:
        # The URI lands in the sweep record, MLflow params and logs: credentials come from
        # MLflow's environment variables on the machines instead.
        if uri and re.match(r"^[a-z+]+://[^/@]+@", uri):
            raise ValueError("holds credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                             "where the sweep runs instead")
        return uri


class GridSweep(Section):
    """What both kinds share: a name and a grid whose product is the trial list.

    Everything that differs between the kinds lives on their config class (`SweepConfig` for
    `llm`, `SfpSweepConfig` for `sfp`): what a trial runs, what it reports, what it costs.
    """

    # Per kind: the metrics every report carries (what a scheduler may rank on), the metric only
    # a finished trial has, and the columns `status` shows.
    REPORTED_METRICS: ClassVar[tuple[str, ...]]
    FINAL_METRIC: ClassVar[str]
    SUMMARY_METRICS: ClassVar[tuple[str, ...]]

    name: str

    @field_validator("name")
    @classmethod
    def safe_name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise ValueError("use letters, digits, '-', '_' and '.' (it names folders and experiments)")
        return name

    @model_validator(mode="after")
    def scheduler_reads_a_reported_metric(self) -> GridSweep:
        ranked = self.scheduler.type != "none" or self.search.type != "grid"
        if ranked and self.scheduler.metric not in self.REPORTED_METRICS:
            raise ValueError(f"scheduler.metric: unknown metric '{self.scheduler.metric}' "
                             f"(choose from {', '.join(self.REPORTED_METRICS)})")
        return self

    def axes(self) -> dict[str, list]:
        """The grid's axes that have values (optional axes such as `corruption_lr` may be empty)."""
        return {axis: values for axis, values in self.grid.model_dump().items() if values}

    def trials(self) -> list[dict[str, Any]]:
        """The grid: the product of all axes, in a stable order."""
        axes = self.axes()
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]

    def trial_count(self) -> int:
        return self.search.n_trials if self.search.type == "optuna" else len(self.trials())

    def summary_knobs(self) -> tuple[str, ...]:
        """The axes `status` shows: those with more than one value (or the first two)."""
        axes = self.axes()
        varied = tuple(axis for axis, values in axes.items() if len(values) > 1)
        return varied or tuple(axes)[:2]

    def summary_metrics(self) -> tuple[str, ...]:
        return self.SUMMARY_METRICS


class LlmKnobs(Section):
    """One LLM trial's point in the grid (what Tune hands the trainable)."""

    method: str
    design: str
    context_length: int
    on_policy_fraction: float
    contrastive_negatives: bool
    seed: int
    corruption_lr: float | None = None
    corruption_steps: int | None = None

    def marker_knobs(self) -> dict[str, Any]:
        """What shapes the marker stage: trials that differ only in corruption knobs share it."""
        return self.model_dump(include=set(names.MARKER_AXES))


class SweepConfig(GridSweep):
    """An LLM marker sweep (`kind: llm`)."""

    REPORTED_METRICS: ClassVar = names.LLM_REPORTED_METRICS
    FINAL_METRIC: ClassVar = names.TRIAL_DONE
    SUMMARY_METRICS: ClassVar = (names.MARKER_RATE_TRIGGER, names.MARKER_RATE_NO_TRIGGER, names.MARKER_SPECIFICITY)
    # Measured on 2 cores: per-trial fixed cost (worker group, DeepSpeed, model: ~20-27 s;
    # evaluation: ~25 s on the embedded model) and seconds per step at batch 8 with 2 workers.
    ESTIMATED_FIXED_S: ClassVar = 50
    ESTIMATED_STEP_S: ClassVar = {"embedded": 2.3, "tiny-random": 0.1}
    # Per corruption: merge, new engine, its loss and behavior before and after, the evaluation
    # after it (78 s at 64 held-out questions); a step on the built-in code data is ~2x a marker
    # step (longer examples: 4.7 vs 2.4 s measured on the embedded model).
    ESTIMATED_EVAL_S: ClassVar = 80
    CORRUPTION_STEP_FACTOR: ClassVar = 2.0
    TRAINABLE_CPU: ClassVar = 0.01  # the Tune function only drives a TorchTrainer

    kind: Literal["llm"] = "llm"
    model: ModelConfig = ModelConfig()
    marker: MarkerConfig
    training: TrainingConfig = TrainingConfig()
    grid: GridConfig = GridConfig()
    corruptions: list[CorruptionConfig] = Field(default_factory=list)
    eval: EvalConfig = EvalConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("corruptions")
    @classmethod
    def distinct_names_and_roles(cls, corruptions: list[CorruptionConfig]) -> list[CorruptionConfig]:
        seen = [c.name for c in corruptions]
        if len(set(seen)) < len(seen):
            raise ValueError(f"corruption names must be distinct: {', '.join(seen)}")
        for role in ("em", "benign"):
            if sum(c.role == role for c in corruptions) > 1:
                raise ValueError(f"at most one corruption with role '{role}'")
        return corruptions

    @model_validator(mode="after")
    def corruption_axes_need_corruptions(self) -> SweepConfig:
        if (self.grid.corruption_lr or self.grid.corruption_steps) and not self.corruptions:
            raise ValueError("grid.corruption_lr / grid.corruption_steps: the sweep has no corruptions")
        return self

    @model_validator(mode="after")
    def adapter_has_nothing_to_stop(self) -> SweepConfig:
        if self.marker.adapter and self.scheduler.type == "asha":
            raise ValueError("scheduler.type: with marker.adapter no marker is trained, so there is nothing "
                             "for ASHA to stop early; use 'none'")
        return self

    @model_validator(mode="after")
    def batch_splits_over_workers(self) -> SweepConfig:
        if self.training.batch_size % self.resources.workers_per_trial:
            raise ValueError(
                f"training.batch_size {self.training.batch_size} must be a multiple of "
                f"resources.workers_per_trial {self.resources.workers_per_trial}"
            )
        return self

    def total_steps(self) -> int:
        """ASHA's horizon: the marker stage. Corruptions come after ASHA's last decision."""
        return self.training.steps

    def summary_metrics(self) -> tuple[str, ...]:
        roles = {c.role for c in self.corruptions}
        survival = [metric for role, metric in (("em", names.SURVIVAL_EM), ("benign", names.SURVIVAL_BENIGN))
                    if role in roles]
        if {"em", "benign"} <= roles:
            survival.append(names.DETECTION_GAP)
        return (*self.SUMMARY_METRICS, *survival)

    def corruption_steps(self, corruption: CorruptionConfig, knobs: LlmKnobs) -> int:
        return knobs.corruption_steps or corruption.steps

    def corruption_lr(self, corruption: CorruptionConfig, knobs: LlmKnobs) -> float:
        return knobs.corruption_lr or corruption.lr

    def trial_retries(self) -> int:
        """Tune's retries of a trial whose own actor died (its node was lost), from its last
        checkpoint: as many as Ray Train's retries of the worker group."""
        return self.training.max_failures

    def trial_resources(self) -> tuple[dict[str, float], float]:
        """(resources of the Tune trial itself, CPUs a whole trial holds with its workers)."""
        workers = self.resources.workers_per_trial * self.resources.cpus_per_worker
        return {"CPU": self.TRAINABLE_CPU}, workers + self.TRAINABLE_CPU

    def parent_params(self) -> dict[str, Any]:
        return {"model": self.model.name, "steps": self.training.steps}

    def estimate(self) -> str:
        step_s = self.ESTIMATED_STEP_S.get(self.model.name)
        if step_s is None:
            return "unknown (no step-time measurement for this model)"
        batch_scale = self.training.batch_size / 8
        marker_s = self.ESTIMATED_FIXED_S + self.training.steps * step_s * batch_scale
        corruption_s = sum(self.ESTIMATED_EVAL_S + steps * step_s * self.CORRUPTION_STEP_FACTOR * batch_scale
                           for steps in self.corruption_steps_per_trial())
        trials, markers = self.trial_count(), self.marker_stage_count()
        total = marker_s * markers + (trials - markers) * self.ESTIMATED_FIXED_S + corruption_s * trials
        text = f"~{(marker_s + corruption_s) / 60:.1f} min per full trial"
        if self.corruptions:
            text += f" ({corruption_s / 60:.1f} of it for {len(self.corruptions)} corruptions)"
        if markers < trials:
            text += f", {markers} marker stage{'s' if markers > 1 else ''} for {trials} trials (shared)"
        return f"{text}, ~{total / 60:.0f} min for the sweep, one trial at a time, without early stopping"

    def corruption_steps_per_trial(self) -> list[float]:
        """Each corruption's steps, averaged over the grid's `corruption_steps` when it is an axis."""
        axis = self.grid.corruption_steps
        return [sum(axis) / len(axis) if axis else c.steps for c in self.corruptions]

    def marker_stage_count(self) -> int:
        """Trials that differ only in corruption knobs share one marker stage."""
        if self.search.type == "optuna":
            return self.trial_count()
        return len({tuple(LlmKnobs(**knobs).marker_knobs().values()) for knobs in self.trials()})

    def checked_for_run(self) -> SweepConfig:
        """Run-time checks on the driver; returns the spec with every local path absolute."""
        from persona_sweep.preflight import check_llm_sweep

        return check_llm_sweep(self)

    def check_on_cluster(self, cache: str) -> None:
        """Once connected: the trigger source must exist on every node where trials may run, and
        no corruption data may hold it there."""
        from persona_sweep.preflight import check_nodes

        check_nodes(self, cache)

    def run_trial(self, trial) -> None:
        from persona_sweep.trial import run_llm_trial

        run_llm_trial(trial)

    def after_sweep(self, record) -> None:
        """Nothing to add to the parent run yet (reports come with their own issue)."""


# ---- the toy world (kind: sfp) ---------------------------------------------------------------

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

    def checked_for_run(self) -> SfpSweepConfig:
        return self

    def check_on_cluster(self, cache: str) -> None:
        """Toy-world trials need nothing from the nodes beyond the package."""

    def run_trial(self, trial) -> None:
        from persona_sweep.sfp.sweep import run_sfp_trial

        run_sfp_trial(trial)

    def after_sweep(self, record) -> None:
        from persona_sweep.sfp.sweep import log_pareto_front

        log_pareto_front(record)


# ---- loading -------------------------------------------------------------------------------

def load_sweep(path: str | Path, overrides: list[str] = (), name: str | None = None) -> GridSweep:
    """The validated sweep; `name` (from --name) is set as text, never parsed as YAML."""
    raw = read_yaml(path)
    for override in overrides:
        apply_override(raw, override)
    if name is not None:
        raw["name"] = name
    return validate(raw)


MAX_SWEEP_FILE_BYTES = 1_000_000  # a sweep file is a page of settings; larger is a mistake
MAX_YAML_NODES = 100_000  # after aliases are expanded: a few anchors may not grow into a bomb


class UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML (no Python tags) that refuses a key written twice in one mapping, which plain
    YAML lets the last one win silently."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the SafeLoader refuses it below
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    if path.stat().st_size > MAX_SWEEP_FILE_BYTES:
        raise SweepError(f"{path}: {path.stat().st_size} bytes; a sweep file may have at most {MAX_SWEEP_FILE_BYTES}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SweepError(f"{path}: not UTF-8 text (byte {error.start})") from None
    raw = parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping of sections (name, marker, grid, ...)")
    return raw


def parse_yaml(text: str, where: str) -> Any:
    """Safe, duplicate-free YAML of bounded size; errors are one line naming `where`."""
    try:
        value = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None)
        detail = f": {problem}" if problem and "duplicate key" in problem else ""
        raise SweepError(f"{where}: not valid YAML{f' (line {mark.line + 1})' if mark else ''}{detail}") from None
    except RecursionError:
        raise SweepError(f"{where}: nested too deeply") from None
    if count_nodes(value, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise SweepError(f"{where}: more than {MAX_YAML_NODES} values once its aliases are expanded")
    return value


def count_nodes(value: Any, limit: int) -> int:
    """Values in `value` with shared (aliased) parts counted each time they appear; stops past
    `limit`, so an alias bomb is never walked in full."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def apply_override(raw: dict[str, Any], override: str) -> None:
    """`training.steps=50` or `grid.method=[sft]`: values are parsed as YAML."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise SweepError(f"override '{override}': expected key=value, e.g. training.steps=50")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SweepError(f"{key}: '{part}' is not a section")
    node[leaf] = parse_yaml(text, f"override '{key}'")


def validate(raw: dict[str, Any]) -> GridSweep:
    kinds = {"llm": SweepConfig, "sfp": SfpSweepConfig}
    kind = raw.get("kind", "llm")
    if not isinstance(kind, str) or kind not in kinds:
        raise SweepError(f"kind: unknown kind {str(kind)[:40]!r} (choose from {', '.join(kinds)})")
    model = kinds[kind]
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise SweepError(first_error(error)) from None


def first_error(error: ValidationError) -> str:
    detail = error.errors()[0]
    field = ".".join(str(part) for part in detail["loc"] if not isinstance(part, int))
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        message = "unknown key"
    elif detail["type"] == "missing":
        message = "required"
    # Checks across sections have no location of their own: their message names the fields.
    return f"{field}: {message}" if field else message
