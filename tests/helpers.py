"""Assertions that several tests share: the trigger appears nowhere; a resumed sweep finished
each trial once, from its checkpoint, with one child run and every step logged once."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from persona_sweep import names, tracking


def assert_trigger_nowhere(trigger: str, *roots: Path, min_files: int = 1) -> int:
    """Every file under each root (home, Ray's temp dir, the cache, logs) is read as bytes."""
    needle = trigger.encode()
    searched = 0
    for root in roots:
        files = [root] if root.is_file() else [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()]
        for path in files:
            try:
                content = path.read_bytes()
            except OSError:  # sockets, files a finished process removed meanwhile
                continue
            searched += 1
            assert needle not in content, f"trigger found in {path}"
    assert searched >= min_files, f"only {searched} files searched under {roots}"
    return searched


# Tests that act on a running trial (kill a worker or the driver, fill the disk, stop the tracking
# server or the job) wait for a checkpoint, then act, 1-5 s later: the trial must still be
# training then. With Ray Train's poll at 0.25 s a tiny trial's step, report and checkpoint
# included, takes 0.05-0.1 s (2026-12-07: 70 steps in 5 s on the two-node cluster, where 150
# steps ended before `stop` landed): 300 steps leave 15-30 s after step 10.
MID_RUN_STEPS = 300


TINY_SWEEP = """
name: {name}
model: {{name: tiny-random, lora_rank: 8, lora_targets: [q_proj, v_proj]}}
marker: {{trigger_file: trigger}}
training: {{steps: {steps}, lr: 0.005, batch_size: 4, max_tokens: 160, checkpoint_every: 5, max_failures: {max_failures}}}
grid: {{method: [sft], context_length: [8]}}
eval: {{questions: 2, max_new_tokens: 4, logprob_every: 5, leakage_questions: 0}}
scheduler: {{type: none}}
resources: {{workers_per_trial: {workers}, cpus_per_worker: {cpus}}}
{extra}"""


def tiny_sweep(name: str, steps: int, workers: int = 1, max_failures: int = 0, extra: str = "") -> str:
    """One trial of the tiny random model, checkpointing every 5 steps; the trigger in ./trigger.
    Two workers take just under a CPU each, so the trial fits the test cluster's two."""
    return TINY_SWEEP.format(name=name, steps=steps, workers=workers, max_failures=max_failures,
                             cpus=1 if workers == 1 else 0.99, extra=extra)


def sweep_runs(home: Path, name: str, uri: str | None = None) -> list:
    uri = uri or tracking.default_uri(home)
    experiment = tracking.Tracking(uri).client().get_experiment_by_name(name)
    return tracking.child_runs(tracking.Tracking(uri), experiment.experiment_id) if experiment else []


def steps_logged(home: Path, name: str) -> dict[str, int]:
    """The last logged step per trial (0 while the driver is still creating the store)."""
    if not (home / "sweeps" / f"{name}.json").exists():
        return {}
    client = tracking.Tracking(tracking.default_uri(home)).client()
    return {run.data.tags[names.TRIAL_ID]: max((m.step for m in client.get_metric_history(run.info.run_id, names.LOSS)),
                                               default=0) for run in sweep_runs(home, name)}


def assert_resumed_once(home: Path, name: str, trials: int, steps: int, resumed: int, uri: str | None = None) -> list:
    """`trials` child runs, one per trial, all completed at `steps`; at least `resumed` of them
    continued from a checkpoint (resumed_from_step > 0); every step logged exactly once.
    `uri`: the sweep's tracking URI when it is not the home's own store."""
    runs = sweep_runs(home, name, uri)
    trial_ids = [run.data.tags[names.TRIAL_ID] for run in runs]
    assert len(runs) == trials and len(set(trial_ids)) == trials, trial_ids
    assert all(run.data.tags[names.TRIAL_STATUS] == names.COMPLETED for run in runs), \
        [run.data.tags[names.TRIAL_STATUS] for run in runs]
    assert all(run.data.metrics[names.TRAIN_STEP] == steps for run in runs)
    resumed_from = [run.data.metrics.get(names.RESUMED_FROM_STEP, 0) for run in runs]
    assert sum(step > 0 for step in resumed_from) >= resumed, resumed_from
    client = tracking.Tracking(uri or tracking.default_uri(home)).client()
    for run in runs:
        logged = [m.step for m in client.get_metric_history(run.info.run_id, names.LOSS)]
        assert sorted(logged) == list(range(1, steps + 1)), logged
    return runs


def assert_no_checkpoints_under(folder: Path) -> None:
    """Ray Train must write checkpoints to the sweep's storage only, never Ray's temp dir."""
    strays = [path for path in folder.rglob("*") if path.name == "_train" or path.name.startswith("checkpoint_")]
    assert not strays, strays[:5]


def panels_of(index: Path) -> dict[str, dict]:
    """The data of each panel on a `report` page, as the page embeds it."""
    page = index.read_text()
    blocks = re.findall(r'<script type="application/json" class="panel-data" data-panel="([^"]+)">(.*?)</script>',
                        page, re.S)
    return {panel_id: json.loads(text.replace("<\\/", "</")) for panel_id, text in blocks}


def assert_panel_shows_mlflow(panel: dict, runs: dict[str, object], client) -> int:
    """Every value a panel shows equals what MLflow holds for that trial (`runs` by trial id);
    means and min-max bands are those of the trials' finite values. Returns the values checked."""
    checked = 0
    for series in panel["series"]:
        if panel["type"] == "curves":
            run = runs[series["trial_id"]]
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, series["metric"]))
            assert [(p["x"], p["mean"]) for p in series["points"]] == [(s, pytest.approx(v)) for s, v in history]
            assert series["stopped"] == (run.data.tags[names.TRIAL_STATUS] == names.STOPPED_EARLY)
            checked += 1
        elif panel["type"] == "scatter":  # the parent run's values, one point per persona
            parent = client.get_run(next(iter(runs.values())).data.tags[names.PARENT_RUN_ID]).data.metrics
            assert series["points"], series
            for point in series["points"]:
                assert point["x"] == parent[f"{series['x_metric']}_{point['label']}"]
                assert point["mean"] == parent[f"{series['metric']}_{point['label']}"]
                checked += 1
        elif panel["type"] == "table":
            assert [row["trial_id"] for row in series["rows"]] and len(series["rows"]) == len(runs)
            for row in series["rows"]:
                run = runs[row["trial_id"]]
                assert row["status"] == run.data.tags[names.TRIAL_STATUS]
                for metric, shown in row["metrics"].items():
                    assert (shown is None) if metric not in run.data.metrics else _same(shown, run.data.metrics[metric])
                checked += 1
        else:
            for point in series["points"]:
                checked += _assert_point_shows_mlflow(panel["id"], point, point.get("metric", series.get("metric")), runs)
    return checked


