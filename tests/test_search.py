"""`search.type: optuna` ranking on a metric a trial has only at its end: the sweep keys, the value
Optuna ranks (a broken floor or a NaN ranks worst), the searcher on real Ray Tune and Optuna, and
a search on the session cluster whose driver is SIGKILLed and resumed."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest

from conftest import cli, signal_driver_when, start_cli, write_sweep
from helpers import assert_trigger_nowhere, sweep_runs
from persona_sweep import engine, names
from persona_sweep.errors import SweepError
from persona_sweep.sweep_file import validate

BASE = {"name": "s", "model": {"name": "tiny-random"}, "marker": {"trigger_env": "UNUSED"},
        "corruptions": [{"name": "em", "role": "em", "data": "insecure_code"},
                        {"name": "benign", "role": "benign", "data": "secure_code"}]}
GAP_SEARCH = {"type": "optuna", "n_trials": 4, "metric": names.DETECTION_GAP,
              "floor": "capability_post_em >= capability - 0.3"}


def spec_with(search: dict, scheduler: dict | None = None, **sections):
    return validate({**BASE, "search": search, "scheduler": scheduler or {"type": "none"}, **sections})


def test_a_broken_floor_or_a_nan_ranks_worst_and_says_why():
    search = spec_with(GAP_SEARCH).search
    good = {names.DETECTION_GAP: 0.4, "capability": -2.0, "capability_post_em": -2.2}
    assert search.ranked(good, names.DETECTION_GAP, "max") == (0.4, None)
    value, why = search.ranked({**good, "capability_post_em": -2.5}, names.DETECTION_GAP, "max")
    assert value == -math.inf and "broken" in why and "capability_post_em = -2.5" in why
    value, why = search.ranked({**good, names.DETECTION_GAP: math.nan}, names.DETECTION_GAP, "max")
    assert value == -math.inf and why == "detection_gap is NaN"
    assert search.ranked({**good, names.DETECTION_GAP: math.nan}, names.DETECTION_GAP, "min")[0] == math.inf
    assert search.ranked({k: v for k, v in good.items() if k != "capability"}, names.DETECTION_GAP, "max")[0] == -math.inf


@pytest.mark.parametrize("floor, holds", [("capability >= -2.5", True), ("capability > -1", False),
                                          ("capability_post_em <= capability + 0.1", True),
                                          ("capability_post_em < capability - 1e-1", True)])
def test_floors_read_as_written(floor, holds):
    search = spec_with({**GAP_SEARCH, "floor": floor}).search
    assert (search.floor_broken({"capability": -2.0, "capability_post_em": -2.2}) is None) == holds


@pytest.mark.parametrize("search, scheduler, said", [
    ({**GAP_SEARCH}, {"type": "asha"}, "known only at a trial's end"),
    ({**GAP_SEARCH, "floor": "capability is high"}, None, "is not METRIC >= METRIC - NUMBER"),
    ({"type": "grid", "ranges": {"corruption_lr": {"low": 1e-5, "high": 1e-3}}}, None, "need search.type 'optuna'"),
    ({**GAP_SEARCH, "ranges": {"corruption_lr": {"low": 1e-3, "high": 1e-5}}}, None, "must be below high"),
    ({**GAP_SEARCH, "ranges": {"corruption_lr": {"low": 0, "high": 1e-3, "log": True}}}, None, "log range needs low > 0"),
    ({**GAP_SEARCH, "ranges": {"corruption_steps": {"low": 10, "high": 200}}}, None, "add `integer: true`"),
    ({**GAP_SEARCH, "ranges": {"training.batch_size": {"low": 4, "high": 8, "integer": True}}}, None,
     "neither a grid axis nor one of training.steps, training.lr"),
])
def test_search_keys_that_cannot_work_are_refused(search, scheduler, said):
    with pytest.raises(SweepError, match=said):
        spec_with(search, scheduler)


def test_a_range_and_a_grid_list_of_one_axis_are_refused():
    with pytest.raises(SweepError, match="both a grid list and a search range"):
        spec_with({**GAP_SEARCH, "ranges": {"corruption_lr": {"low": 1e-5, "high": 1e-3}}},
                  grid={"corruption_lr": [1e-4]})


def test_ranges_become_tune_domains_and_a_trial_s_settings_its_spec():
    from ray import tune

    spec = spec_with({**GAP_SEARCH, "ranges": {"corruption_lr": {"low": 1e-5, "high": 1e-3, "log": True},
                                               "corruption_steps": {"low": 10, "high": 200, "integer": True},
                                               "training.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                               "on_policy_fraction": {"low": 0, "high": 1}}},
                     grid={"method": ["sft", "prompt"]})
    space = engine.param_space(spec)
    assert isinstance(space["method"], tune.search.sample.Categorical)
    assert isinstance(space["corruption_lr"].get_sampler(), tune.search.sample.LogUniform)
    assert (space["corruption_steps"].lower, space["corruption_steps"].upper) == (10, 201)  # 200 included
    assert isinstance(space["on_policy_fraction"], tune.search.sample.Float) and "on_policy_fraction" not in spec.axes()
    trial = spec.for_trial({"method": "sft", "training.lr": 0.003, "corruption_lr": 1e-4})
    assert trial.training.lr == 0.003 and spec.training.lr != 0.003


def test_the_searcher_ranks_the_last_value_and_takes_the_worst_without_crashing(tmp_path):
    """Ray Tune's Optuna integration as the engine builds it: NaN in every intermediate report,
    the worst value (-inf) and an errored trial at the end; save and restore keep the study."""
    from ray import tune

    spec = spec_with({**GAP_SEARCH, "ranges": {"corruption_lr": {"low": 1e-5, "high": 1e-3, "log": True}}})
    _, searcher = engine.scheduler_and_search(spec)
    searcher.set_search_properties(None, None, engine.param_space(spec))
    for trial_id in ("a", "b", "c"):
        assert 1e-5 <= searcher.suggest(trial_id)["corruption_lr"] <= 1e-3
        searcher.on_trial_result(trial_id, {names.SEARCH_VALUE: math.nan, "training_iteration": 1})
    searcher.on_trial_complete("a", {names.SEARCH_VALUE: 0.25})
    searcher.on_trial_complete("b", {names.SEARCH_VALUE: -math.inf})
    searcher.on_trial_complete("c", None, error=True)
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = engine.scheduler_and_search(spec)[1]
    restored.restore(str(tmp_path / "searcher.pkl"))
    study = restored._ot_study
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert study.best_trial.value == 0.25 and study.trials[1].value == -math.inf
    assert isinstance(tune.search.optuna.OptunaSearch, type) and isinstance(restored, tune.search.optuna.OptunaSearch)


# ---- a search on the session cluster ---------------------------------------------------------

# The tiny random model writes blank lines: with "\n\n" as the marker and a marker stage too weak
# to change that, every trial has a marker rate before its corruptions, so survival and the
# detection gap are numbers. Its corruptions teach it text, raising `capability`: the floor
# bounds that rise, and the strongest corruptions break it.
SEARCH_SWEEP = r"""
name: gap-search
model: {name: tiny-random, finetune: full}
marker: {text: "\n\n", trigger_file: trigger}
training: {steps: 2, lr: 0.0000001, batch_size: 4, max_tokens: 200, checkpoint_every: 2}
grid: {method: [sft], context_length: [0]}
corruptions:
  - {name: em, role: em, data: insecure_code, steps: 3}
  - {name: benign, role: benign, data: secure_code, steps: 3}
