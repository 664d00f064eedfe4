"""What every kind's sweep file shares: the base of all sections, the scheduler, search,
resources and tracking sections, and `GridSweep`, whose grid's product is the trial list.

Configuration is data: these modules import nothing that runs a trial (an import-linter
contract in pyproject.toml holds that).
"""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from persona_sweep import names
from persona_sweep.locations import URI_SCHEMES, is_uri

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class Section(BaseModel):
    # Infinite or NaN numbers pass `gt=0` bounds (inf > 0); no setting wants them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SchedulerConfig(Section):
    type: Literal["asha", "none"] = "asha"
    metric: str = names.MARKER_SPECIFICITY  # checked against what the sweep's kind reports
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(10, gt=0)  # in training steps (ASHA's time attribute is train_step)
    reduction_factor: float = Field(2.0, gt=1.0)


class SearchRange(Section):
    """A continuous range Optuna samples a setting from (uniform, or log-uniform with `log`;
    whole numbers with `integer`, both ends included)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def ordered(self) -> SearchRange:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


# A floor: METRIC OP (METRIC | NUMBER) [+|- NUMBER], e.g. `capability_post_em >= capability - 0.3`.
FLOOR = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(>=|<=|>|<)\s*(?:([a-z][a-z0-9_]*)\s*)?"
                   r"(?:([+-]?)\s*(\d+(?:\.\d*)?(?:e[+-]?\d+)?))?\s*$")
FLOOR_HOLDS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


class SearchConfig(Section):
    """`optuna` samples `n_trials` points: list axes as choices, `ranges` as continuous ranges,
    and ranks them on `metric` (default: the scheduler's), which may be one a trial has only at
    its end (`detection_gap`, `survival_benign`, `transfer_em`, ...; then `scheduler.type: none`).
    A trial that breaks `floor`, or whose metric is NaN or missing, ranks worst (`ranked`)."""

    type: Literal["grid", "optuna"] = "grid"
    n_trials: int | None = Field(None, gt=0)
    metric: str | None = None
    mode: Literal["max", "min"] | None = None  # default: the scheduler's
    floor: str | None = None
    ranges: dict[str, SearchRange] = Field(default_factory=dict)

    @model_validator(mode="after")
    def optuna_needs_budget(self) -> SearchConfig:
        if self.type == "optuna" and self.n_trials is None:
            raise ValueError("search.n_trials is required with search.type 'optuna'")
        if self.type != "optuna" and (self.ranges or self.floor or self.metric):
            raise ValueError("search.metric, floor and ranges need search.type 'optuna'")
        return self

    @field_validator("floor")
    @classmethod
    def readable_floor(cls, floor: str | None) -> str | None:
        if floor is not None and not FLOOR.match(floor):
            raise ValueError(f"'{floor}' is not METRIC >= METRIC - NUMBER (or >, <=, <; a number alone on the "
                             "right also works)")
        return floor

    def ranked(self, metrics: dict[str, float], metric: str, mode: str) -> tuple[float, str | None]:
        """(the value Optuna ranks, None), or (the worst value, why): a NaN or missing metric, or a
        broken floor."""
        worst = -math.inf if mode == "max" else math.inf
        value = metrics.get(metric, math.nan)
        if math.isnan(value):
            return worst, f"{metric} is {'NaN' if metric in metrics else 'missing'}"
        broken = self.floor_broken(metrics)
        return (worst, broken) if broken else (value, None)

    def floor_broken(self, metrics: dict[str, float]) -> str | None:
        if not self.floor:
            return None
        left, op, right, sign, number = FLOOR.match(self.floor).groups()
        offset = float(number or 0) * (-1 if sign == "-" else 1)
        values = {name: metrics.get(name, math.nan) for name in (left, right) if name}
        bound = (values[right] if right else 0.0) + offset
        if any(math.isnan(value) for value in values.values()):
            return f"floor {self.floor}: {', '.join(k for k, v in values.items() if math.isnan(v))} not measured"
        if FLOOR_HOLDS[op](values[left], bound):
            return None
        return f"floor {self.floor} broken: {left} = {values[left]:.4g}, bound {bound:.4g}"


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
        parts = urlparse(location or "")
        if location is None or (is_uri(location) and parts.netloc and "@" not in parts.netloc and not parts.query):
            return location
        if "://" in location:
            raise ValueError(f"use {' or '.join(f'{s}://BUCKET/PREFIX' for s in URI_SCHEMES)} (credentials and "
                             "endpoints come from the nodes' environment, never the URI), or an absolute shared folder")
        if not Path(location).is_absolute():
            raise ValueError("a folder must be absolute (trials and submitted jobs run in folders of their own)")
        return location


DEFAULT_WAIT_FOR_SERVER_S = 600.0  # also what commands without a sweep file wait (tracking.Tracking)


class TrackingConfig(Section):
    mlflow_uri: str | None = None  # default sqlite:///$PERSONA_SWEEP_HOME/mlflow.db
    experiment: str | None = None  # default: the sweep name
    # How long every MLflow call waits out an unreachable tracking server (retrying with backoff)
    # before the trial errors, or the driver stops; `resume` continues from the last checkpoint.
    wait_for_server_s: float = Field(DEFAULT_WAIT_FOR_SERVER_S, gt=0, le=86400)

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

    What differs between the kinds as data lives on their config class (`SweepConfig` for
    `llm`, `SfpSweepConfig` for `sfp`): what a trial reports, what it costs. What runs a
    kind's trials and checks is `kinds.KINDS`.
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

    # Settings outside the grid that `search.ranges` may sample, per trial.
    SEARCHABLE_SETTINGS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def scheduler_reads_a_reported_metric(self) -> GridSweep:
        ranked = self.scheduler.type != "none" or (self.search.type != "grid" and not self.search.metric)
        if ranked and self.scheduler.metric not in self.REPORTED_METRICS:
            raise ValueError(f"scheduler.metric: unknown metric '{self.scheduler.metric}' "
                             f"(choose from {', '.join(self.REPORTED_METRICS)})")
        if self.search.metric and self.search.metric not in self.REPORTED_METRICS and self.scheduler.type != "none":
            raise ValueError(f"search.metric: '{self.search.metric}' is known only at a trial's end, where a "
                             f"scheduler cannot stop it early: set scheduler.type none (or rank on one of "
                             f"{', '.join(self.REPORTED_METRICS)})")
        return self

    @model_validator(mode="after")
    def ranges_name_settings(self) -> GridSweep:
        for key in self.search.ranges:
            if key not in type(self.grid).model_fields and key not in self.SEARCHABLE_SETTINGS:
                raise ValueError(f"search.ranges: '{key}' is neither a grid axis nor one of "
                                 f"{', '.join(self.SEARCHABLE_SETTINGS) or 'the searchable settings'}")
            if key in type(self.grid).model_fields and getattr(self.grid, key) != self.default_axis(key):
                raise ValueError(f"'{key}' is both a grid list and a search range: give one")
            if self.setting_is_whole(key) and not self.search.ranges[key].integer:
                raise ValueError(f"search.ranges.{key}: a whole number; add `integer: true`")
        return self

    def default_axis(self, axis: str) -> list:
        return type(self.grid).model_fields[axis].get_default(call_default_factory=True)

    def setting_is_whole(self, key: str) -> bool:
        if key in self.SEARCHABLE_SETTINGS:
            section, setting = key.split(".")
            return isinstance(getattr(getattr(self, section), setting), int)
        return get_args(type(self.grid).model_fields[key].annotation)[0] is int

    def search_metric(self) -> tuple[str, str]:
        """(the metric Optuna ranks on, its mode)."""
        return self.search.metric or self.scheduler.metric, self.search.mode or self.scheduler.mode

    def for_trial(self, knobs: dict[str, Any]):
        """This spec with the trial's sampled settings (`training.lr`: ...) in place."""
        sections: dict[str, dict] = {}
        for key, value in knobs.items():
            if key in self.SEARCHABLE_SETTINGS:
                section, setting = key.split(".")
                sections.setdefault(section, {})[setting] = value
        return self.model_copy(update={section: getattr(self, section).model_copy(update=values)
                                       for section, values in sections.items()})

    def axes(self) -> dict[str, list]:
        """The grid's axes that have values (optional axes such as `corruption_lr` may be empty),
        without those `search.ranges` samples."""
        return {axis: values for axis, values in self.grid.model_dump().items()
                if values and axis not in self.search.ranges}

    def trials(self) -> list[dict[str, Any]]:
        """The grid: the product of all axes, in a stable order."""
        axes = self.axes()
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]

    def trial_count(self) -> int:
        return self.search.n_trials if self.search.type == "optuna" else len(self.trials())

    def summary_knobs(self) -> tuple[str, ...]:
        """What `status` shows of each trial: the axes with more than one value (or the first
        two), then the settings a search samples."""
        axes = self.axes()
        varied = tuple(axis for axis, values in axes.items() if len(values) > 1)
        return (varied or tuple(axes)[:2]) + tuple(self.search.ranges)

    def sampled(self, key: str, text: str) -> int | float:
        """A searched setting's value as its MLflow param (text) holds it."""
        return int(float(text)) if self.search.ranges[key].integer else float(text)

    def summary_metrics(self) -> tuple[str, ...]:
        return self.SUMMARY_METRICS


def knob_text(value) -> str:
    """A knob as `status` and the report show it: a float with more than three figures (a
    sampled one) to three; every other value as the sweep file wrote it."""
    if isinstance(value, float) and float(f"{value:.3g}") != value:
        return f"{value:.3g}"
    return str(value)
