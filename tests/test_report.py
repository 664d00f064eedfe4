"""`persona-sweep report` on a real small sweep: what the page shows is what MLflow holds.

One module-scoped sweep (about 2 minutes) serves every test here, ASHA's included: tiny model,
ASHA on, a corruption stage, four trials (context 32 and 0, each with two corruption strengths),
one at a time. Measured on this model: the marker log-prob at step 5 rises with context length,
so the context-0 trial that trains its marker falls below the context-32 one at ASHA's first
rung and is stopped there; the third replays the first's marker stage (same marker, another
corruption_lr) and goes through; the fault hook makes the last trial raise.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from browser import open_page, save_screenshot
from conftest import cli, cli_env, write_sweep
from helpers import assert_panel_shows_mlflow, panels_of, sweep_runs
from persona_sweep import names, tracking

pytestmark = pytest.mark.slow

SWEEP = """
name: reported
model: {name: tiny-random, lora_rank: 8, lora_targets: [q_proj, v_proj]}
marker: {trigger_file: trigger}
training: {steps: 10, lr: 0.005, batch_size: 4, max_tokens: 160, checkpoint_every: 10, max_failures: 0}
grid: {method: [sft], context_length: [32, 0], corruption_lr: [0.0001, 0.001]}
corruptions:
  - {name: em, role: em, data: insecure_code, steps: 2}
  - {name: benign, role: benign, data: secure_code, steps: 2}
  - {name: vaccinated, data: insecure_code, steps: 2, steer_against: evil, steer_coef: 4.0}
  - {name: talk, kind: drift, domains: [therapy, coding], turns: [1, 3], conversations: 2, reply_tokens: 3, capped: true}