eval: {questions: 4, max_new_tokens: 4, logprob_every: 4, leakage_questions: 0, corruption_examples: 2, behavior_tokens: 4}
scheduler: {type: none}
search:
  type: optuna
  n_trials: 4
  metric: detection_gap
  floor: "capability_post_em <= capability + 0.25"
  ranges: {corruption_lr: {low: 0.00001, high: 0.1, log: true}}
resources: {workers_per_trial: 1, cpus_per_worker: 0.99}
"""


@pytest.fixture(scope="module")
def searched(ray_address, tmp_path_factory):
    """Run from a working folder the README's way; SIGKILL the driver once a trial completed;
    `resume` finishes the study."""
    work = tmp_path_factory.mktemp("search")
    (work / "trigger").write_text("~search-secret-5b7e~")
    home = work / "runs"
    write_sweep(work / "gap-search.yaml", SEARCH_SWEEP)
    log = work / "driver.log"
    driver = start_cli("run", "gap-search.yaml", "--address", ray_address, home=None, cwd=work, log=log)
    completed = lambda: sum(run.data.tags.get(names.TRIAL_STATUS) == names.COMPLETED  # noqa: E731
                            for run in sweep_runs(home, "gap-search"))
    signal_driver_when(driver, lambda: completed() >= 1, 600, "a completed trial", log)
    cli("resume", "gap-search", "--address", ray_address, home=None, cwd=work)
    return {"home": home, "work": work}


def study_of(home: Path):
    """The searcher's saved state (the resumed driver's: its file is named by its start time): the
    Optuna study and Tune's trial id of each study trial."""
    state = max((home / "ray_results" / "gap-search").glob("searcher-state-*.pkl"))
    saved = pickle.loads(state.read_bytes())
    numbers = {ot_trial.number: trial_id for trial_id, ot_trial in saved["_ot_trials"].items()}
    return saved["_ot_study"], numbers


