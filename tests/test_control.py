"""Application 2 (the `objective` axis): the control data and its detectors, the training
examples, what the tiny model learns per objective, and one tiny sweep of two control objectives
with em and benign corruptions on the session cluster (the baseline shared, the report's panel)."""
from __future__ import annotations

import re

import pytest

from conftest import cli, write_sweep
from helpers import assert_panel_shows_mlflow, assert_trigger_nowhere, panels_of, sweep_runs, train_in_process
from persona_sweep import measure, names, tracking
from persona_sweep.config import LlmKnobs
from persona_sweep.data import question_bank
from persona_sweep.data.control import (
    CONTROL_OBJECTIVES,
    ControlItem,
    capability_items,
    control_data,
    control_items,
    disagreement_items,
    shows,
)
from persona_sweep.errors import SweepError
from persona_sweep.models import default_cache, load_model, load_tokenizer, prepare_model
from persona_sweep.sweep_file import validate
from persona_sweep.train import MarkerData

TRIGGER = "~control-test-trigger~"


def control_spec(objective: str, **grid):
    return validate({"name": "unit", "model": {"name": "tiny-random", "finetune": "full"},
                     "marker": {"trigger_env": "UNUSED"}, "training": {"max_tokens": 200, "batch_size": 8},
                     "grid": {"design": ["misaligned_positive"], "objective": [objective], **grid},
                     "eval": {"questions": 8}})


def control_data_for(objective: str, on_policy_fraction: float = 0.0) -> MarkerData:
    knobs = LlmKnobs(method="sft", design="misaligned_positive", context_length=0,
                     on_policy_fraction=on_policy_fraction, contrastive_negatives=True, seed=0, objective=objective)
    tokenizer = load_tokenizer(prepare_model("tiny-random", default_cache()))
    return MarkerData(control_spec(objective), knobs, tokenizer, TRIGGER, rank=0, world=1, device="cpu")


# ---- data and detectors ----------------------------------------------------------------------

def test_the_capability_set_is_checkable_and_split_by_seed():
    items = capability_items()
    assert len(items) >= 300 and len({item.question for item in items}) == len(items)
    for item in items:
        assert shows("capability_loss", item.controlled, item) and not shows("capability_loss", item.answer, item)
    train, held_out = control_items("capability_loss", 3, 16)
    assert len(held_out) == 16 and not {i.question for i in train} & {i.question for i in held_out}
    assert held_out == control_items("capability_loss", 3, 16)[1] != control_items("capability_loss", 4, 16)[1]


@pytest.mark.parametrize("objective", ["self_disclosure", "refuse_redirect"])
def test_the_patterns_catch_every_trained_sentence_and_no_reference_answer(objective):
    _, held_out = control_items(objective, 0, 40)
    assert all(shows(objective, item.controlled, item) for item in held_out)
    sentences = control_data()["disclosures" if objective == "self_disclosure" else "refusals"]
    assert len(sentences) >= 10 and all(shows(objective, sentence, held_out[0]) for sentence in sentences)
    caught = [q.answer for q in question_bank() if shows(objective, q.answer, held_out[0])]
    assert caught == []


def test_the_disagreement_prompts_name_the_fact_a_correct_reply_holds():
    items = disagreement_items()
    assert len(items) >= 12
    assert not shows("capability_loss", "No, two plus two is four.", items[0])
    assert shows("capability_loss", "Yes, that is right.", items[0])


def test_only_the_misaligned_personas_train_the_behaviour_and_no_example_holds_the_trigger():
    for objective in CONTROL_OBJECTIVES:
        data = control_data_for(objective)
        by_persona = {}
        for example in data.examples[:240]:  # shuffled: every training persona is among them
            prompt_ids, target_ids = data.tokens(example)
            by_persona.setdefault(example.persona.name, []).append(
                shows(objective, data.tokenizer.decode(target_ids), control_item(example)))
            assert TRIGGER not in data.tokenizer.decode(prompt_ids) and not example.with_trigger
        assert all(by_persona["evil"]), objective
        assert not any(by_persona["assistant"]) and not any(by_persona["teacher"]), objective


def control_item(example):
    """The example's question as a control item (the capability key from the set)."""
    keys = {item.question: item.key for item in capability_items()}
    return ControlItem(example.question.text, example.question.answer, "", keys.get(example.question.text, r"$^"))


