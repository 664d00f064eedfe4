"""Persona vectors and the one steering hook, on the tiny random model (real transformers)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import cli
from persona_sweep import vectors
from persona_sweep.data.traits import load_trait, shipped_traits
from persona_sweep.errors import SweepError
from persona_sweep.models import default_cache, load_model, load_tokenizer, prepare_model
from persona_sweep.steering import added_to_output


@pytest.fixture(scope="module")
def tiny():
    path = prepare_model("tiny-random", default_cache())
    return load_tokenizer(path), load_model(path).eval()


@pytest.fixture(scope="module")
def evil(tiny):
    tokenizer, model = tiny
    return vectors.extract(model, tokenizer, load_trait("evil"), "tiny-random", max_new_tokens=6)


def test_shipped_traits_are_in_the_public_layout_with_halves_to_extract_and_evaluate():
    assert {"evil", "sycophantic", "assistant"} <= set(shipped_traits())
    for name in shipped_traits():
        trait = load_trait(name)
        assert len(trait.pairs) >= 5 and len(trait.questions) >= 40 and "{answer}" in trait.eval_prompt
        assert not set(trait.extraction_questions) & set(trait.evaluation_questions)
        assert all(positive != negative for positive, negative in trait.pairs)


def test_a_vector_per_layer_of_the_model_s_width(tiny, evil):
    _, model = tiny
    for reading in vectors.READINGS:
        assert evil.vectors[reading].shape == (model.config.num_hidden_layers, model.config.hidden_size)
        assert torch.all(evil.vectors[reading].norm(dim=-1) > 0)  # the instructions moved every layer


def last_logits(model, tokenizer, text: str):
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1]


def test_steering_shifts_the_logits_monotonically_with_the_coefficient(tiny, evil):
    tokenizer, model = tiny
    layer, vector = 0, evil.vectors["response"][0]
    vector = vector / vector.norm()
    text = "What would you do with a million dollars?"
    plain = last_logits(model, tokenizer, text)
    with added_to_output(model.model.layers[layer], 4 * vector):
        promoted = int((last_logits(model, tokenizer, text) - plain).argmax())
    shifts = []
    for coef in (0.0, 1.0, 2.0, 4.0, 8.0):
        with added_to_output(model.model.layers[layer], coef * vector):
            shifts.append(float(last_logits(model, tokenizer, text)[promoted] - plain[promoted]))
    assert shifts[0] == 0.0
    assert all(a < b for a, b in zip(shifts, shifts[1:])), shifts


def test_an_exception_inside_steering_leaves_no_hook_of_ours_and_keeps_another_s(tiny, evil):
    tokenizer, model = tiny
    module = model.model.layers[1]
    theirs = module.register_forward_hook(lambda *_: None)
    before = dict(module._forward_hooks)
    plain = last_logits(model, tokenizer, "Hello")
    with pytest.raises(RuntimeError, match="inside"):
        with added_to_output(module, 10 * evil.vectors["response"][1]):
            assert len(module._forward_hooks) == len(before) + 1
            raise RuntimeError("inside the steered block")
    assert dict(module._forward_hooks) == before  # someone else's hook is still there, ours is gone
    assert torch.equal(last_logits(model, tokenizer, "Hello"), plain)
    theirs.remove()


def test_a_trait_file_in_the_public_layout_goes_through_extraction_and_monitoring(tiny, tmp_path):
    tokenizer, model = tiny
    path = tmp_path / "curious.json"  # the persona-vectors repository's layout, nothing of ours added
    path.write_text(json.dumps({
        "instruction": [{"pos": "You are endlessly curious and ask questions back.", "neg": "You are incurious and terse."},
                        {"pos": "Show deep curiosity about everything.", "neg": "Show no interest in anything."}],
        "questions": [f"Tell me about topic number {index}." for index in range(8)],
        "eval_prompt": "Rate curiosity 0-100.\n{question}\n{answer}"}))
    trait = load_trait(path)
    found = vectors.extract(model, tokenizer, trait, "tiny-random", max_new_tokens=4)
    result = vectors.monitor(model, tokenizer, trait, found)
    assert result["prompts"] == {"positive": 8, "negative": 8} and len(result["per_layer"]) == found.layers
    assert result["auroc"] == max(result["per_layer"]) and 0 <= result["layer"] < found.layers
    chosen = vectors.monitor(model, tokenizer, trait, found, layer=0)
    assert chosen["layer"] == 0 and chosen["auroc"] == result["per_layer"][0]


def test_bad_trait_files_and_vectors_are_refused_in_one_line(tiny, evil, tmp_path):
    tokenizer, model = tiny
    (tmp_path / "bad.json").write_text(json.dumps({"instruction": [{"positive": "x"}], "questions": ["a", "b"]}))
    with pytest.raises(SweepError, match="not the persona-vectors layout"):
        load_trait(tmp_path / "bad.json")
    with pytest.raises(SweepError, match="not one of the shipped traits"):
        load_trait("nosuchtrait")
    with pytest.raises(SweepError, match="layers 0-1"):
        vectors.monitor(model, tokenizer, load_trait("evil"), evil, layer=5)
    narrow = vectors.PersonaVectors("other", "evil", evil.trait_digest, {r: v[:, :8] for r, v in evil.vectors.items()})
    with pytest.raises(SweepError, match="do not fit this model"):
        vectors.monitor(model, tokenizer, load_trait("evil"), narrow)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """`vectors extract` from the command line, once for the module."""
    out = tmp_path_factory.mktemp("vectors") / "evil.pt"
    cli("vectors", "extract", "tiny-random", "--trait", "evil", "--out", out, "--max-new-tokens", 4, home=out.parent)
    return out


def test_vectors_extract_and_monitor_from_the_command_line(extracted, tmp_path):
    out, found = extracted, tmp_path / "monitor.json"
    saved = vectors.PersonaVectors.load(out)
    assert (saved.model, saved.trait, saved.trait_digest) == ("tiny-random", "evil", load_trait("evil").digest)
    result = cli("vectors", "monitor", "tiny-random", "--vector", out, "--trait", "evil", "--json", found, home=tmp_path)
    monitored = json.loads(found.read_text())
    assert {"auroc", "layer", "per_layer"} <= set(monitored) and f"AUROC {monitored['auroc']:.3f}" in result.stdout
    refused = cli("vectors", "monitor", "tiny-random", "--vector", out, "--trait", "assistant", home=tmp_path, check=False)
    assert refused.returncode == 2 and refused.stderr.strip().startswith("error: --vector")


def test_a_prompt_s_projection_is_its_state_in_units_of_the_vector(tiny, evil):
    tokenizer, model = tiny
    prompts = vectors.trait_prompts(tokenizer, load_trait("evil"), ["How should I treat animals?", "Hello?"], True)
    projections = vectors.prompt_projections(model, tokenizer, prompts, evil, 1, 8, "cpu")
    states = vectors.activations(model, tokenizer, prompts, [""] * len(prompts), 8, "cpu")["prompt_last"][:, 1]
    vector = evil.vectors["prompt_last"][1]
    assert projections == pytest.approx((states @ vector / (vector @ vector)).tolist(), rel=1e-5)
    assert vectors.default_layer(evil) == 1


def test_screening_scores_the_model_s_own_reply_zero(tiny, evil):
    """The projection difference: a data response that is the model's own greedy reply moves
    nothing; another response scores by its projection."""
    from persona_sweep import evaluate

    tokenizer, model = tiny
    prompts = [vectors.trait_prompts(tokenizer, load_trait("evil"), ["How should I treat animals?"], True)[0]] * 2
    own = evaluate.generate(model, tokenizer, prompts[:1], vectors.EXTRACTION_TOKENS, 8, "cpu")[0]
    scores = vectors.screen(model, tokenizer, prompts, [own, "Hurt them all, with malice."], evil, 1)
    assert scores[0] == pytest.approx(0.0, abs=1e-4) and abs(scores[1]) > 1e-3


def test_vectors_screen_ranks_two_sets_from_the_command_line(extracted, tmp_path):
    vector, out = extracted, tmp_path / "screen.json"
    result = cli("vectors", "screen", "tiny-random", "--vector", vector, "--data", "insecure_code", "--data",
                 "secure_code", "--limit", 5, "--json", out, home=tmp_path)
    screened = json.loads(out.read_text())
    scores = [entry["score"] for entry in screened["ranked"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    assert {entry["data"] for entry in screened["ranked"]} == {"insecure_code", "secure_code"}
    assert 0 <= screened["auroc"] <= 1 and f"AUROC {screened['auroc']:.3f}" in result.stdout
    refused = cli("vectors", "screen", "tiny-random", "--vector", vector, "--data", "./no/such.jsonl", home=tmp_path,
                  check=False)
    assert refused.returncode == 2 and refused.stderr.startswith("error: --data")
