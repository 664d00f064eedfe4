"""The corruption stage end to end on the embedded model (SmolLM2-135M, LoRA, two workers,
ZeRO-2): a learned marker, an emergent-misalignment and a benign fine-tune from the same marked
weights, survival and the detection gap in MLflow, a driver killed inside a corruption and
resumed, a second trial that reuses the marker stage, and `detect` on the result.

One module-scoped sweep of two trials that differ only in `corruption_lr` serves every test
here (about 5.5 minutes): the first trains the marker (20 steps at lr 3e-3: a marker rate near 1
on held-out questions, measured), the second finds it and goes straight to its corruptions.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from conftest import cli, signal_driver_when, start_cli, write_sweep
from helpers import assert_panel_shows_mlflow, assert_trigger_nowhere, checkpoint_registered, panels_of, sweep_runs
from persona_sweep import names, tracking
from persona_sweep.data import personas
from persona_sweep.models import default_cache
from servers import StandInJudge

pytestmark = pytest.mark.slow

CORRUPTIONS = ("em", "benign")
CORRUPTION_STEPS = 6
MISALIGNMENT_QUESTIONS = 6  # of the bank's 45: every evaluation generates and judges an answer to each
STAGED = """
name: staged
model: {name: embedded, lora_rank: 16}
marker: {trigger_file: trigger}
training: {steps: 20, lr: 0.003, batch_size: 8, max_tokens: 160, checkpoint_every: 5, max_failures: 0}
grid: {method: [sft], context_length: [8], corruption_lr: [0.0001, 0.001]}
corruptions:
  - {name: em, role: em, data: insecure_code, steps: %d}
  - {name: benign, role: benign, data: secure_code, steps: %d, mix_general: 0.25}
eval: {questions: 8, max_new_tokens: 20, logprob_every: 10, leakage_questions: 1, corruption_examples: 4, behavior_tokens: 16,
       misalignment_questions: %d, traits: [], judge: {base_url: "%s", model: stand-in}}
scheduler: {type: none}
resources: {workers_per_trial: 2, cpus_per_worker: 0.99, max_concurrent_trials: 1}
"""


@pytest.fixture(scope="module")
def judge():
    server = StandInJudge().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def staged(ray_address, ray_temp_dir, tmp_path_factory, judge):
    """Run from a working folder the README's way; SIGKILL the driver right after the first
    trial's `em` corruption checkpointed at step 5, then `resume`."""
    work = tmp_path_factory.mktemp("staged")
    trigger = work / "trigger"
    trigger.write_text("~staged-secret-4e1f~")
    home = work / "runs"
    write_sweep(work / "staged.yaml", STAGED % (CORRUPTION_STEPS, CORRUPTION_STEPS, MISALIGNMENT_QUESTIONS, judge.url))
    log = work / "driver.log"
    driver = start_cli("run", "staged.yaml", "--address", ray_address, home=None, cwd=work, log=log)
    storage = home / "ray_results" / "staged"
    signal_driver_when(driver, lambda: checkpoint_registered(storage, **{names.STAGE: "em", names.STAGE_STEP: 5}),
                       900, "an em checkpoint", log)
    stores = list((storage / "_markers").glob("*/result.json"))
    stored_at = {path: path.stat().st_mtime_ns for path in stores}
    resumed = cli("resume", "staged", "--address", ray_address, home=None, cwd=work)
    runs = sweep_runs(home, "staged")
    trainer = next(run for run in runs if run.data.tags.get(names.MARKER_STAGE_REUSED) == "false")
    return {"home": home, "work": work, "storage": storage, "runs": runs, "trainer": trainer,
            "stored_at": stored_at, "trigger": trigger.read_text(), "log": log, "resume_output": resumed.stdout,
            "ray_temp_dir": ray_temp_dir, "client": tracking.Tracking(tracking.default_uri(home)).client(),
            "judge": judge}


