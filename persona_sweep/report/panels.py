"""Panels as data: `dashboards/panels/*.yaml` say what to draw; this module computes each
panel's numbers from the sweeps (one plain dict per panel, embedded in the page as JSON and
drawn by `figures.py`).

A panel file has `title`, `kinds` (sweep kinds it applies to), `type` (bars | heatmap | lines |
curves | front | scatter | table), `metrics` (names; `scheduler` = the sweep's scheduler metric, `summary`
= the metrics `status` shows) or `metric_pattern` (a regex whose group names the bar), and the
axes: `x` (a grid axis, `configuration`, `metric` or `train_step`), `y`, `facet`, plus `range`
and `log_x` for the drawing. A `scatter` reads the parent run, what the sweep measured as a
whole: `<metric>_<point>` on x (one plot per metric) against `<y_metric>_<point>`, one point per
<point> both have, each plot titled with its entry of `correlations`. Adding a panel is adding a
file.

Seeds are aggregated per configuration (every other grid axis equal): the mean and a 95%
interval: a t-interval for 3 or more seeds, the min-max range for fewer (say so: `interval`).
Each point keeps its seeds' values and trial ids (shown on hover, checked by the tests).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from persona_sweep import names
from persona_sweep.report.sweeps import Sweep, Trial
from persona_sweep.sections import knob_text

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
TYPES = ("bars", "heatmap", "lines", "curves", "front", "scatter", "table")


@dataclass
class Panel:
    id: str
    title: str
    kinds: list[str]
    type: str
    metrics: list[str] = field(default_factory=list)
    metric_pattern: str | None = None
    x: str = "configuration"
    y: str | None = None
    facet: str | None = None
    range: list[float] | None = None
    log_x: bool = False
    x_label: str | None = None  # the x axis title, where `x` is not itself a good one
    y_metric: str | None = None  # scatter: the parent run's `<y_metric>_<point>`
    correlations: list[str] = field(default_factory=list)  # scatter: one parent-run metric per plot


def load_panels(folder: Path = DASHBOARDS / "panels") -> list[Panel]:
    panels = []
    for path in sorted(folder.glob("*.yaml")):
        fields = yaml.safe_load(path.read_text())
        panel = Panel(id=path.stem.split("-", 1)[-1], **fields)
        if panel.type not in TYPES:
            raise ValueError(f"{path}: type must be one of {', '.join(TYPES)}, got '{panel.type}'")
        panels.append(panel)
    return panels


# ---- which panels a report gets --------------------------------------------------------------

def panel_data(panel: Panel, sweeps: list[Sweep]) -> tuple[dict | None, str | None]:
    """(the panel's data, None), or (None, the one-line reason it is left out)."""
    kinds = {sweep.kind for sweep in sweeps}
    if not kinds & set(panel.kinds):
        return None, None  # not meant for this kind of sweep: no note either
    missing = missing_inputs(panel, sweeps)
    if missing:
        return None, f"left out '{panel.title}': {missing}"
    series = BUILDERS[panel.type](panel, [s for s in sweeps if s.kind in panel.kinds])
    return {"id": panel.id, "title": panel.title, "type": panel.type, "x": panel.x, "y": panel.y,
            "facet": panel.facet, "range": panel.range, "log_x": panel.log_x, "x_label": panel.x_label or panel.x,
            "series": series}, None


def missing_inputs(panel: Panel, sweeps: list[Sweep]) -> str | None:
    for sweep in sweeps:
        for axis in (panel.x, panel.y, panel.facet):
            if axis and axis not in ("configuration", "metric", names.TRAIN_STEP) and axis not in sweep.axes():
                return f"sweep '{sweep.name}' has no grid axis {axis}"
        if panel.type == "scatter":
            if not any(paired(sweep.parent_metrics, metric, panel.y_metric) for metric in panel.metrics):
                return f"sweep '{sweep.name}' has no {' or '.join(panel.metrics)} on its parent run"
        elif panel.type != "table" and not panel_metrics(panel, sweep):
            wanted = " or ".join(panel.metrics) or panel.metric_pattern
            return f"sweep '{sweep.name}' has no value for {wanted} (NaN or never logged)"
    return None


def panel_metrics(panel: Panel, sweep: Sweep) -> list[str]:
    """The metrics of `panel` that some trial of `sweep` logged a number for (survival is NaN
    where the marker never appeared: an all-NaN panel would be drawn empty)."""
    logged = {key for trial in sweep.trials for key, value in trial.metrics.items() if not math.isnan(value)}
    if panel.metric_pattern:
        return sorted(key for key in logged if re.match(panel.metric_pattern, key))
    wanted = [m for name in panel.metrics for m in
              (sweep.spec.summary_metrics() if name == "summary" else [sweep.metric(name)])]
    return [metric for metric in dict.fromkeys(wanted) if metric in logged]


# ---- seeds -----------------------------------------------------------------------------------

def aggregate(values: list[tuple[Trial, float]], metric: str) -> dict:
    """Mean and 95% interval over seeds (NaN values are shown, not averaged); a single trial's
    value with the interval it logged itself (`<metric>_lo` / `_hi`: a bootstrap or Wilson one)."""
    finite = [value for _, value in values if not math.isnan(value)]
    point = {"values": [{"trial_id": t.trial_id, "seed": t.knobs.get("seed"), "value": clean(v)} for t, v in values]}
    if not finite:
        return point | {"mean": None, "lo": None, "hi": None, "interval": "none"}
    mean = sum(finite) / len(finite)
    own = values[0][0].metrics if len(values) == 1 else {}
    if f"{metric}_lo" in own and f"{metric}_hi" in own:
        return point | {"mean": mean, "lo": own[f"{metric}_lo"], "hi": own[f"{metric}_hi"], "interval": "logged"}
    if len(finite) < 3:
        return point | {"mean": mean, "lo": min(finite), "hi": max(finite), "interval": "min-max"}
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    half = stats.t.ppf(0.975, len(finite) - 1) * sd / math.sqrt(len(finite))
    return point | {"mean": mean, "lo": mean - half, "hi": mean + half, "interval": "t"}


def clean(value: float) -> float | None:
    """JSON has no NaN: a metric that could not be computed is null."""
    return None if value is None or math.isnan(value) else value


def configuration(trial: Trial, sweep: Sweep, leave_out: tuple) -> str:
    """The trial's grid point without its seed (and without the panel's own axes)."""
    axes = [axis for axis in sweep.varied_axes() if axis not in leave_out]
    return " ".join(f"{axis}={knob_text(trial.knobs.get(axis))}" for axis in axes) or "all trials"


def grouped(sweep: Sweep, metric: str, key) -> dict:
    """Trials that logged `metric`, grouped by `key(trial)` (seeds of one configuration together),
    in grid order (trial ids follow it)."""
    groups: dict = {}
    for trial in sweep.trials:
        if metric in trial.metrics:
            groups.setdefault(key(trial), []).append((trial, trial.metrics[metric]))
    return groups


def ordered(values) -> list:
    """Axis values in their natural order (numbers as numbers)."""
    return sorted(dict.fromkeys(values), key=ordered_key)


def series_name(metric: str, sweep: Sweep, sweeps: list[Sweep], extra: str = "") -> str:
    parts = [metric, extra, f"({sweep.name})" if len(sweeps) > 1 else ""]
    return " ".join(part for part in parts if part)


# ---- panel types -----------------------------------------------------------------------------

def bars(panel: Panel, sweeps: list[Sweep]) -> list[dict]:
    """One series per metric (per sweep), one bar per configuration; with `x: metric` one series
    per configuration, one bar per metric (its pattern group: leakage per persona)."""
    series = []
    for sweep in sweeps:
        config_of = lambda t: configuration(t, sweep, ())  # noqa: E731 (sweep is the loop's)
        by_config: dict[str, list] = {}
        for metric in panel_metrics(panel, sweep):
            groups = grouped(sweep, metric, config_of)
            if panel.x == "metric":
                for config, group in groups.items():
                    by_config.setdefault(config, []).append({"x": bar_label(panel, metric), "metric": metric,
                                                             **aggregate(group, metric)})
            else:
                points = [{"x": config, **aggregate(group, metric)} for config, group in groups.items()]
                series.append({"name": series_name(metric, sweep, sweeps), "sweep": sweep.name, "metric": metric,
                               "points": points})
        series += [{"name": series_name(config, sweep, sweeps), "sweep": sweep.name,
                    "points": sorted(points, key=lambda point: point["x"])}
                   for config, points in sorted(by_config.items())]
    return series


def bar_label(panel: Panel, metric: str) -> str:
    """The pattern's group; a persona of the bank is labelled with its group, and held out when
    no method trains on it (`near: search_bot (held out)`), so bars sort by group."""
    from persona_sweep.data import personas
    from persona_sweep.methods.sft import TRAINING_PERSONAS

    match = re.match(panel.metric_pattern, metric) if panel.metric_pattern else None
    label = match.group(1) if match and match.groups() else metric
    persona = personas().get(label)
    if persona is None:
        return label
    return f"{persona.group}: {label}" + ("" if label in TRAINING_PERSONAS else " (held out)")


def heatmap(panel: Panel, sweeps: list[Sweep]) -> list[dict]:
    """One grid of cells over (y, x) per metric, facet value and setting of the other varied
    axes (never two configurations in one cell); seeds aggregated per cell."""
    series = []
    for sweep in sweeps:
        own_axes = (panel.x, panel.y, panel.facet)
        for metric in panel_metrics(panel, sweep):
            cells = grouped(sweep, metric, lambda t: (t.knobs.get(panel.facet), configuration(t, sweep, own_axes),
                                                      t.knobs.get(panel.y), t.knobs.get(panel.x)))
            grids = dict.fromkeys((facet, rest) for facet, rest, _, _ in cells)
            for facet, rest in sorted(grids, key=lambda key: ordered_key(key[0])):  # the rest in grid order
                points = [{"x": x, "y": y, **aggregate(group, metric)}
                          for (f, r, y, x), group in cells.items() if (f, r) == (facet, rest)]
                extra = f"{panel.facet}={facet}" + ("" if rest == "all trials" else f" {rest}")
                series.append({"name": series_name(metric, sweep, sweeps, extra), "sweep": sweep.name,
                               "metric": metric, "facet": facet, "points": points})
    return series


def ordered_key(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def lines(panel: Panel, sweeps: list[Sweep]) -> list[dict]:
    """One line per metric and configuration (other axes), along the grid axis `x`."""
    if panel.x == "metric":
        return metric_lines(panel, sweeps)
    series = []
    for sweep in sweeps:
        for metric in panel_metrics(panel, sweep):
            groups = grouped(sweep, metric, lambda t: (configuration(t, sweep, (panel.x,)), t.knobs.get(panel.x)))
            for config in dict.fromkeys(config for config, _ in groups):
                points = sorted(({"x": x, **aggregate(group, metric)} for (c, x), group in groups.items() if c == config),
                                key=lambda point: point["x"])
                extra = "" if config == "all trials" else config
                series.append({"name": series_name(metric, sweep, sweeps, extra), "sweep": sweep.name,
                               "metric": metric, "points": points})
    return series


def metric_lines(panel: Panel, sweeps: list[Sweep]) -> list[dict]:
    """`x: metric`: the pattern's first group names the line, its second is the x value (a number
    in the metric's name: a steering scale); or, with a group named `x`, that one is the x value
    and the other groups, joined, name the line (`therapy end capped`). One line per name and
    sweep, each point over all the sweep's trials: the sweep's average behaviour, its trials on
    hover."""
    series = []
    for sweep in sweeps:
        by_line: dict[str, list] = {}
        for metric in panel_metrics(panel, sweep):
            line, x = line_and_x(re.match(panel.metric_pattern, metric))
            group = [(trial, trial.metrics[metric]) for trial in sweep.trials if metric in trial.metrics]
            by_line.setdefault(line, []).append({"x": float(x), "metric": metric, **aggregate(group, metric)})
        series += [{"name": series_name(line, sweep, sweeps), "sweep": sweep.name,
                    "points": sorted(points, key=lambda point: point["x"])} for line, points in by_line.items()]
    return series


def line_and_x(match) -> tuple[str, str]:
    named = match.groupdict()
    if "x" not in named:
        return match.groups()
    parts = [value.strip("_") for name, value in named.items() if name != "x" and value]
    return " ".join(parts), named["x"]


def curves(panel: Panel, sweeps: list[Sweep]) -> list[dict]:
    """Every trial's history of the metric; `stopped` marks where ASHA stopped it."""
    series = []
    for sweep in sweeps:
        for metric in panel_metrics(panel, sweep):
            for trial in sweep.trials:
                history = sweep.history(trial, metric)
                if history:
                    series.append({"name": series_name(trial.trial_id, sweep, sweeps), "sweep": sweep.name,
                                   "metric": metric, "trial_id": trial.trial_id, "status": trial.status,
                                   "stopped": trial.status == names.STOPPED_EARLY,
                                   "points": [{"x": step, "mean": clean(value)} for step, value in history]})
    return series


def front(panel: Panel, sweeps: list[Sweep]) -> list[dict]:
    """Every trial at (first metric, second metric); `on_front`: no other trial is at least as
    good on both (both maximised)."""
    from persona_sweep.sfp.experiments import pareto_optimal

    x_metric, y_metric = panel.metrics[:2]
    series = []
    for sweep in sweeps:
        trials = [t for t in sweep.trials if x_metric in t.metrics and y_metric in t.metrics]
        optimal = pareto_optimal([t.metrics for t in trials], x_metric, y_metric)
        points = [{"x": clean(t.metrics[x_metric]), "mean": clean(t.metrics[y_metric]), "trial_id": t.trial_id,
                   "label": configuration(t, sweep, ()), "on_front": on_front}
                  for t, on_front in zip(trials, optimal)]
        series.append({"name": series_name("trials", sweep, sweeps), "sweep": sweep.name,
                       "x_metric": x_metric, "metric": y_metric, "points": points})
    return series


def scatter(panel: Panel, sweeps: list[Sweep]) -> list[dict]:
    """Per sweep and metric: the points both `<metric>_<point>` and `<y_metric>_<point>` have on
    the parent run, labelled with <point>, and the plot's correlation with its interval."""
    series = []
    for sweep in sweeps:
        for index, metric in enumerate(panel.metrics):
            points = [{"x": x, "mean": y, "label": label}
                      for label, (x, y) in paired(sweep.parent_metrics, metric, panel.y_metric).items()]
            correlation = panel.correlations[index] if index < len(panel.correlations) else None
            series.append({"name": series_name(metric, sweep, sweeps, correlation_text(sweep, correlation)),
                           "sweep": sweep.name, "x_metric": metric, "metric": panel.y_metric, "points": points})
    return series


def paired(metrics: dict[str, float], x_prefix: str, y_prefix: str) -> dict[str, tuple[float, float]]:
    """{point: (x, y)} for every `<x_prefix>_<point>` with a `<y_prefix>_<point>` (finite both)."""
    found = {}
    for key, x in metrics.items():
        label = key.removeprefix(f"{x_prefix}_")
        y = metrics.get(f"{y_prefix}_{label}")
        if key != label and y is not None and not math.isnan(x) and not math.isnan(y):
            found[label] = (x, y)
    return dict(sorted(found.items()))


def correlation_text(sweep: Sweep, metric: str | None) -> str:
    if metric is None or metric not in sweep.parent_metrics:
        return ""
    value = sweep.parent_metrics[metric]
    if math.isnan(value):
        return f"{metric} n/a (nothing to rank: the same value at every point)"
    low, high = (sweep.parent_metrics.get(f"{metric}_{end}", math.nan) for end in ("lo", "hi"))
    return f"{metric} {value:+.2f} [{low:+.2f}, {high:+.2f}]"


def table(panel: Panel, sweeps: list[Sweep]) -> list[dict]:
    """Every trial (errored ones too), best first by the scheduler metric, with its status."""
    series = []
    for sweep in sweeps:
        metrics = panel_metrics(panel, sweep)
        rank_by = sweep.metric("scheduler")
        maximise = sweep.spec.scheduler.mode == "max"

        def best_first(trial: Trial):
            value = trial.metrics.get(rank_by, math.nan)
            return (math.isnan(value), -value if maximise else value, trial.trial_id)

        rows = [{"trial_id": t.trial_id, "status": t.status, "knobs": {a: t.knobs.get(a) for a in sweep.varied_axes(with_seed=True)},
                 "metrics": {m: clean(t.metrics[m]) if m in t.metrics else None for m in metrics},
                 "error": t.error} for t in sorted(sweep.trials, key=best_first)]
        series.append({"name": sweep.name, "sweep": sweep.name, "metrics": metrics, "rows": rows})
    return series


BUILDERS = {"bars": bars, "heatmap": heatmap, "lines": lines, "curves": curves, "front": front,
            "scatter": scatter, "table": table}
