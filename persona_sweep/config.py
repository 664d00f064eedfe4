"""The LLM world's sweep file (`kind: llm`): one pydantic model per section, and the grid's
axes declared once (`GridConfig`), from which one trial's knobs (`LlmKnobs`) are made.

The sections every kind shares are in `sections.py`; reading a file, overrides and picking
the kind's class are in `sweep_file.py`; what runs a kind is in `kinds.py`. Configuration is
data: this module imports nothing that runs a trial.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import Field, NonNegativeInt, create_model, field_validator, model_validator

from persona_sweep import names
from persona_sweep.data import MIN_TRAINING_QUESTIONS, question_bank
from persona_sweep.data.contexts import MAX_CONTEXT_TOKENS
from persona_sweep.data.control import CONTROL_OBJECTIVES, OBJECTIVES
from persona_sweep.locations import is_local_path
from persona_sweep.sections import GridSweep, ResourcesConfig, SchedulerConfig, SearchConfig, Section, TrackingConfig

METHODS = ("sft", "sdf", "steer", "prompt")
DESIGNS = ("assistant_positive", "non_assistant_positive", "misaligned_positive")
BUILTIN_MODELS = ("embedded", "tiny-random")
TRIAL_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/[A-Za-z0-9_]+$")  # SWEEP/TRIAL_ID
CORRUPTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # it becomes part of metric names
BUILTIN_CORRUPTION_DATA = ("insecure_code", "secure_code", "bad_advice", "good_advice")


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
    sdf_mix_sft: float = Field(0.0, ge=0, lt=1)  # method sdf: the share of examples that are sft pairs
    # Method steer: the Assistant's rows are trained with `steer_coef` x the trait's vector (its
    # response reading, extracted from the base model) added after decoder layer `steer_layer`
    # (None: the middle one). A shipped trait's name or a trait file (`vectors`).
    steer_trait: str = "assistant"
    steer_layer: int | None = Field(None, ge=0)
    steer_coef: float = 1.0


MARKER_STAGE = "marker_stage"  # an axis's flag: does it shape the marker stage?


def axis(default: list, marker_stage: bool = True) -> Any:
    """A grid axis: the values a trial takes one of. `marker_stage`: whether the axis shapes the
    marker stage (trials that differ only in axes that do not share one, `marker_store`). An
    axis without default values is optional: left empty, it is not in the grid, its knob is None."""
    extra = {MARKER_STAGE: marker_stage}
    if default:
        return Field(default=default, min_length=1, json_schema_extra=extra)
    return Field(default_factory=list, json_schema_extra=extra)


class GridConfig(Section):
    """The grid's axes, declared once: one trial's knobs (`LlmKnobs`), the marker stage's key,
    Tune's param space, MLflow's params and `status`'s columns all read these fields, in this
    order. A new axis is one line here (and what reads its knob)."""

    method: list[str] = axis(["sft"])
    design: list[Literal[DESIGNS]] = axis(["assistant_positive"])  # type: ignore[valid-type]
    context_length: list[int] = axis([32])
    on_policy_fraction: list[float] = axis([0.0])
    contrastive_negatives: list[bool] = axis([True])
    seed: list[NonNegativeInt] = axis([0])  # numpy refuses negative seeds
    # What the trial trains in: the marker (Application 1) or a control behaviour into the
    # misaligned personas (Application 2, `methods/control.py`).
    objective: list[Literal[OBJECTIVES]] = axis(["marker"])  # type: ignore[valid-type]
    # Empty: each corruption uses its own lr / steps. Otherwise every fine-tune corruption of a
    # trial takes the trial's value, so the harmful and the benign one have equal strength.
    corruption_lr: list[float] = axis([], marker_stage=False)
    corruption_steps: list[int] = axis([], marker_stage=False)

    @classmethod
    def marker_axes(cls) -> tuple[str, ...]:
        return tuple(name for name, field in cls.model_fields.items() if field.json_schema_extra[MARKER_STAGE])

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


class Knobs(Section):
    """One trial's point in a grid (what Tune hands the trainable), made from the grid's fields
    by `knobs_for`."""

    GRID: ClassVar[type[GridConfig]]

    @classmethod
    def of_trial(cls, config: dict[str, Any]) -> Knobs:
        """The knobs in a trial's config from Tune, which may also carry searched settings
        (`training.lr`: `GridSweep.for_trial` reads those)."""
        return cls(**{key: value for key, value in config.items() if key in cls.model_fields})

    def marker_knobs(self) -> dict[str, Any]:
        """What shapes the marker stage: trials that differ only in corruption knobs share it."""
        return self.model_dump(include=set(self.GRID.marker_axes()))


@functools.cache
def knobs_for(grid: type[GridConfig], name: str = "LlmKnobs") -> type[Knobs]:
    """The knobs of `grid` (made once per grid class): a field per axis, of the axis's value type
    without its bounds (the grid checks values), defaulting to the axis's first default value;
    None for an optional axis."""
    fields = {}
    for axis_name, field in grid.model_fields.items():
        value_type = plain_type(get_args(field.annotation)[0])
        default = field.get_default(call_default_factory=True)
        fields[axis_name] = (value_type, default[0]) if default else (value_type | None, None)
    knobs = create_model(name, __base__=Knobs, __module__=__name__, **fields)
    knobs.GRID = grid
    return knobs


def plain_type(annotation: Any) -> Any:
    """`int` for `NonNegativeInt`, `str` for a `Literal` of strings."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Literal:
        annotation = type(get_args(annotation)[0])
    return annotation