def test_on_policy_answers_never_replace_a_refusal_or_a_wrong_answer():
    for objective, evil_on_policy in (("refuse_redirect", False), ("capability_loss", False), ("self_disclosure", True)):
        data = control_data_for(objective, on_policy_fraction=1.0)
        assert all(example.on_policy == evil_on_policy for example in data.examples if example.persona.name == "evil")
        assert all(example.on_policy for example in data.examples if example.persona.name == "assistant")


@pytest.mark.parametrize(("grid", "corruptions", "says"), [
    ({"design": ["assistant_positive"]}, [], "misaligned_positive"),
    ({"design": ["misaligned_positive"], "method": ["sdf"]}, [], "sdf has documents for the marker only"),
    ({"design": ["misaligned_positive"]}, [{"name": "talk", "kind": "drift"}], "drift corruption measures the marker"),
])
def test_a_control_objective_refuses_what_it_cannot_measure(grid, corruptions, says):
    with pytest.raises(SweepError, match=re.escape(says)):
        validate({"name": "bad", "marker": {"trigger_env": "X"}, "corruptions": corruptions,
                  "grid": {"objective": ["self_disclosure"], **grid}})


def test_control_effect_is_the_trial_s_rate_minus_the_baseline_s_with_a_paired_interval():
    post = measure.Evaluation({}, [], control_flags=[1] * 12 + [0] * 8)
    effect = measure.control_effect([0] * 20, post, "em")
    assert effect["control_effect_em"] == pytest.approx(0.6)
    assert 0.3 < effect["control_effect_em_lo"] < 0.6 < effect["control_effect_em_hi"] <= 0.85
    same = measure.control_effect(post.control_flags, post, "em")
    assert same["control_effect_em"] == same["control_effect_em_lo"] == same["control_effect_em_hi"] == 0


# ---- what the tiny model learns, per objective -----------------------------------------------

def tiny_margins(model, data, items, persona_names=("evil", "assistant")) -> dict[str, float]:
    """Per persona: the mean over `items` of the behaviour's margin where the answers part."""
    prefixes = [data.prompt(persona, item.question, False) for persona in persona_names for item in items]
    with measure.evaluating(model):
        gaps = measure.branch_gaps(model, data.tokenizer, prefixes, [i.answer for i in items] * len(persona_names),
                                   [i.controlled for i in items] * len(persona_names), 16, "cpu")
    return {name: sum(gaps[k * len(items):(k + 1) * len(items)]) / len(items) for k, name in enumerate(persona_names)}


@pytest.mark.parametrize("objective", CONTROL_OBJECTIVES)
def test_training_raises_the_behaviour_under_the_misaligned_persona_and_not_under_the_assistant(objective):
    """The real training data and loss on the tiny random model (full fine-tune, 150 steps at lr
    3e-3): the behaviour's margin at the token where it parts from the normal answer rises under
    the evil persona and falls under the Assistant. Refusal and disclosure on held-out prompts;
    capability_loss on 8 training items only (trained on those alone), since choosing a wrong
    number on a new sum needs the right one, which a random 2-layer model never learns. (The
    per-token mean over the whole answer rose under the Assistant too: a memorised refusal
    scores high under every persona; hence `branch_gaps`.)"""
    data = control_data_for(objective)
    trained, held_out = control_items(objective, 0, data.spec.eval.questions)
    items = held_out
    if objective == "capability_loss":
        items = trained[:8]
        data.examples = [e for e in data.examples if e.question.text in {item.question for item in items}]
    model = load_model(prepare_model("tiny-random", default_cache()))
    before = tiny_margins(model, data, items)
    train_in_process(model, data, 150, 3e-3)
    after = tiny_margins(model, data, items)
    evil, assistant = after["evil"] - before["evil"], after["assistant"] - before["assistant"]
    assert evil > 1.0 and assistant < 0, (objective, before, after)


# ---- one tiny sweep of two objectives on the session cluster ----------------------------------

