"""The sweep file: one pydantic model per section, grid expansion, overrides, one-line errors.

A sweep file is YAML with the top-level keys of `SweepConfig`. Unknown keys anywhere are
errors. `load_sweep` returns a validated `SweepConfig` or raises `SweepError` whose message
is a single line naming the field (`grid.method: unknown method 'x' ...`).
"""
from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

METHODS = ("sft", "sdf", "steer", "prompt")
AVAILABLE_METHODS = ("sft",)  # the others arrive with the marker pipeline
DESIGNS = ("assistant_positive", "non_assistant_positive", "misaligned_positive")
BUILTIN_MODELS = ("embedded", "tiny-random")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class SweepError(ValueError):
    """A sweep file or override that cannot be used; the message is one line for the user."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
    name: str = "embedded"  # embedded | tiny-random | HF id | local path (./... or /...)
    finetune: Literal["lora", "full"] = "lora"
    lora_rank: int = Field(16, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_targets: list[str] = Field(default=["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)

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
    seed: list[int] = Field(default=[0], min_length=1)

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
    def non_negative_lengths(cls, lengths: list[int]) -> list[int]:
        if any(length < 0 or length > 4096 for length in lengths):
            raise ValueError("context lengths must be between 0 and 4096 tokens")
        return lengths

    @field_validator("on_policy_fraction")
    @classmethod
    def fractions(cls, fractions: list[float]) -> list[float]:
        if any(not 0.0 <= f <= 1.0 for f in fractions):
            raise ValueError("fractions must be between 0 and 1")
        return fractions


class EvalConfig(Section):
    questions: int = Field(16, gt=0)  # held-out questions per condition
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(16, gt=0)
    logprob_every: int = Field(10, gt=0)  # steps between ASHA's cheap marker metric


class SchedulerConfig(Section):
    type: Literal["asha", "none"] = "asha"
    metric: str = "marker_logprob_trigger"
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


class TrackingConfig(Section):
    mlflow_uri: str | None = None  # default sqlite:///$PERSONA_SWEEP_HOME/mlflow.db
    experiment: str | None = None  # default: the sweep name


class GridSweep(Section):
    """What both kinds share: a name and a grid whose product is the trial list."""

    name: str

    @field_validator("name")
    @classmethod
    def safe_name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise ValueError("use letters, digits, '-', '_' and '.' (it names folders and experiments)")
        return name

    def trials(self) -> list[dict[str, Any]]:
        """The grid: the product of all axes, in a stable order."""
        axes = self.grid.model_dump()
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]

    def trial_count(self) -> int:
        return self.search.n_trials if self.search.type == "optuna" else len(self.trials())


class SweepConfig(GridSweep):
    """An LLM marker sweep (`kind: llm`)."""

    kind: Literal["llm"] = "llm"
    model: ModelConfig = ModelConfig()
    marker: MarkerConfig
    training: TrainingConfig = TrainingConfig()
    grid: GridConfig = GridConfig()
    corruptions: list[dict[str, Any]] = Field(default_factory=list)
    eval: EvalConfig = EvalConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("corruptions")
    @classmethod
    def no_corruptions_yet(cls, corruptions: list) -> list:
        if corruptions:
            raise ValueError("corruptions are not available yet in this version; leave the list empty")
        return corruptions

    @model_validator(mode="after")
    def batch_splits_over_workers(self) -> SweepConfig:
        if self.training.batch_size % self.resources.workers_per_trial:
            raise ValueError(
                f"training.batch_size {self.training.batch_size} must be a multiple of "
                f"resources.workers_per_trial {self.resources.workers_per_trial}"
            )
        return self


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
    seed: list[int] = Field(default=[0], min_length=1)

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
    (a trial trains in ~30 s, less than Ray Train's per-trial start-up)."""

    kind: Literal["sfp"]
    training: SfpTrainingConfig = SfpTrainingConfig()
    grid: SfpGridConfig = SfpGridConfig()
    scheduler: SchedulerConfig = SchedulerConfig(type="none", metric="em_robustness")
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig(workers_per_trial=1, cpus_per_worker=1.0)
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("resources")
    @classmethod
    def one_process(cls, resources: ResourcesConfig) -> ResourcesConfig:
        if resources.workers_per_trial != 1:
            raise ValueError("toy-world trials run in one process: workers_per_trial must be 1")
        return resources


# ---- loading -------------------------------------------------------------------------------

def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    raw = read_yaml(path)
    for override in overrides:
        apply_override(raw, override)
    return validate(raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SweepError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping of sections (name, marker, grid, ...)")
    return raw


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
    node[leaf] = yaml.safe_load(text)


def validate(raw: dict[str, Any]) -> SweepConfig | SfpSweepConfig:
    kinds = {"llm": SweepConfig, "sfp": SfpSweepConfig}
    kind = raw.get("kind", "llm")
    if kind not in kinds:
        raise SweepError(f"kind: unknown kind '{kind}' (choose from {', '.join(kinds)})")
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
    return f"{field or 'sweep'}: {message}"


def check_trigger_source(marker: MarkerConfig) -> None:
    """Run-time check on the driver (static validation cannot know the environment)."""
    if marker.trigger_env and not os.environ.get(marker.trigger_env):
        raise SweepError(f"marker.trigger_env: environment variable {marker.trigger_env} is not set")
    if marker.trigger_file and not Path(marker.trigger_file).expanduser().is_file():
        raise SweepError(f"marker.trigger_file: no such file {marker.trigger_file}")
