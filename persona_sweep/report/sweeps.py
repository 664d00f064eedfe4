"""What a report reads: a sweep's trials as MLflow holds them (never Tune's files, never a rerun).

A sweep is found by its record under the home (which names its tracking URI), or, with a
tracking URI, by its MLflow experiment alone: the parent run carries the sweep record as an
artifact (`sweep/record.json`), so a laptop with only the tracking URI can report.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from persona_sweep import names, tracking
from persona_sweep.errors import SweepError
from persona_sweep.sections import GridSweep
from persona_sweep.sweep_file import validate
from persona_sweep.sweep_record import SweepRecord, home, record_path


@dataclass
class Trial:
    trial_id: str
    run_id: str
    status: str
    knobs: dict  # grid axes, typed as in the sweep file
    metrics: dict[str, float]
    error: str | None = None


@dataclass
class Sweep:
    name: str
    spec: GridSweep
    sweep_run: tracking.SweepRun
    trials: list[Trial]
    running: bool
    read_at: str
    parent_metrics: dict[str, float] = field(default_factory=dict)  # what the sweep as a whole measured
    _histories: dict = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        return self.spec.kind

    def axes(self) -> dict[str, list]:
        """The grid's axes, and each searched setting with the values its trials sampled."""
        sampled = {key: sorted({t.knobs[key] for t in self.trials if key in t.knobs}) for key in self.spec.search.ranges}
        return self.spec.axes() | sampled

    def varied_axes(self, with_seed: bool = False) -> list[str]:
        """The axes with more than one value (seeds aside: what tells configurations apart)."""
        return [axis for axis, values in self.axes().items() if len(values) > 1 and (with_seed or axis != "seed")]

    def metric(self, name: str) -> str:
        """`scheduler` stands for the sweep's scheduler metric (what ASHA ranks on)."""
        return self.spec.scheduler.metric if name == "scheduler" else name

    def history(self, trial: Trial, metric: str) -> list[tuple[int, float]]:
        key = (trial.run_id, metric)
        if key not in self._histories:
            points = self.sweep_run.tracking.client().get_metric_history(trial.run_id, metric)
            self._histories[key] = sorted((point.step, point.value) for point in points)
        return self._histories[key]


def read_sweep(name: str, tracking_uri: str | None = None) -> Sweep:
    """The sweep `name`: from this home's record, or from `tracking_uri` (its MLflow experiment)."""
    sweep_run, spec = locate(name, tracking_uri)
    client = sweep_run.tracking.client()
    runs = tracking.child_runs(sweep_run.tracking, sweep_run.experiment_id)
    trials = [to_trial(run, spec) for run in runs]
    parent = client.get_run(sweep_run.parent_run_id)
    running = parent.info.status == "RUNNING" or any(t.status == names.RUNNING for t in trials)
    return Sweep(name, spec, sweep_run, sorted(trials, key=lambda t: t.trial_id), running,
                 time.strftime("%Y-%m-%d %H:%M:%S %Z"), dict(parent.data.metrics))


def locate(name: str, tracking_uri: str | None) -> tuple[tracking.SweepRun, GridSweep]:
    if tracking_uri is None and record_path(name).is_file():
        record = SweepRecord.load(name)
        return record.sweep_run, record.config
    where = tracking.Tracking(tracking_uri or tracking.default_uri(home()))
    parent = parent_run(where, name)
    if parent is None:
        raise SweepError(f"no sweep named '{name}' under {home()} or in MLflow at {where.uri} "
                         "(see: persona-sweep list; a sweep on a tracking server: --tracking-uri URI)")
    return (tracking.SweepRun(where, parent.info.experiment_id, parent.info.run_id),
            recorded_spec(where, parent.info.run_id, name))


def parent_run(where: tracking.Tracking, name: str):
    """The sweep's parent run, in whichever experiment (`tracking.experiment` may rename it)."""
    client = where.client()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.{names.SWEEP_TAG} = '{name}'", max_results=1)
    return runs[0] if runs else None


def recorded_spec(where: tracking.Tracking, parent_run_id: str, name: str) -> GridSweep:
    return validate(recorded_fields(where, parent_run_id, name)["spec"])


def recorded_fields(where: tracking.Tracking, parent_run_id: str, name: str) -> dict:
    """The sweep record its parent run carries."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = where.client().download_artifacts(parent_run_id, tracking.RECORD_ARTIFACT, folder)
        except Exception:  # MLflow raises several types for a missing artifact
            raise SweepError(f"sweep '{name}' at {where.uri} carries no {tracking.RECORD_ARTIFACT} "
                             "(started by an older persona-sweep)") from None
        return json.loads(Path(path).read_text())


def record_on_server(name: str, uri: str) -> SweepRecord:
    """The sweep's record from its tracking server alone (a laptop without the cluster's home).
    The URI it was reached by replaces the recorded one, which may be the cluster's own name
    for the server."""
    where = tracking.Tracking(uri)
    parent = parent_run(where, name)
    if parent is None:
        raise SweepError(f"no sweep named '{name}' in MLflow at {tracking.shown_uri(uri)}")
    return SweepRecord.from_fields(recorded_fields(where, parent.info.run_id, name), name, reached_by=where)


def to_trial(run, spec: GridSweep) -> Trial:
    tags, params = run.data.tags, run.data.params
    knobs = {axis: typed(params[axis], values) for axis, values in spec.axes().items() if axis in params}
    knobs |= {key: spec.sampled(key, params[key]) for key in spec.search.ranges if key in params}
    return Trial(tags[names.TRIAL_ID], run.info.run_id, tags.get(names.TRIAL_STATUS, names.RUNNING), knobs,
                 dict(run.data.metrics), tags.get(names.ERROR))


def typed(text: str, values: list):
    """A param as the grid wrote it (MLflow keeps params as text)."""
    return next((value for value in values if str(value) == text), text)