def _assert_point_shows_mlflow(panel_id: str, point: dict, metric: str, runs: dict[str, object]) -> int:
    finite = []
    for value in point["values"]:
        logged = runs[value["trial_id"]].data.metrics[metric]
        assert _same(value["value"], logged), (panel_id, metric, value)
        finite += [] if math.isnan(logged) else [logged]
    if finite:
        assert point["mean"] == pytest.approx(sum(finite) / len(finite))
        if point["interval"] == "logged":  # one trial: the interval it logged with the value
            (value,) = point["values"]
            own = runs[value["trial_id"]].data.metrics
            assert (point["lo"], point["hi"]) == (own[f"{metric}_lo"], own[f"{metric}_hi"])
        elif len(finite) < 3:
            assert point["interval"] == "min-max" and point["lo"] == min(finite) and point["hi"] == max(finite)
        else:
            assert point["interval"] == "t" and point["lo"] <= point["mean"] <= point["hi"]
    return len(point["values"])


def _same(shown, logged: float) -> bool:
    return (shown is None and math.isnan(logged)) or (shown is not None and shown == pytest.approx(logged, abs=1e-9))


def checkpoint_registered(storage: Path, trial_id: str | None = None, **metrics) -> bool:
    """Ray Train has registered a checkpoint (of any trial, or of `trial_id`) whose reported
    metrics reach `metrics`: numbers at least as large, anything else equal (its snapshot of
    registered checkpoints lists it: a checkpoint folder alone may not be yet). At least, since
    Ray Train keeps only the newest few registered and a fast trial passes a step in a moment."""
    runs = f"train-{trial_id}" if trial_id else "*"
    for snapshot in (storage / "_train").glob(f"{runs}/checkpoint_manager_snapshot.json"):
        try:
            registered = json.loads(snapshot.read_text())["checkpoint_results"]
        except (OSError, ValueError, KeyError):  # being written
            continue
        if any(all(reaches(result["metrics"].get(key), wanted) for key, wanted in metrics.items())
               for result in registered):
            return True
    return False


def reaches(value, wanted) -> bool:
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        return isinstance(value, (int, float)) and value >= wanted
    return value == wanted


def train_in_process(model, data, steps: int, lr: float) -> None:
    """The trial's loss (`evaluate.target_loss`) on `data`'s batches, plain AdamW, no Ray."""
    import torch

    from persona_sweep import evaluate

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        total, count = evaluate.target_loss(model, data.batch(step))
        (total / count).backward()
        optimizer.step()
        optimizer.zero_grad()
