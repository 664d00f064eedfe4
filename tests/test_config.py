"""The sweep file contract: every shipped sweep validates; bad files fail in one line with exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cli, write_sweep
from persona_sweep.errors import SweepError
from persona_sweep.sweep_file import load_sweep
from persona_sweep.sweep_record import RECORD_SCHEMA

REPO = Path(__file__).resolve().parent.parent
GOOD = """
name: good
model: {name: tiny-random}
marker: {trigger_env: PS_TEST_TRIGGER}
grid: {method: [sft], context_length: [8, 32], seed: [0, 1, 2]}
"""

MALFORMED = {
    "wrong type": ("training: {steps: many}", "training.steps"),
    "unknown method": ("grid: {method: [sft, dance]}", "grid.method: unknown method 'dance'"),
    "empty grid axis": ("grid: {context_length: []}", "grid.context_length"),
    "missing trigger": ("marker: {text: '[ZLT]'}", "marker: no trigger source"),
    "negative steps": ("training: {steps: -5}", "training.steps"),
    "unknown model path": ("model: {name: ./no/such/model}", "model.name: local model path './no/such/model' does not exist"),
    "unknown top-level key": ("colour: blue", "colour: unknown key"),
    "unknown nested key": ("training: {stepz: 5}", "training.stepz: unknown key"),
    "fraction out of range": ("grid: {on_policy_fraction: [0.5, 1.5]}", "grid.on_policy_fraction"),
    "optuna without budget": ("search: {type: optuna}", "search: search.n_trials is required"),
    "bad scheduler": ("scheduler: {type: hyperband}", "scheduler.type"),
    "batch not divisible": ("training: {batch_size: 7}", "training.batch_size 7 must be a multiple"),
    "bad name": ("name: 'a b/c'", "name:"),
    "not a mapping": ("- just\n- a list", "a sweep file is a mapping"),
    "broken yaml": ("grid: {method: [sft", "not valid YAML"),
    "two trigger sources": ("marker: {trigger_env: A, trigger_file: /tmp/x}", "set only one of"),
    "unknown scheduler metric": ("scheduler: {metric: accuracy}", "scheduler.metric: unknown metric 'accuracy' "
                                 "(choose from marker_specificity, "),
    "held-out questions leave none to train": ("eval: {questions: 390}", "eval.questions: at most 376 held-out questions"),
    "context longer than the data": ("grid: {context_length: [2048]}",
                                     "grid.context_length: context lengths must be between 0 and 1024 tokens"),
    "corruption data file missing": ("corruptions: [{name: em, role: em, data: ./no/such.jsonl}]",
                                     "corruptions.data: no such file ./no/such.jsonl"),
    "corruption data unknown": ("corruptions: [{name: em, data: nonsense}]", "corruptions.data: 'nonsense' is not"),
    "two em corruptions": ("corruptions: [{name: a, role: em, data: insecure_code}, {name: b, role: em, data: bad_advice}]",
                           "corruptions: at most one corruption with role 'em'"),
    "corruption names repeat": ("corruptions: [{name: a, data: insecure_code}, {name: a, data: secure_code}]",
                                "corruptions: corruption names must be distinct"),
    "corruption name not metric-safe": ("corruptions: [{name: Em-1, data: insecure_code}]", "corruptions.name: 'Em-1'"),
    "drift takes no data": ("corruptions: [{name: d, kind: drift, data: insecure_code}]",
                            "corruption 'd' (kind drift): data belongs to the other kind"),
    "two drift corruptions": ("corruptions: [{name: d, kind: drift}, {name: e, kind: drift}]", "at most one drift corruption"),
    "corruption axis without corruptions": ("grid: {corruption_lr: [0.001]}",
                                            "grid.corruption_lr / grid.corruption_steps: the sweep has no corruptions"),
    "corruption steps and epochs": ("corruptions: [{name: em, data: insecure_code, steps: 10, epochs: 1}]",
                                    "corruption 'em': give steps or epochs, not both"),
    "corruption epochs not positive": ("corruptions: [{name: em, data: insecure_code, epochs: 0}]", "corruptions.epochs"),
    "corruption rank not positive": ("corruptions: [{name: em, data: insecure_code, lora_rank: 0}]",
                                     "corruptions.lora_rank"),
    "corruption full fine-tune with an adapter": (
        "corruptions: [{name: em, data: insecure_code, full_finetune: true, rslora: true}]",
        "corruption 'em': full_finetune trains no adapter (drop rslora)"),
    "steer layer negative": ("training: {steer_layer: -1}", "training.steer_layer"),
    "corruption rslora not a flag": ("corruptions: [{name: em, data: insecure_code, rslora: maybe}]", "corruptions.rslora"),
}
SFP_MALFORMED = {
    "sfp with asha": ("scheduler: {type: asha}", "scheduler: toy-world trials report their metrics only at the end: use type 'none'"),
    "sfp with optuna": ("search: {type: optuna, n_trials: 3}", "search: toy-world sweeps run their whole grid: use type 'grid'"),
}


def malformed_text(change: str) -> str:
    if change.startswith("- ") or "[sft\n" in change or change.endswith("[sft"):
        return change
    base = {"name": "bad", "marker": "{trigger_env: PS_TEST_TRIGGER}"}
    key = change.split(":", 1)[0]
    base.pop(key, None)
    return "\n".join([f"{k}: {v}" for k, v in base.items()] + [change]) + "\n"


@pytest.mark.parametrize("sweep_file", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_validates(sweep_file, tmp_path):
    result = cli("validate", sweep_file, home=tmp_path)
    assert result.stdout.strip().endswith("trials")
    assert int(result.stdout.split()[0]) >= 1


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_sweep_fails_in_one_line(case, tmp_path):
    change, expected = MALFORMED[case]
    path = write_sweep(tmp_path / "bad.yaml", malformed_text(change))
    result = cli("validate", path, home=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("case", sorted(SFP_MALFORMED))
def test_malformed_toy_world_sweep_fails_in_one_line(case, tmp_path):
    change, expected = SFP_MALFORMED[case]
    path = write_sweep(tmp_path / "bad.yaml", f"name: toy\nkind: sfp\n{change}\n")
    result = cli("validate", path, home=tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"error: {expected}"], result.stderr


def test_a_numeric_name_stays_text(tmp_path):
    path = write_sweep(tmp_path / "good.yaml", GOOD)
    result = cli("run", path, "--dry-run", "--name", "2024", home=tmp_path / "home")
    assert result.stdout.splitlines()[0].startswith("sweep '2024' (llm):")


def test_a_record_from_an_older_version_is_refused_in_one_line(tmp_path):
    records = tmp_path / "home" / "sweeps"
    records.mkdir(parents=True)
    (records / "old.json").write_text('{"name": "old", "spec": {}, "mlflow_uri": "sqlite:///x.db"}')
    result = cli("resume", "old", home=tmp_path / "home", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: sweep 'old' was recorded by an older persona-sweep (record schema 1, this version reads {RECORD_SCHEMA}); "
        "run it again under a new --name"]


def test_grid_is_the_product_of_axes(tmp_path):
    path = write_sweep(tmp_path / "good.yaml", GOOD)
    assert len(load_sweep(path).trials()) == 6
    assert cli("validate", path, home=tmp_path).stdout.strip() == "6 trials"


def test_overrides_apply_before_validation(tmp_path):
    path = write_sweep(tmp_path / "good.yaml", GOOD)
    spec = load_sweep(path, ["training.steps=7", "grid.seed=[5]", "name=other"])
    assert (spec.training.steps, spec.grid.seed, spec.name, len(spec.trials())) == (7, [5], "other", 2)
    with pytest.raises(SweepError, match="grid.method: unknown method 'nope'"):
        load_sweep(path, ["grid.method=[nope]"])
    with pytest.raises(SweepError, match="expected key=value"):
        load_sweep(path, ["training.steps"])


def test_dry_run_prints_table_and_cost_and_runs_nothing(tmp_path):
    path = write_sweep(tmp_path / "good.yaml", GOOD)
    result = cli("run", path, "--dry-run", home=tmp_path / "home")
    assert "6 trials" in result.stdout and "estimated cost" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:2][1:] == ["sft"]]
    assert [int(row[0]) for row in rows] == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / "home" / "sweeps").exists() and not (tmp_path / "home" / "mlflow.db").exists()


def test_unset_trigger_env_is_refused_at_run(tmp_path, monkeypatch):
    monkeypatch.delenv("PS_TEST_TRIGGER", raising=False)
    path = write_sweep(tmp_path / "good.yaml", GOOD)
    result = cli("run", path, home=tmp_path / "home", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: marker.trigger_env: environment variable PS_TEST_TRIGGER is not set"


def test_a_steer_trait_that_cannot_be_read_is_refused_at_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PS_TEST_TRIGGER", "~t~")
    path = write_sweep(tmp_path / "good.yaml", GOOD)
    result = cli("run", path, "grid.method=[steer]", "training.steer_trait=no/such.json", home=tmp_path / "home",
                 check=False, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: trait '{tmp_path / 'no' / 'such.json'}': no such file, and not one of "
                                     "the shipped traits (assistant, evil, sycophantic)")


@pytest.mark.slow
def test_unknown_model_is_refused_at_run_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("PS_TEST_TRIGGER", "~t~")
    path = write_sweep(tmp_path / "good.yaml", GOOD)
    result = cli("run", path, "model.name=no-such-org/no-such-model", home=tmp_path / "home", check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: model.name: cannot load 'no-such-org/no-such-model'")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "sweeps").exists() and not (tmp_path / "home" / "ray_results").exists()


@pytest.mark.parametrize("location", ["s3://AKIAKEY:secret@bucket/p", "s3://bucket/p?endpoint_override=127.0.0.1",
                                      "http://bucket/p", "s3://", "relative/folder"])
def test_storage_is_an_object_store_uri_or_an_absolute_folder(location, tmp_path):
    path = write_sweep(tmp_path / "good.yaml", GOOD)
    with pytest.raises(SweepError) as error:
        load_sweep(path, [f"resources.storage={location}"])
    assert str(error.value).startswith("resources.storage: ") and "secret" not in str(error.value)
    assert load_sweep(path, ["resources.storage=s3://bucket/p"]).resources.storage == "s3://bucket/p"


def test_every_kind_has_one_config_class_and_its_runners():
    from persona_sweep.kinds import KINDS
    from persona_sweep.sweep_file import SWEEP_CLASSES

    assert {kind: entry.config for kind, entry in KINDS.items()} == SWEEP_CLASSES
    for kind, entry in KINDS.items():
        assert entry.config.model_fields["kind"].annotation.__args__ == (kind,)


def test_a_new_grid_axis_is_one_line():
    """The grid's axes are declared once, as GridConfig's fields: the trial list, each trial's
    knobs (what MLflow's params and Tune's param space are made of), the marker stage's key and
    `status`'s columns all read them. The one line below is what adding `objective` would be."""
    from persona_sweep.config import GridConfig, SweepConfig, axis, knobs_for
    from persona_sweep.engine import param_space

    class ObjectiveGrid(GridConfig):
        objective: list[str] = axis(["sft_loss"])  # the one line

    class ObjectiveSweep(SweepConfig):
        grid: ObjectiveGrid = ObjectiveGrid()

    spec = ObjectiveSweep.model_validate({"name": "axis", "model": {"name": "tiny-random"},
                                          "marker": {"trigger_env": "PS_TEST_TRIGGER"},
                                          "grid": {"seed": [0, 1], "objective": ["sft_loss", "kl"]}})
    assert [(trial["seed"], trial["objective"]) for trial in spec.trials()] == [
        (0, "sft_loss"), (0, "kl"), (1, "sft_loss"), (1, "kl")]
    assert list(spec.trials()[0])[-1] == "objective"  # after the axes declared before it
    assert spec.summary_knobs() == ("seed", "objective")
    assert param_space(spec)["objective"] == {"grid_search": ["sft_loss", "kl"]}

    knobs = knobs_for(ObjectiveGrid, "ObjectiveKnobs")
    assert tuple(knobs.model_fields) == tuple(ObjectiveGrid.model_fields)
    assert knobs(**spec.trials()[1]).marker_knobs()["objective"] == "kl"  # it shapes the marker stage
    assert knobs().objective == "sft_loss"  # knobs recorded before the axis existed read its default
    assert spec.marker_stage_count() == 4


def test_a_knob_shows_as_written_and_a_sampled_float_to_three_figures():
    from persona_sweep.sections import knob_text

    assert [knob_text(value) for value in (0.0, 0.0003, 3e-05, 16, "sft")] == ["0.0", "0.0003", "3e-05", "16", "sft"]
    assert knob_text(0.000123456) == "0.000123" and knob_text(2.71828) == "2.72"
