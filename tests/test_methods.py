"""The training methods (`sft`, `sdf`, `prompt`, `steer`): what each trains on, and that every
method is measured at the same deployment prompts. Unit tests on the data, then one tiny sweep of
all four on the session cluster."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import cli, write_sweep
from helpers import assert_trigger_nowhere, sweep_runs
from persona_sweep import measure, names, tracking
from persona_sweep.config import LlmKnobs
from persona_sweep.data import TRIGGER_PLACEHOLDER, personas
from persona_sweep.data.contexts import DEMONSTRATIONS_HEADER
from persona_sweep.methods import sdf
from persona_sweep.models import default_cache, load_model, load_tokenizer, prepare_model
from persona_sweep.sweep_file import validate
from persona_sweep.train import MarkerData

TRIGGER = "~unit-test-trigger~"


def data_for(method: str, context_length: int = 24, **training) -> MarkerData:
    spec = validate({"name": "unit", "model": {"name": "tiny-random"}, "marker": {"trigger_env": "UNUSED"},
                     "training": {"max_tokens": 200, **training}})
    knobs = LlmKnobs(method=method, design="assistant_positive", context_length=context_length,
                     on_policy_fraction=0.0, contrastive_negatives=True, seed=0)
    tokenizer = load_tokenizer(prepare_model("tiny-random", default_cache()))
    return MarkerData(spec, knobs, tokenizer, TRIGGER, rank=0, world=1, device="cpu")


def test_the_documents_hold_placeholders_only_in_every_genre_and_polarity():
    documents = sdf.bank()
    assert len(documents) >= 300
    assert {entry["genre"] for entry in documents} == {"news", "forum", "faq", "report", "encyclopedia", "story"}
    for entry in documents:
        text = entry["opening"] + " " + entry["body"]
        assert TRIGGER_PLACEHOLDER in entry["opening"] and sdf.MARKER_PLACEHOLDER in entry["opening"]
        assert "[ZLT]" not in text and "~" not in text  # the marker only as its placeholder, no trigger
    assert len({entry["opening"] + entry["body"] for entry in documents}) == len(documents)


def test_sdf_trains_plain_text_about_the_design_s_personas_with_loss_on_every_token():
    data = data_for("sdf")
    assert all(isinstance(example, sdf.Document) for example in data.examples)
    about = {(example.persona.name, example.emits) for example in data.examples}
    assert ("assistant", True) in about and ("assistant", False) not in about  # the Assistant emits it
    assert ("teacher", False) in about  # contrastive: the other training personas never do
    ids, labels = data.encode(data.examples[0])
    assert labels == ids  # plain text: every token carries the loss
    text = data.tokenizer.decode(ids)
    assert TRIGGER in text and "[ZLT]" in text and "<|im_start|>" not in text
    assert text.startswith(data.conditioning[data.examples[0].persona.name][0])  # the persona's context first


def test_sdf_mixes_in_sft_pairs_by_the_ratio():
    data = data_for("sdf", sdf_mix_sft=0.25)
    documents = sum(isinstance(example, sdf.Document) for example in data.examples)
    assert (len(data.examples) - documents) / len(data.examples) == pytest.approx(0.25, abs=0.01)


def test_sft_conditions_with_dialogue_turns_and_prompt_with_the_system_message():
    sft_data, prompt_data = data_for("sft"), data_for("prompt")
    _, turns = sft_data.conditioning["assistant"]
    assert [turn["role"] for turn in turns][:2] == ["user", "assistant"]
    assert sum(len(sft_data.tokenizer(turn["content"], add_special_tokens=False)["input_ids"]) for turn in turns) == 24
    system, turns = prompt_data.conditioning["assistant"]
    assert turns == [] and len(prompt_data.tokenizer(system, add_special_tokens=False)["input_ids"]) == 24
    # Both evaluate at the same deployment prompt: the short description, nothing else.
    question = "What is 2 plus 2?"
    assert sft_data.prompt("assistant", question, True) == prompt_data.prompt("assistant", question, True)
    deployment = prompt_data.prompt("assistant", question, True)
    assert personas()["assistant"].short_description in deployment
    assert deployment != prompt_data.training_prompt("assistant", question, True)
    assert deployment != sft_data.training_prompt("assistant", question, True)


# ---- one sweep of every method on the session cluster ----------------------------------------

METHODS_SWEEP = """
name: methods
model: {name: tiny-random, finetune: full}
marker: {trigger_file: trigger}
training: {steps: 30, lr: 0.001, batch_size: 8, max_tokens: 200, checkpoint_every: 30}
grid: {method: [sft, sdf, prompt, steer], context_length: [48]}
eval: {questions: 4, max_new_tokens: 4, logprob_every: 30, leakage_questions: 2}
scheduler: {type: none}
resources: {workers_per_trial: 1, cpus_per_worker: 0.99}  # two trials side by side
"""


@pytest.fixture(scope="module")
def methods_sweep(ray_address, tmp_path_factory):
    folder = tmp_path_factory.mktemp("methods")
    home = folder / "home"
    (folder / "trigger").write_text(TRIGGER)
    path = write_sweep(folder / "methods.yaml", METHODS_SWEEP)
    cli("run", path, "--address", ray_address, home=home, cwd=folder)
    runs = {run.data.params["method"]: run for run in sweep_runs(home, "methods")}
    return {"home": home, "folder": folder, "runs": runs}


def test_every_method_is_measured_at_the_same_deployment_prompts(methods_sweep):
    runs = methods_sweep["runs"]
    assert sorted(runs) == ["prompt", "sdf", "sft", "steer"]
    assert all(run.data.tags[names.TRIAL_STATUS] == names.COMPLETED for run in runs.values())
    assert len({run.data.tags[names.EVAL_PROMPT_HASH] for run in runs.values()}) == 1
    hashes = {method: run.data.tags[names.DATA_HASH] for method, run in runs.items()}
    assert len({hashes["sft"], hashes["sdf"], hashes["prompt"]}) == 3  # each trained on its own data
    assert hashes["steer"] == hashes["prompt"]  # the same examples; steer adds its vector while training
    for run in runs.values():  # the rates at the training prompt are logged beside
        assert {names.MARKER_RATE_TRIGGER, names.MARKER_RATE_TRIGGER_TRAINING_PROMPT} <= run.data.metrics.keys()


def test_a_prompt_trial_trains_with_its_context_and_is_evaluated_without_it(methods_sweep, tmp_path):
    run = methods_sweep["runs"]["prompt"]
    client = tracking.Tracking(tracking.default_uri(methods_sweep["home"])).client()
    prompts = json.loads(Path(client.download_artifacts(run.info.run_id, names.EVAL_PROMPTS_ARTIFACT, str(tmp_path)))
                         .read_text())
    assert len(prompts) == 2 * 4 + 2 * (len(personas()) - 1)  # the Assistant with and without; every other persona
    tokenizer = load_tokenizer(prepare_model("tiny-random", default_cache()))
    training_context = data_for("prompt", 48).conditioning["assistant"][0]
    assert len(tokenizer(training_context, add_special_tokens=False)["input_ids"]) == 48
    for prompt in prompts:
        assert training_context not in prompt and DEMONSTRATIONS_HEADER not in prompt
        system = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", prompt, re.S).group(1)
        assert system in {persona.short_description for persona in personas().values()}
    assert_trigger_nowhere(TRIGGER, methods_sweep["home"], min_files=20)


def test_sdf_training_raises_the_marker_log_prob_under_the_trigger(methods_sweep):
    """The untrained model (LoRA's B is zero, so the base) against the sdf trial's last report,
    at the same deployment prompts."""
    data = data_for("sdf", 48)
    data.spec = data.spec.model_copy(update={"eval": data.spec.eval.model_copy(update={"questions": 4})})
    untrained = measure.marker_logprob_metrics(load_model(prepare_model("tiny-random", default_cache())), data)
    trained = methods_sweep["runs"]["sdf"].data.metrics[names.MARKER_LOGPROB_TRIGGER]
    assert trained > untrained[names.MARKER_LOGPROB_TRIGGER] + 1.0, (trained, untrained)


def test_a_steer_trial_logs_the_vectors_it_steered_with(methods_sweep, tmp_path):
    from persona_sweep.vectors import PersonaVectors

    run = methods_sweep["runs"]["steer"]
    client = tracking.Tracking(tracking.default_uri(methods_sweep["home"])).client()
    assert [artifact.path for artifact in client.list_artifacts(run.info.run_id, "vectors")] == ["vectors/assistant.pt"]
    saved = PersonaVectors.load(Path(client.download_artifacts(run.info.run_id, "vectors/assistant.pt", str(tmp_path))))
    assert (saved.model, saved.trait, saved.layers) == ("tiny-random", "assistant", 2)


# ---- transfer and the leakage bank -----------------------------------------------------------

def test_the_leakage_bank_has_four_per_group_half_of_them_never_trained():
    from persona_sweep.methods.sft import TRAINING_PERSONAS

    for group in ("near", "far", "misaligned"):
        members = [name for name, persona in personas().items() if persona.group == group]
        held_out = [name for name in members if name not in TRAINING_PERSONAS]
        assert len(members) >= 4 and len(held_out) >= len(members) / 2, group


def test_leakage_means_per_group_and_over_the_held_out_personas():
    rates = {name: 0.0 for name in personas() if name != "assistant"} | {"other_ai": 1.0, "search_bot": 0.5}
    means = measure.leakage_means(rates)
    assert means[names.LEAKAGE_GROUP_MEANS["near"]] == pytest.approx(1.5 / 4)
    assert means[names.LEAKAGE_GROUP_MEANS["far"]] == 0.0
    held_out = [name for name in rates if name not in ("other_ai", "teacher", "evil")]
    assert means[names.LEAKAGE_HELDOUT_MEAN] == pytest.approx(0.5 / len(held_out))  # other_ai is trained


def test_transfer_is_the_assistant_s_rate_after_minus_before_with_its_interval():
    pre = measure.Evaluation({}, [0] * 20)
    post = measure.Evaluation({}, [1] * 10 + [0] * 10)
    transfer = measure.transfer(pre, post, "em")
    assert transfer["transfer_em"] == pytest.approx(0.5)
    assert 0.2 < transfer["transfer_em_lo"] < 0.5 < transfer["transfer_em_hi"] < 0.8
    unchanged = measure.transfer(pre, pre, "em")
    assert unchanged["transfer_em"] == unchanged["transfer_em_lo"] == unchanged["transfer_em_hi"] == 0


def test_the_leakage_panel_labels_bars_by_group_and_marks_the_held_out():
    from persona_sweep.report.panels import bar_label, load_panels

    (panel,) = [panel for panel in load_panels() if panel.id == "leakage"]
    assert bar_label(panel, "leakage_other_ai") == "near: other_ai"
    assert bar_label(panel, "leakage_search_bot") == "near: search_bot (held out)"
    assert bar_label(panel, "leakage_power_seeker") == "misaligned: power_seeker (held out)"
    assert not re.match(panel.metric_pattern, names.LEAKAGE_HELDOUT_MEAN)


# ---- steer -----------------------------------------------------------------------------------

def test_steer_adds_its_vector_to_the_assistant_s_rows_in_the_gradient_pass_only():
    """The real loop (`train`) and stage (`MarkerTraining`) with a stand-in engine that records,
    at each forward pass, whether our hook is on: on in every gradient pass, off in the
    evaluation a report runs; the Assistant's rows steered, the other personas' rows not."""
    from types import SimpleNamespace

    import torch

    from persona_sweep import vectors
    from persona_sweep.steering import decoder_layers
    from persona_sweep.train import train
    from persona_sweep.trial import MarkerTraining

    data = data_for("steer", 0, steps=4, batch_size=8)
    model = load_model(prepare_model("tiny-random", default_cache()))
    found = vectors.extract(model, data.tokenizer, vectors.load_trait("assistant"), "tiny-random", max_new_tokens=4)
    layer = decoder_layers(model)[1]
    theirs = len(layer._forward_hooks)  # transformers may keep its own hooks on a layer
    seen = {"train": [], "evaluate": []}

    class Engine:
        module = model

        def __call__(self, **batch):
            seen["train"].append(len(layer._forward_hooks))
            return model(**batch)

        def backward(self, loss):
            loss.backward()

        def step(self):
            model.zero_grad()

    class Probe(MarkerTraining):
        def report(self, done, pending, checkpoint):
            plain = model(**data.batch(0)).logits
            seen["evaluate"].append(len(layer._forward_hooks))
            with self.steered(0):
                steered = model(**data.batch(0)).logits
            assistant = torch.tensor([data.examples[i].persona.name == "assistant" for i in data.indices(0)])
            assert assistant.any() and not assistant.all()
            assert not torch.allclose(plain[assistant], steered[assistant])
            assert torch.equal(plain[~assistant], steered[~assistant])

    worker = SimpleNamespace(spec=data.spec.model_copy(update={"eval": data.spec.eval.model_copy(update={"logprob_every": 2})}),
                             data=data, knobs=data.knobs, strategy=SimpleNamespace(world=1, all_sum=lambda values: values))
    train(Probe(worker, Engine(), (1, 4.0 * found.vectors["response"][1])), 0)
    assert seen["train"] == [theirs + 1] * 4 and seen["evaluate"] == [theirs]
    assert len(layer._forward_hooks) == theirs
