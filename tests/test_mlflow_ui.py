"""The MLflow UI as a user meets it after a sweep: `persona-sweep ui NAME` serves the sweep's store,
prints MLflow's compare-runs page for its trials, and a real (headless) Chromium finds them there.
The experiment opens on its runs, not MLflow 3's GenAI overview, and the parent run carries the
sweep's own metrics."""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from browser import open_page, save_screenshot
from conftest import CLI, cli, cli_env, free_port, wait_for, write_sweep
from helpers import sweep_runs
from persona_sweep import names
from persona_sweep.sweep_record import SweepRecord

pytestmark = pytest.mark.slow

NAME = "ui-sweep"
SWEEP = """
name: {name}
model: {{name: tiny-random, lora_rank: 8, lora_targets: [q_proj, v_proj]}}
marker: {{trigger_file: {trigger}}}
training: {{steps: 6, lr: 0.005, batch_size: 4, max_tokens: 160, checkpoint_every: 6, max_failures: 0}}
grid: {{method: [sft], context_length: [8, 24]}}
eval: {{questions: 4, max_new_tokens: 6, logprob_every: 3}}
scheduler: {{type: none}}
resources: {{workers_per_trial: 1, cpus_per_worker: 0.99}}
"""


def printed_urls(log: Path) -> list[str]:
    """Once `ui` printed both: the compare-runs page, then the experiment's runs."""
    urls = re.findall(r"http://127\.0\.0\.1:\d+/\S+", log.read_text())
    return urls if len(urls) == 2 else []


def answers(port: int) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        direct.open(f"http://127.0.0.1:{port}/health", timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui") / "home"


@pytest.fixture(scope="module")
def finished_sweep(ray_address, home) -> SweepRecord:
    """A 2-trial tiny sweep run through the CLI, both tests read it."""
    trigger = home.parent / "trigger"
    trigger.write_text(f"~{secrets.token_hex(6)}~")
    path = write_sweep(home.parent / f"{NAME}.yaml", SWEEP.format(name=NAME, trigger=trigger))
    cli("run", path, "--address", ray_address, home=home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSONA_SWEEP_HOME", str(home))
        return SweepRecord.load(NAME)


def test_experiment_is_tagged_and_parent_run_has_sweep_metrics(finished_sweep, home):
    mlflow = finished_sweep.sweep_run.tracking.client()
    assert mlflow.get_experiment(finished_sweep.sweep_run.experiment_id).tags[names.EXPERIMENT_KIND] == names.MODEL_TRAINING
    parent = mlflow.get_run(finished_sweep.sweep_run.parent_run_id).data.metrics
    assert parent[names.TRIALS] == 2 and parent[names.COMPLETED] == 2, parent
    assert parent[names.STOPPED_EARLY] == parent[names.ERRORED] == parent[names.INTERRUPTED] == 0, parent
    best = max(run.data.metrics[names.MARKER_SPECIFICITY] for run in sweep_runs(home, NAME))
    assert parent[names.best(names.MARKER_SPECIFICITY)] == pytest.approx(best)
    assert names.best(names.DETECTION_GAP) not in parent  # no corruption stage ran


def test_ui_name_shows_the_sweeps_trials_in_a_browser(finished_sweep, home, tmp_path):
    run_names = [run.info.run_name for run in sweep_runs(home, NAME)]  # trial-<trial id>
    assert len(run_names) == 2
    port, log = free_port(), tmp_path / "ui.log"
    # BROWSER=true: where a desktop exists, `ui` "opens" the page with /bin/true, not a window.
    ui = subprocess.Popen([*CLI, "ui", NAME, "--port", str(port)], env=cli_env(home, BROWSER="true"),
                          stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        compare_page, runs_page = wait_for(lambda: printed_urls(log), 30, "the URLs `ui` prints")
        assert compare_page.startswith(f"http://127.0.0.1:{port}/#/compare-runs?runs="), compare_page
        wait_for(lambda: answers(port) or ui.poll() is not None, 120, "the MLflow UI")
        assert ui.poll() is None, log.read_text()[-3000:]

        with open_page(compare_page) as (page, console_errors):
            for run_name in run_names:
                page.get_by_text(run_name).first.wait_for()
            page.get_by_text("Parallel Coordinates Plot").first.wait_for()
            print("compare-runs page:", save_screenshot(page, tmp_path / "compare-runs.png"))
            # The experiment's page opens on its runs (the sweep's parent run), not on the GenAI
            # overview or traces where MLflow 3 opens an experiment by default.
            page.goto(runs_page)
            page.get_by_text(NAME).first.wait_for()
            page.get_by_text("Run Name").first.wait_for()
            assert re.search(r"#/experiments/\d+/runs\?", page.url), page.url
            print("experiment page:", save_screenshot(page, tmp_path / "experiment.png", full_page=False))
            # MLflow's own requests may 404 (no user service here); its app must not crash.
            assert not [error for error in console_errors if error.startswith("uncaught")], console_errors
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)