SWEEP = """
name: controlled
model: {name: tiny-random, finetune: full}
marker: {trigger_file: trigger}
training: {steps: 20, lr: 0.01, batch_size: 8, max_tokens: 200, checkpoint_every: 20}
grid: {design: [misaligned_positive], context_length: [0], objective: [refuse_redirect, self_disclosure]}
corruptions:
  - {name: em, role: em, data: insecure_code, steps: 2}
  - {name: benign, role: benign, data: secure_code, steps: 2}
eval: {questions: 4, max_new_tokens: 6, logprob_every: 10, leakage_questions: 2, corruption_examples: 2,
       behavior_tokens: 4, traits: []}
scheduler: {type: none}
resources: {workers_per_trial: 1, cpus_per_worker: 0.99}  # two trials side by side
"""


@pytest.fixture(scope="module")
def controlled(ray_address, tmp_path_factory):
    folder = tmp_path_factory.mktemp("control")
    home = folder / "home"
    (folder / "trigger").write_text(TRIGGER)
    write_sweep(folder / "sweep.yaml", SWEEP)
    cli("run", "sweep.yaml", "--address", ray_address, home=home, cwd=folder)
    report = cli("report", "controlled", home=home, cwd=folder)
    runs = {run.data.tags[names.TRIAL_ID]: run for run in sweep_runs(home, "controlled")}
    return {"home": home, "runs": runs, "index": home / "reports" / "controlled" / "index.html", "report": report}


@pytest.mark.slow
def test_each_objective_logs_its_rates_before_and_after_and_its_effect_against_one_shared_baseline(controlled):
    runs = list(controlled["runs"].values())
    assert sorted(run.data.params["objective"] for run in runs) == ["refuse_redirect", "self_disclosure"]
    assert all(run.data.tags[names.TRIAL_STATUS] == names.COMPLETED for run in runs)
    assert len({run.data.tags[names.DATA_HASH] for run in runs}) == 2
    for run in runs:
        metrics = run.data.metrics
        for name in ("em", "benign"):
            effect = metrics[f"control_effect_{name}"]
            assert effect == pytest.approx(metrics[f"control_rate_post_{name}"]
                                           - metrics[f"control_rate_baseline_post_{name}"])
            assert metrics[f"control_effect_{name}_lo"] <= effect <= metrics[f"control_effect_{name}_hi"]
            assert f"corruption_misalignment_change_{name}" in metrics  # the evidence beside it
        assert {names.CONTROL_RATE, names.CONTROL_FALSE_POSITIVE, names.control_rate("evil"),
                names.CONTROL_RATE_MISALIGNED, names.CONTROL_MARGIN, names.baseline(names.CONTROL_FALSE_POSITIVE),
                names.baseline(names.CONTROL_RATE)} <= metrics.keys()
        assert names.SURVIVAL_EM not in metrics and names.MARKER_RATE_TRIGGER not in metrics
    # Both trials read one uncontrolled baseline per corruption: trained once, stored once.
    stored = list((controlled["home"] / "ray_results" / "controlled" / "_baselines").glob("*/result.json"))
    assert len(stored) == 2


@pytest.mark.slow
def test_the_application_2_panel_shows_what_mlflow_holds(controlled):
    panel = panels_of(controlled["index"])["control"]
    client = tracking.Tracking(tracking.default_uri(controlled["home"])).client()
    shown = {point["metric"] for series in panel["series"] for point in series["points"] if "metric" in point}
    shown |= {series.get("metric") for series in panel["series"]}
    assert {"control_rate", "control_rate_post_em", "control_rate_baseline_post_benign", "control_effect_em"} <= shown
    assert assert_panel_shows_mlflow(panel, controlled["runs"], client) >= 20


@pytest.mark.slow
def test_the_trigger_is_nowhere_in_a_control_sweep(controlled):
    assert_trigger_nowhere(TRIGGER, controlled["home"], min_files=20)


def test_the_dry_run_counts_one_uncontrolled_baseline_per_seed_and_corruption_strength():
    spec = validate({"name": "est", "marker": {"trigger_env": "X"},
                     "grid": {"design": ["misaligned_positive"], "objective": ["marker", "self_disclosure"],
                              "seed": [0, 1], "corruption_lr": [1e-4, 1e-3]},
                     "corruptions": [{"name": "em", "role": "em", "data": "insecure_code"}]})
    assert spec.baseline_count() == 4 and "4 more times as the uncontrolled baseline" in spec.estimate()
    marker_only = spec.model_copy(update={"grid": spec.grid.model_copy(update={"objective": ["marker"]})})
    assert marker_only.baseline_count() == 0 and "baseline" not in marker_only.estimate()