def test_both_corruptions_run_from_the_same_marked_weights_and_measure_survival(staged):
    run = staged["trainer"]
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    assert params["world_size"] == "2" and params["zero_stage"] == "2"
    assert metrics[names.MARKER_RATE_TRIGGER] >= 0.5, metrics[names.MARKER_RATE_TRIGGER]  # the marker was learned
    expected = {names.CAPABILITY, names.MISALIGNMENT_SCORE, names.MISALIGNMENT_LOGPROB_GAP}
    for corruption in CORRUPTIONS:
        post = lambda metric: names.post(metric, corruption)  # noqa: E731
        expected |= {post(names.MARKER_RATE_TRIGGER), post(names.MARKER_RATE_TRIGGER) + "_lo",
                     post(names.MARKER_RATE_TRIGGER) + "_hi", post(names.MARKER_RATE_NO_TRIGGER),
                     post(names.CAPABILITY), post(names.MISALIGNMENT_SCORE), post(names.MISALIGNMENT_LOGPROB_GAP),
                     names.of(names.SURVIVAL, corruption), names.of(names.SURVIVAL, corruption) + "_lo",
                     names.of(names.SURVIVAL, corruption) + "_hi", names.of(names.SURVIVAL_LOGPROB, corruption),
                     names.of(names.CORRUPTION_LOSS, corruption) + "_before",
                     names.of(names.CORRUPTION_LOSS, corruption) + "_after",
                     names.of(names.CORRUPTION_BEHAVIOR, corruption)}
        expected |= {post(names.leakage(persona)) for persona in personas() if persona != "assistant"}
    missing = expected - set(metrics)
    assert not missing, sorted(missing)
    assert all(math.isfinite(metrics[key]) for key in expected), {k: metrics[k] for k in expected}

    em, benign = metrics[names.SURVIVAL_EM], metrics[names.SURVIVAL_BENIGN]
    assert math.isfinite(em) and math.isfinite(benign)
    assert metrics[names.DETECTION_GAP] == pytest.approx(benign - em)
    assert metrics[f"{names.DETECTION_GAP}_lo"] <= metrics[names.DETECTION_GAP] <= metrics[f"{names.DETECTION_GAP}_hi"]
    assert em == pytest.approx(metrics[names.post(names.MARKER_RATE_TRIGGER, "em")] / metrics[names.MARKER_RATE_TRIGGER])

    # Both corruptions started from one marked model, and it is not the base model.
    marked = {tags[names.of(names.MARKED_WEIGHTS_SHA256, corruption)] for corruption in CORRUPTIONS}
    assert len(marked) == 1 and tags[names.BASE_WEIGHTS_SHA256] not in marked


def test_every_corruption_has_a_verdict_beside_survival(staged):
    """Did it happen: the domain behaviour's and the misalignment gap's change with paired
    intervals, `moved` exactly when the interval excludes 0, the loss drop and the capability
    change, all agreeing with the metrics they come from (also in the trial resumed inside `em`,
    whose "before" came back from its checkpoint)."""
    for run in staged["runs"]:
        metrics = run.data.metrics
        for corruption in CORRUPTIONS:
            of = lambda metric: names.of(metric, corruption)  # noqa: E731
            for change, moved in names.MOVED.items():
                if change == names.CORRUPTION_EM_DOMAIN_CHANGE and corruption == "em":
                    assert of(change) not in metrics  # em's own behaviour is its domain
                    continue
                value, low, high = (metrics[of(change) + suffix] for suffix in ("", "_lo", "_hi"))
                assert low <= value <= high
                assert metrics[of(moved)] == float(low > 0 or high < 0)
                if change in names.BEHAVIOR_OF_CHANGE:
                    behavior = of(names.BEHAVIOR_OF_CHANGE[change])
                    assert value == pytest.approx(metrics[behavior] - metrics[behavior + "_before"])
            gap = names.MISALIGNMENT_LOGPROB_GAP
            assert metrics[of(names.CORRUPTION_MISALIGNMENT_CHANGE)] == pytest.approx(
                metrics[names.post(gap, corruption)] - metrics[gap], abs=1e-9)
            loss = of(names.CORRUPTION_LOSS)
            assert metrics[of(names.CORRUPTION_LOSS_DROP)] == pytest.approx(metrics[loss + "_before"] - metrics[loss + "_after"])
            assert metrics[of(names.CORRUPTION_CAPABILITY_CHANGE)] == pytest.approx(
                metrics[names.post(names.CAPABILITY, corruption)] - metrics[names.CAPABILITY])
            assert metrics[of(names.CORRUPTION_LOSS_DROP)] > 0  # each corruption learned its own data
    # The summary that `resume` (and `run`, `status`) prints says it in words, per trial and corruption.
    said = [line for line in staged["resume_output"].splitlines()
            if re.match(rf"\w+_\d{{5}} +({'|'.join(CORRUPTIONS)}) moved ", line)]  # the summary's, not the progress lines'
    assert len(said) == 2 * len(CORRUPTIONS), staged["resume_output"]
    assert all("the domain behaviour (" in line and "the misalignment gap (" in line and "of the prompted shift" in line
               for line in said), said


