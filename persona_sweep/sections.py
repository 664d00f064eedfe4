"""What every kind's sweep file shares: the base of all sections, the scheduler, search,
resources and tracking sections, and `GridSweep`, whose grid's product is the trial list.

Configuration is data: these modules import nothing that runs a trial (an import-linter
contract in pyproject.toml holds that).
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, ClassVar, Literal
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