eval: {questions: 6, max_new_tokens: 6, logprob_every: 5, leakage_questions: 2, corruption_examples: 2, behavior_tokens: 4}
scheduler: {type: asha, metric: marker_logprob_trigger, grace_period: 5, reduction_factor: 2}
resources: {workers_per_trial: 1, cpus_per_worker: 0.99, max_concurrent_trials: 1}
"""
FAULT = "context_length=0,corruption_lr=0.001"


@pytest.fixture(scope="module")
def reported(ray_address, tmp_path_factory):
    work = tmp_path_factory.mktemp("report")
    home = work / "runs"
    (work / "trigger").write_text("~report-trigger~")
    write_sweep(work / "sweep.yaml", SWEEP)
    result = cli("run", "sweep.yaml", "--address", ray_address, home=home, cwd=work, check=False,
                 env=cli_env(home, PERSONA_SWEEP_FAULT=FAULT))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # one trial errored
    report = cli("report", "reported", "--csv", home=home, cwd=work)
    index = home / "reports" / "reported" / "index.html"
    assert str(index) in report.stdout
    return {"home": home, "work": work, "index": index, "stdout": report.stdout, "run_stderr": result.stderr}


def mlflow_trials(home: Path) -> dict[str, object]:
    return {run.data.tags[names.TRIAL_ID]: run for run in sweep_runs(home, "reported")}


def test_every_panel_shows_what_mlflow_holds(reported):
    runs = mlflow_trials(reported["home"])
    statuses = sorted(run.data.tags[names.TRIAL_STATUS] for run in runs.values())
    assert statuses == sorted([names.COMPLETED, names.COMPLETED, names.STOPPED_EARLY, names.ERRORED]), statuses
    panels = panels_of(reported["index"])
    assert {"marker-rates", "learning-curves", "leakage", "trials"} <= set(panels)
    # A random model never shows the marker, so survival (after / before) is NaN everywhere: those
    # panels are left out with a note (test_corruption reports a sweep with a learned marker).
    assert "left out 'Survival against corruption strength'" in reported["stdout"]
    client = tracking.Tracking(tracking.default_uri(reported["home"])).client()
    checked = sum(assert_panel_shows_mlflow(panel, runs, client) for panel in panels.values())
    assert checked >= 20, checked


def test_each_corruption_s_trait_shift_is_logged_and_drawn(reported):
    """The default `eval.traits` (evil): every completed trial moved along it by some amount per
    corruption, and the trait-shift panel draws what MLflow holds."""
    import math

    completed = [run for run in mlflow_trials(reported["home"]).values()
                 if run.data.tags[names.TRIAL_STATUS] == names.COMPLETED]
    for run in completed:
        shifts = [run.data.metrics[names.post(names.trait_shift("evil"), corruption)] for corruption in ("em", "benign")]
        assert all(math.isfinite(shift) for shift in shifts) and shifts[0] != shifts[1], shifts
        for corruption in ("em", "benign", "vaccinated"):  # a paired interval over the trait's questions
            key = names.post(names.trait_shift("evil"), corruption)
            assert run.data.metrics[f"{key}_lo"] <= run.data.metrics[key] <= run.data.metrics[f"{key}_hi"]
    # Preventative steering: the same em data and seed, the evil vector on while it trained.
    client = tracking.Tracking(tracking.default_uri(reported["home"])).client()
    for run in completed:
        first = {name: client.get_metric_history(run.info.run_id, names.of(names.STAGE_LOSS, name))[0].value
                 for name in ("em", "vaccinated")}
        assert first["em"] != first["vaccinated"], first  # the steered forward pass changed the loss from step 1
        assert math.isfinite(run.data.metrics[names.post(names.trait_shift("evil"), "vaccinated")])
    panel = panels_of(reported["index"])["trait-shift"]
    assert assert_panel_shows_mlflow(panel, {run.data.tags[names.TRIAL_ID]: run for run in completed}, client) >= 2


def test_the_parent_run_ranks_each_leakage_predictor_against_the_leakage_measured(reported):
    """The base model's JS and activation cosine per held-out persona, the leakage the
    assistant_positive trials measured for it, their Spearman correlations, and the scatter."""
    import math

    from persona_sweep import leakage_predictors
    from persona_sweep.config import ModelConfig
    from persona_sweep.models import default_cache

    runs = mlflow_trials(reported["home"])
    client = tracking.Tracking(tracking.default_uri(reported["home"])).client()
    parent = client.get_run(next(iter(runs.values())).data.tags[names.PARENT_RUN_ID]).data.metrics
    base = leakage_predictors.cached(ModelConfig(name="tiny-random"), default_cache())
    assert {key: parent[key] for key in base} == pytest.approx(base)
    held_out = leakage_predictors.held_out_personas()
    assert len(base) == 2 * len(held_out) and all(0 <= base[f"base_js_{p}"] <= math.log(2) for p in held_out)
    leakage = {p: [run.data.metrics[names.leakage(p)] for run in runs.values() if names.leakage(p) in run.data.metrics]
               for p in held_out}
    assert {p: parent[f"leakage_mean_{p}"] for p in held_out} == pytest.approx(
        {p: sum(values) / len(values) for p, values in leakage.items()})
    for predictor in ("js", "cosine"):
        expected = leakage_predictors.spearman([base[f"base_{predictor}_{p}"] for p in held_out],
                                               [parent[f"leakage_mean_{p}"] for p in held_out])
        logged = parent[f"leakage_spearman_{predictor}"]
        assert (math.isnan(logged) and math.isnan(expected)) or logged == pytest.approx(expected)
    panel = panels_of(reported["index"])["leakage-predictors"]
    assert [len(series["points"]) for series in panel["series"]] == [len(held_out)] * 2
    assert assert_panel_shows_mlflow(panel, runs, client) == 2 * len(held_out)


def test_the_drift_corruption_reads_the_marker_at_each_turn_and_place_with_and_without_capping(reported):
    """Every rate of the grid (domain x turn x place x trigger, capped or not) with its interval,
    the axis projection of the replies before the last probed turn, survival per domain and the
    gap; capping changes what the model computes (its capability and its projections)."""
    import math

    completed = [run.data.metrics for run in mlflow_trials(reported["home"]).values()
                 if run.data.tags[names.TRIAL_STATUS] == names.COMPLETED]
    assert completed
    for metrics in completed:
        for suffix in ("", "_capped"):
            for domain in ("therapy", "coding"):
                for turn in (1, 3):
                    for place in ("middle", "end"):
                        for kind in ("trigger", "no_trigger"):
                            key = f"marker_rate_{kind}_drift_{domain}_{turn}_{place}{suffix}"
                            assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], key
                    assert f"survival_drift_{domain}_{turn}{suffix}" in metrics
                for turn in (1, 2):  # the replies written before the probe at turn 3
                    assert math.isfinite(metrics[f"axis_projection_{domain}_turn_{turn}{suffix}"])
            assert f"detection_gap_drift{suffix}" in metrics
        assert metrics["capability_capped"] != metrics[names.CAPABILITY]
        assert metrics["axis_projection_therapy_turn_1_capped"] != metrics["axis_projection_therapy_turn_1"]
    panels = panels_of(reported["index"])
    client = tracking.Tracking(tracking.default_uri(reported["home"])).client()
    runs = {run.data.tags[names.TRIAL_ID]: run for run in mlflow_trials(reported["home"]).values()}
    assert assert_panel_shows_mlflow(panels["drift-axis"], runs, client) >= 8
    lines = {series["name"] for series in panels["drift-marker"]["series"]}
    assert {"therapy end", "therapy middle capped", "coding end capped"} <= lines, lines


def test_the_errored_trial_is_listed_with_the_resume_command(reported):
    runs = mlflow_trials(reported["home"])
    errored = [trial for trial, run in runs.items() if run.data.tags[names.TRIAL_STATUS] == names.ERRORED]
    assert len(errored) == 1
    assert "fault injected" in runs[errored[0]].data.tags[names.ERROR]
    page = reported["index"].read_text()
    assert f"{errored[0]} errored: " in page and "persona-sweep resume reported" in page
    table = panels_of(reported["index"])["trials"]["series"][0]["rows"]
    assert [row["status"] for row in table if row["trial_id"] == errored[0]] == [names.ERRORED]


def test_the_parent_run_holds_one_copy_of_the_report(reported):
    cli("report", "reported", home=reported["home"], cwd=reported["work"])  # a second time
    uri = tracking.default_uri(reported["home"])
    client = tracking.Tracking(uri).client()
    parent = client.search_runs([client.get_experiment_by_name("reported").experiment_id],
                                filter_string=f"tags.{names.SWEEP_TAG} = 'reported'")[0]
    listed = {artifact.path for artifact in client.list_artifacts(parent.info.run_id, "report")}
    pngs = {path for path in listed if path.endswith(".png")}
    assert "report/index.html" in listed and "report/trials.json" in listed
    assert len(pngs) == len(panels_of(reported["index"]))
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "report/trials.json",
                                                      str(reported["work"]))).read_text())
    assert len(table["data"]) == 4  # one row per trial: the second report replaced the first table
    csv_rows = (reported["home"] / "reports" / "reported" / "trials.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 5


def test_the_page_renders_in_a_browser(reported, tmp_path):
    panels = panels_of(reported["index"])
    with open_page(reported["index"]) as (page, console_errors):
        for panel_id in panels:
            page.locator(f"#figure-{panel_id} .main-svg").first.wait_for()
        drawn = {panel_id: page.locator(f"#figure-{panel_id} .main-svg").count() for panel_id in panels}
        shot = save_screenshot(page, tmp_path / "report.png")
    print(f"screenshot: {shot}")
    assert all(count > 0 for count in drawn.values()), drawn
    assert not console_errors, console_errors
    assert distinct_colours(shot) > 20  # a blank page has one or two


def test_asha_stops_trials_below_the_rung_cutoff(reported):
    """ASHA decides on the marker stage: rungs at steps 5 and 10 (the marker's last step); a trial
    below the cutoff of earlier ones at a rung stops there and runs no corruption; every trial it
    lets through runs its corruptions to the end (reaching max_t does not stop a trial)."""
    import numpy as np

    rungs, reduction_factor, corruption_steps = (5, 10), 2, [1, 2]
    client = tracking.Tracking(tracking.default_uri(reported["home"])).client()
    runs = sorted((run for run in sweep_runs(reported["home"], "reported")
                   if run.data.tags[names.TRIAL_STATUS] != names.ERRORED), key=lambda run: run.info.start_time)
    assert len(runs) == 3
    recorded: dict[int, list[float]] = {rung: [] for rung in rungs}
    expected_stop = []  # the rung each trial was stopped at (None: let through)
    for run in runs:
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, names.MARKER_LOGPROB_TRIGGER)}
        stop = None
        for rung in rungs:
            earlier = recorded[rung]
            recorded[rung].append(history[rung])
            if earlier[:-1] and history[rung] < np.nanpercentile(earlier[:-1], (1 - 1 / reduction_factor) * 100):
                stop = rung
                break
        expected_stop.append(stop)
    stopped = [run.data.tags[names.TRIAL_STATUS] == names.STOPPED_EARLY for run in runs]
    assert stopped == [stop is not None for stop in expected_stop], (recorded, stopped)
    assert any(stopped) and not all(stopped)
    for run, stop in zip(runs, expected_stop):
        assert run.info.status == ("KILLED" if stop else "FINISHED")
        # Evaluated at the marker's end: every trial let through or cut at the last rung. Tune's
        # stop lands asynchronously: a trial cut at rung 5 may have trained on, on a busy machine
        # to the end and into its evaluation, before it did; it never runs a corruption (below).
        assert run.data.metrics[names.TRAIN_STEP] >= (stop or rungs[-1])
        if stop != rungs[0]:
            assert names.MARKER_RATE_TRIGGER in run.data.metrics
        for corruption in ("em", "benign"):
            corrupted = sorted(m.step for m in client.get_metric_history(run.info.run_id, f"loss_{corruption}"))
            assert corrupted == ([] if stop else corruption_steps)
            assert (f"corruption_loss_{corruption}_after" in run.data.metrics) == (stop is None)


def test_resume_without_the_fault_hook_finishes_the_errored_trial(reported, ray_address):
    """Last in this module: it changes the sweep the others read."""
    assert "`persona-sweep resume reported`" in reported["run_stderr"]  # the hint, with exit 1
    errored = [trial for trial, run in mlflow_trials(reported["home"]).items()
               if run.data.tags[names.TRIAL_STATUS] == names.ERRORED]
    cli("resume", "reported", "--address", ray_address, home=reported["home"], cwd=reported["work"])
    runs = sweep_runs(reported["home"], "reported")
    assert len(runs) == 4 and len({run.data.tags[names.TRIAL_ID] for run in runs}) == 4  # one child run each
    assert [run.data.tags[names.TRIAL_STATUS] for run in runs if run.data.tags[names.TRIAL_ID] in errored] \
        in ([names.COMPLETED], [names.STOPPED_EARLY])  # ASHA judges it like any other trial now


def distinct_colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as image:
        return len(set(image.convert("RGB").resize((200, 400)).getdata()))