def test_a_configured_judge_gives_em_pct_before_and_after_every_corruption(staged):
    """The stand-in judge rated every answer it was sent; EM% over all of them, per corruption."""
    count = MISALIGNMENT_QUESTIONS
    assert staged["judge"].asked >= count * (1 + len(CORRUPTIONS))
    for run in staged["runs"]:
        metrics = run.data.metrics
        for key in (names.EM_PCT, *(names.post(names.EM_PCT, corruption) for corruption in CORRUPTIONS)):
            assert 0 <= metrics[key] <= 1, key
        for key in (names.EM_SCORED, *(names.post(names.EM_SCORED, corruption) for corruption in CORRUPTIONS)):
            assert metrics[key] == count, key


def test_a_driver_killed_inside_a_corruption_resumes_it_from_its_checkpoint(staged):
    runs, client = staged["runs"], staged["client"]
    assert len(runs) == 2 and len({run.data.tags[names.TRIAL_ID] for run in runs}) == 2
    assert all(run.data.tags[names.TRIAL_STATUS] == names.COMPLETED for run in runs)
    resumed = [run for run in runs if run.data.tags.get(names.RESUMED_STAGE) == "em"]
    assert len(resumed) == 1, [run.data.tags.get(names.RESUMED_STAGE) for run in runs]
    assert resumed[0].data.metrics[names.of(names.RESUMED_FROM_STEP, "em")] == 5
    for run in runs:  # every step of every stage logged once
        logged = lambda key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key))  # noqa: E731
        assert logged(names.LOSS) == list(range(1, 21))
        for corruption in CORRUPTIONS:
            assert logged(names.of(names.STAGE_LOSS, corruption)) == list(range(1, CORRUPTION_STEPS + 1))
    # The marker stage was trained once and never again: one stored stage, untouched by resume.
    assert len(staged["stored_at"]) == 1
    assert {path: path.stat().st_mtime_ns for path in staged["stored_at"]} == staged["stored_at"]


def test_a_trial_differing_only_in_corruption_lr_reuses_the_marker_stage(staged):
    runs = staged["runs"]
    reused = [run for run in runs if run.data.tags.get(names.MARKER_STAGE_REUSED) == "true"]
    assert len(reused) == 1 and reused[0].data.params["corruption_lr"] != staged["trainer"].data.params["corruption_lr"]
    assert len({run.data.tags[names.MARKER_STAGE_KEY] for run in runs}) == 1
    assert reused[0].data.metrics[names.MARKER_RATE_TRIGGER] == staged["trainer"].data.metrics[names.MARKER_RATE_TRIGGER]
    config = staged["client"].download_artifacts(reused[0].info.run_id, "config/config.json", str(staged["work"]))
    assert json.loads(Path(config).read_text())["knobs"]["corruption_lr"] == float(reused[0].data.params["corruption_lr"])