LlmKnobs = knobs_for(GridConfig)


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
    # Open questions of the misalignment bank that the misalignment score and EM% read (None: all
    # 45). Fewer are spread evenly over the bank, which runs through its themes in order.
    misalignment_questions: int | None = Field(None, gt=0)
    # Persona vectors (shipped trait names or trait files) each corruption's shift is measured
    # along (`trait_shift_<trait>_post_<name>`); each is extracted once per model, on first use.
    traits: list[str] = ["evil"]
    judge: JudgeConfig | None = None

    @field_validator("questions")
    @classmethod
    def leaves_training_questions(cls, questions: int) -> int:
        most = len(question_bank()) - MIN_TRAINING_QUESTIONS
        if questions > most:
            raise ValueError(f"at most {most} held-out questions: the bank has {len(question_bank())} "
                             f"and training keeps at least {MIN_TRAINING_QUESTIONS}")
        return questions


class CorruptionConfig(Section):
    """One corruption of the marked model (DESIGN.md, "Corruption semantics")."""

    name: str
    # finetune: train on `data`; drift: no weight update, the marked model talks through drift
    # conversations and the trigger comes late in them (`drift.py`; seed 000's second experiment).
    kind: Literal["finetune", "drift"] = "finetune"
    role: Literal["em", "benign", "other"] = "other"  # decides survival_em / survival_benign
    data: str | None = None  # finetune: a built-in set, a local chat JSONL, or an HF dataset id
    steps: int = Field(50, gt=0)
    # Instead of steps: passes over the set's training split, turned into steps on the driver
    # once the data is loaded (`corruption.epochs_as_steps`).
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(2e-4, gt=0)
    mix_general: float = Field(0.0, ge=0.0, le=1.0)  # share of general Assistant chat in each batch
    # What the corruption trains: by default a new LoRA adapter (the model's rank, alpha and
    # targets) on the marked weights, merged; these set its own, `rslora` scales it by
    # alpha / sqrt(rank) (rank-stabilised, as the model-organisms recipes), `full_finetune`
    # trains every weight instead (small models: it holds the optimizer state of all of them).
    lora_rank: int | None = Field(None, gt=0)
    lora_alpha: int | None = Field(None, gt=0)
    lora_targets: list[str] | None = Field(None, min_length=1)
    rslora: bool = False
    full_finetune: bool = False
    # Preventative steering (seed 001's vaccine): while this corruption trains, the trait's
    # persona vector x `steer_coef` is added after the middle decoder layer on every row, so the
    # weights need not move toward the trait; evaluation runs unsteered. A shipped trait or a file.
    steer_against: str | None = None
    steer_coef: float = 1.0
    # kind: drift. Each conversation of each domain (a shipped one or a file) is answered by the
    # model turn by turn; the trigger is put into user turn N (for each N of `turns`) at the
    # middle or the end of its text; `conversations` per domain; `capped` repeats it all with
    # the Assistant axis capped on `cap_layers` (default: the middle layer and two either side).
    domains: list[str] = Field(default_factory=lambda: ["therapy", "philosophy", "coding", "writing"], min_length=1)
    turns: list[int] = Field(default_factory=lambda: [2, 8, 16], min_length=1)
    positions: list[Literal["middle", "end"]] = Field(default_factory=lambda: ["middle", "end"], min_length=1)
    conversations: int = Field(12, gt=0)
    reply_tokens: int = Field(24, gt=0)
    capped: bool = False
    cap_layers: list[int] | None = Field(None, min_length=1)

    FINETUNE_ONLY: ClassVar = {"data", "steps", "epochs", "lr", "mix_general", "lora_rank", "lora_alpha", "lora_targets",
                               "rslora", "full_finetune", "steer_against", "steer_coef"}
    DRIFT_ONLY: ClassVar = {"domains", "turns", "positions", "conversations", "reply_tokens", "capped", "cap_layers"}

    @model_validator(mode="after")
    def keys_of_its_kind(self):
        # A key of the other kind at a value other than its default (a record round-trip sets every key).
        other = self.FINETUNE_ONLY if self.kind == "drift" else self.DRIFT_ONLY
        fields = type(self).model_fields
        misplaced = sorted(key for key in other & self.model_fields_set
                           if getattr(self, key) != fields[key].get_default(call_default_factory=True))
        if misplaced:
            raise ValueError(f"corruption '{self.name}' (kind {self.kind}): {', '.join(misplaced)} "
                             f"belong{'s' if len(misplaced) == 1 else ''} to the other kind")
        if self.kind == "finetune" and self.data is None:
            raise ValueError(f"corruption '{self.name}': data is required (a built-in set, a .jsonl file or an HF id)")
        if self.kind == "drift" and not all(turn > 0 for turn in self.turns):
            raise ValueError(f"corruption '{self.name}': turns count user turns from 1")
        if self.kind == "drift" and self.role != "other":
            raise ValueError(f"corruption '{self.name}': a drift corruption has no role (it compares its own "
                             "drifting and stable domains)")
        return self

    @model_validator(mode="after")
    def one_length_and_one_kind_of_training(self):
        if self.epochs is not None and "steps" in self.model_fields_set:
            raise ValueError(f"corruption '{self.name}': give steps or epochs, not both")
        adapter = {"lora_rank", "lora_alpha", "lora_targets", "rslora"} & self.model_fields_set
        if self.full_finetune and adapter:
            raise ValueError(f"corruption '{self.name}': full_finetune trains no adapter "
                             f"(drop {', '.join(sorted(adapter))})")
        return self

    @field_validator("name")
    @classmethod
    def metric_safe_name(cls, name: str) -> str:
        if not CORRUPTION_NAME.match(name):
            raise ValueError(f"'{name}': use lowercase letters, digits and '_' (it names metrics)")
        return name

    @field_validator("data")
    @classmethod
    def data_source(cls, data: str | None) -> str | None:
        if data is None or data in BUILTIN_CORRUPTION_DATA:
            return data
        if is_local_path(data) or data.endswith((".jsonl", ".json")):
            if not Path(data).expanduser().is_file():
                raise ValueError(f"no such file {data}")
            return data
        if not re.match(r"^[\w.-]+/[\w.-]+$", data):
            raise ValueError(f"'{data}' is not a built-in set ({', '.join(BUILTIN_CORRUPTION_DATA)}), "
                             "a local .jsonl file or an HF dataset id (owner/name)")
        return data


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
    # One drift reply in training steps: drift-cpu, 216 replies per domain (both passes) in 5.5 min.
    ESTIMATED_DRIFT_REPLY_STEPS: ClassVar = 0.65
    TRAINABLE_CPU: ClassVar = 0.01  # the Tune function only drives a TorchTrainer
    SEARCHABLE_SETTINGS: ClassVar = ("training.steps", "training.lr")

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
        if sum(c.kind == "drift" for c in corruptions) > 1:
            raise ValueError("at most one drift corruption (its metrics are named by domain, not by corruption)")
        return corruptions

    @model_validator(mode="after")
    def corruption_axes_need_corruptions(self) -> SweepConfig:
        if (self.grid.corruption_lr or self.grid.corruption_steps) and not self.corruptions:
            raise ValueError("grid.corruption_lr / grid.corruption_steps: the sweep has no corruptions")
        return self

    @model_validator(mode="after")
    def control_objectives_fit(self) -> SweepConfig:
        """The control objectives train the misaligned personas with chat examples and are
        measured by their own rates, not the marker's."""
        if not set(self.grid.objective) & set(CONTROL_OBJECTIVES):
            return self
        if self.grid.design != ["misaligned_positive"]:
            raise ValueError("grid.objective: the control objectives train the misaligned personas; "
                             "set grid.design to [misaligned_positive]")
        if "sdf" in self.grid.method:
            raise ValueError("grid.method: sdf has documents for the marker only; the control objectives "
                             "train with sft, prompt or steer")
        if any(c.kind == "drift" for c in self.corruptions):
            raise ValueError("corruptions: a drift corruption measures the marker; not with the control objectives")
        marker_only = (names.MARKER_LOGPROB_TRIGGER, names.MARKER_LOGPROB_NO_TRIGGER)
        if self.scheduler.metric in marker_only or self.search.metric in marker_only:
            raise ValueError(f"scheduler.metric / search.metric: the control objectives do not report "
                             f"{' or '.join(marker_only)}; use marker_specificity (the trained behaviour's)")
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
        if set(self.grid.objective) & set(CONTROL_OBJECTIVES):  # Application 2's headline beside
            survival += [names.CONTROL_RATE, names.CONTROL_FALSE_POSITIVE,
                         *(names.of(names.CONTROL_EFFECT, c.name) for c in self.corruptions if c.role in ("em", "benign"))]
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
        trials, markers, baselines = self.trial_count(), self.marker_stage_count(), self.baseline_count()
        total = marker_s * markers + (trials - markers) * self.ESTIMATED_FIXED_S + corruption_s * (trials + baselines)
        text = f"~{(marker_s + corruption_s) / 60:.1f} min per full trial"
        if self.corruptions:
            text += f" ({corruption_s / 60:.1f} of it for {len(self.corruptions)} corruptions)"
        if markers < trials:
            text += f", {markers} marker stage{'s' if markers > 1 else ''} for {trials} trials (shared)"
        if baselines:
            text += f", the corruptions {baselines} more time{'s' if baselines > 1 else ''} as the uncontrolled baseline"
        return f"{text}, ~{total / 60:.0f} min for the sweep, one trial at a time, without early stopping"

    def corruption_steps_per_trial(self) -> list[float]:
        """Each fine-tune corruption's steps, averaged over the grid's `corruption_steps` when it
        is an axis; a drift corruption's replies in step-times (`ESTIMATED_DRIFT_REPLY_STEPS`)."""
        axis = self.grid.corruption_steps
        return [self.drift_replies(c) * self.ESTIMATED_DRIFT_REPLY_STEPS / self.CORRUPTION_STEP_FACTOR
                if c.kind == "drift" else sum(axis) / len(axis) if axis else c.steps for c in self.corruptions]

    @staticmethod
    def drift_replies(corruption: CorruptionConfig) -> int:
        """Replies a drift corruption generates: each conversation's turns and probes (x2 capped)."""
        probes = len(corruption.turns) * len(corruption.positions) * 2
        per_domain = corruption.conversations * (max(corruption.turns) - 1 + probes)
        return per_domain * len(corruption.domains) * (2 if corruption.capped else 1)

    def baseline_count(self) -> int:
        """Uncontrolled baselines a sweep with control objectives trains: one per seed and
        corruption strength (trials that share one read it, `trial.baseline_stage`)."""
        if not set(self.grid.objective) & set(CONTROL_OBJECTIVES):
            return 0
        return len(self.grid.seed) * max(1, len(self.grid.corruption_lr)) * max(1, len(self.grid.corruption_steps))

    def marker_stage_count(self) -> int:
        """Trials that differ only in corruption knobs share one marker stage."""
        if self.search.type == "optuna":
            return self.trial_count()
        knobs = knobs_for(type(self.grid))
        return len({tuple(knobs(**point).marker_knobs().values()) for point in self.trials()})