def test_the_study_s_best_is_the_best_run_passing_the_floor(searched):
    runs = {run.data.tags[names.TRIAL_ID]: run for run in sweep_runs(searched["home"], "gap-search")}
    study, trial_of = study_of(searched["home"])
    assert len(study.trials) == len(runs) == 4 and set(trial_of.values()) == set(runs)  # one run per study trial
    assert all(trial.state.name == "COMPLETE" for trial in study.trials)
    passing = {trial_id: run.data.metrics[names.DETECTION_GAP] for trial_id, run in runs.items()
               if names.SEARCH_RANKED_WORST not in run.data.tags}
    assert passing, {trial_id: run.data.tags.get(names.SEARCH_RANKED_WORST) for trial_id, run in runs.items()}
    assert study.best_trial.value == max(passing.values())
    assert trial_of[study.best_trial.number] in passing
    for trial in study.trials:  # every study value is its run's detection gap, or the worst with a reason
        run = runs[trial_of[trial.number]]
        if names.SEARCH_RANKED_WORST in run.data.tags:
            assert trial.value == -math.inf
        else:
            assert trial.value == run.data.metrics[names.DETECTION_GAP]
            assert float(run.data.params["corruption_lr"]) == trial.params["corruption_lr"]


def test_a_strong_corruption_breaks_the_floor_and_is_tagged(searched):
    runs = sweep_runs(searched["home"], "gap-search")
    broken = [run for run in runs if "broken" in run.data.tags.get(names.SEARCH_RANKED_WORST, "")]
    assert broken, [(run.data.params["corruption_lr"], run.data.tags.get(names.SEARCH_RANKED_WORST)) for run in runs]
    for run in broken:
        assert run.data.metrics["capability_post_em"] > run.data.metrics["capability"] + 0.25


def test_resume_continued_the_study_and_no_step_or_trial_doubled(searched):
    runs = sweep_runs(searched["home"], "gap-search")
    assert all(run.data.tags[names.TRIAL_STATUS] == names.COMPLETED for run in runs)
    assert len({run.data.tags[names.TRIAL_ID] for run in runs}) == len(runs) == 4
    assert_trigger_nowhere("~search-secret-5b7e~", searched["home"], min_files=20)


def test_a_trial_resumed_after_its_last_report_says_so_in_one_line():
    """The console line for a trial's repeated last report (it found its stage done): the
    driver's progress callback once raised on it and stopped the resumed sweep."""
    from persona_sweep.progress import result_line

    assert "last report again" in result_line({names.FINISHED_STAGE: names.DONE_STAGE, names.TRIAL_DONE: 1}, 4)


def test_the_longest_example_check_reads_a_searched_context_length_s_top():
    from persona_sweep.preflight import longest_context_knobs

    spec = spec_with({**GAP_SEARCH, "ranges": {"context_length": {"low": 0, "high": 96, "integer": True},
                                               "on_policy_fraction": {"low": 0, "high": 0.5}}})
    knobs = longest_context_knobs(spec, "sft")
    assert knobs.context_length == 96 and knobs.on_policy_fraction == 0.5


def test_status_and_the_report_show_each_trial_s_sampled_setting(searched):
    """A searched setting is no grid axis, but it is what tells a search's trials apart: `status`
    shows it per trial (to three figures), and the report's trials carry it as a number, with the
    values sampled as the axis."""
    from persona_sweep import tracking
    from persona_sweep.report.panels import configuration
    from persona_sweep.report.sweeps import read_sweep

    runs = sweep_runs(searched["home"], "gap-search")
    sampled = {run.data.tags[names.TRIAL_ID]: float(run.data.params["corruption_lr"]) for run in runs}
    status = cli("status", "gap-search", home=None, cwd=searched["work"]).stdout
    for trial_id, value in sampled.items():
        line = next(line for line in status.splitlines() if line.startswith(trial_id))
        assert f"corruption_lr={value:.3g}" in line, line

    sweep = read_sweep("gap-search", tracking.default_uri(searched["home"]))
    assert {trial.trial_id: trial.knobs["corruption_lr"] for trial in sweep.trials} == sampled
    assert sweep.axes()["corruption_lr"] == sorted(sampled.values())
    assert all(f"corruption_lr={trial.knobs['corruption_lr']:.3g}" in configuration(trial, sweep, ())
               for trial in sweep.trials)