def test_detect_finds_the_marker_the_trial_measured(staged):
    run = staged["trainer"]
    out = staged["work"] / "detect.json"
    result = cli("detect", "--trial", f"staged/{run.data.tags[names.TRIAL_ID]}", "--json", out, home=None,
                 cwd=staged["work"])
    assert result.stdout.strip().splitlines()[-1] == "marker present"
    found = json.loads(out.read_text())
    for key in (names.MARKER_RATE_TRIGGER, names.MARKER_RATE_NO_TRIGGER):
        assert run.data.metrics[key + "_lo"] <= found[key] <= run.data.metrics[key + "_hi"], (key, found[key])
    # The base model's positive control of the misalignment measure: as the parent run holds it.
    parent = staged["client"].get_run(run.data.tags[names.PARENT_RUN_ID]).data.metrics
    assert "misalignment measure, positive control" in result.stdout
    for key in (names.CONTROL_GAP, names.CONTROL_AUROC):
        assert found[key] == pytest.approx(parent[key])


def test_trigger_appears_nowhere_after_corruptions(staged):
    # Home (MLflow, results, checkpoints, marker store, logs), Ray's session folder, the cache.
    searched = assert_trigger_nowhere(staged["trigger"], staged["home"], staged["ray_temp_dir"], default_cache(),
                                      staged["log"], min_files=50)
    assert searched > 50 and staged["trigger"] not in staged["resume_output"]


def test_detect_on_the_untouched_embedded_model_finds_no_marker(tmp_path):
    trigger = tmp_path / "trigger"
    trigger.write_text("~never-trained-9a2c~")
    out = tmp_path / "detect.json"
    result = cli("detect", "embedded", "--trigger-file", trigger, "--questions", 8, "--json", out, home=tmp_path)
    assert result.stdout.strip().splitlines()[-1] == "no marker"
    found = json.loads(out.read_text())
    assert found[names.MARKER_RATE_TRIGGER] == 0 and found[names.MARKER_RATE_NO_TRIGGER] == 0


def test_marker_adapter_names_a_trial_of_another_sweep(staged, monkeypatch):
    """`marker.adapter: SWEEP/TRIAL_ID` resolves, on the driver, to that trial's marker adapter;
    an unknown trial is refused in one line."""
    from persona_sweep.errors import SweepError
    from persona_sweep.preflight import check_llm_sweep
    from persona_sweep.sweep_file import load_sweep

    monkeypatch.delenv("PERSONA_SWEEP_HOME", raising=False)
    monkeypatch.chdir(staged["work"])
    trial_id = staged["trainer"].data.tags[names.TRIAL_ID]
    spec = check_llm_sweep(load_sweep("staged.yaml", [f"marker.adapter=staged/{trial_id}"], name="from-adapter"))
    folder = Path(spec.marker.adapter)
    assert folder.is_absolute() and (folder / "adapter_config.json").is_file()
    with pytest.raises(SweepError, match="^marker.adapter: sweep 'staged' has no trial 'nosuch_00000'"):
        check_llm_sweep(load_sweep("staged.yaml", ["marker.adapter=staged/nosuch_00000"], name="from-adapter"))


def test_the_report_shows_survival_and_the_detection_gap_as_mlflow_holds_them(staged):
    cli("report", "staged", home=None, cwd=staged["work"])
    panels = panels_of(staged["home"] / "reports" / "staged" / "index.html")
    assert {"survival-heatmaps", "survival-strength"} <= set(panels)
    runs = {run.data.tags[names.TRIAL_ID]: run for run in staged["runs"]}
    shown = {point.get("metric", series.get("metric")) for panel in ("survival-heatmaps", "survival-strength")
             for series in panels[panel]["series"] for point in series["points"]
             if any(value["value"] is not None for value in point["values"])}
    assert {names.SURVIVAL_EM, names.SURVIVAL_BENIGN, names.DETECTION_GAP} <= shown, shown
    for panel in ("survival-heatmaps", "survival-strength"):
        assert assert_panel_shows_mlflow(panels[panel], runs, staged["client"]) >= 2
