"""The Assistant axis, activation capping and the drift conversations (seed 002), on the tiny
random model (real transformers)."""
from __future__ import annotations

import pytest
import torch

from conftest import cli
from persona_sweep import axis as assistant_axis
from persona_sweep.data.conversations import load_domain, shipped_domains
from persona_sweep.errors import SweepError
from persona_sweep.models import default_cache, load_model, load_tokenizer, prepare_model
from persona_sweep.steering import decoder_layers


@pytest.fixture(scope="module")
def tiny():
    path = prepare_model("tiny-random", default_cache())
    return load_tokenizer(path), load_model(path).eval()


@pytest.fixture(scope="module")
def built(tiny):
    tokenizer, model = tiny
    return assistant_axis.build(model, tokenizer, "tiny-random", questions=1, reply_tokens=4)


def test_the_shipped_drift_domains_are_two_that_drift_and_two_that_stay():
    domains = {name: load_domain(name) for name in shipped_domains()}
    assert {name for name, domain in domains.items() if domain.drifts} == {"therapy", "philosophy"}
    assert {name for name, domain in domains.items() if not domain.drifts} == {"coding", "writing"}
    for domain in domains.values():
        assert len(domain.conversations) >= 12 and domain.turns == 16
        assert len({conversation for conversation in domain.conversations}) == len(domain.conversations)


def test_a_drift_file_not_in_the_layout_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("conversations: [[hello]]\n")
    with pytest.raises(SweepError, match="not the drift layout"):
        load_domain(bad)
    with pytest.raises(SweepError, match="not one of the shipped drift domains"):
        load_domain("gardening")


def test_the_axis_has_one_vector_per_layer_and_the_assistant_sits_above_its_floor(built, tiny):
    _, model = tiny
    layers = len(decoder_layers(model))
    assert built.vectors.shape == (layers, model.config.hidden_size) and built.layers == layers
    assert built.roles_digest == assistant_axis.roles_digest() and built.layer == layers // 2
    assert built.assistant.shape == (2 * 1, layers)  # two Assistant prompts x one question
    assert all(built.vectors[layer].norm() > 0 for layer in range(layers))


def test_capping_holds_the_projection_at_the_floor_on_the_capped_layer_only(built, tiny):
    tokenizer, model = tiny
    ids = tokenizer("You are a pirate. Tell me about the sea.", return_tensors="pt")["input_ids"]
    capped_layer, other = 0, 1
    floor = 1e3  # far above anything: every position is lifted to it
    built.assistant[:, capped_layer] = floor  # the floor is a percentile of these
    with torch.no_grad():
        free = model(ids, output_hidden_states=True).hidden_states
        with assistant_axis.capped(model, built, [capped_layer]):
            held = model(ids, output_hidden_states=True).hidden_states
    unit = built.unit(capped_layer)
    assert torch.allclose(held[capped_layer + 1][0] @ unit, torch.full((ids.shape[1],), floor), rtol=1e-4)
    # Only the component along the axis moved on the capped layer.
    moved = held[capped_layer + 1][0] - free[capped_layer + 1][0]
    assert torch.allclose(moved - (moved @ unit)[:, None] * unit, torch.zeros_like(moved), atol=1e-3)
    assert torch.allclose(held[0], free[0])  # before the capped layer: untouched
    assert not torch.allclose(held[other + 1], free[other + 1])  # after it: the change flows on
    with torch.no_grad():
        again = model(ids, output_hidden_states=True).hidden_states
    assert torch.allclose(again[capped_layer + 1], free[capped_layer + 1])  # the hook went with the block


def test_no_hook_remains_after_an_exception_inside_capping(built, tiny):
    _, model = tiny
    blocks = decoder_layers(model)
    theirs = blocks[0].register_forward_hook(lambda *_: None)
    before = [list(block._forward_hooks) for block in blocks[:2]]  # transformers' own hooks too
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with assistant_axis.capped(model, built, [0, 1]):
                assert [len(block._forward_hooks) for block in blocks[:2]] == [len(hooks) + 1 for hooks in before]
                raise RuntimeError("inside the capped block")
        assert [list(block._forward_hooks) for block in blocks[:2]] == before and theirs.id in before[0]
    finally:
        theirs.remove()


def test_project_answers_turn_by_turn_after_the_model_s_own_replies(built, tiny):
    tokenizer, model = tiny
    conversations = [list(c[:3]) for c in load_domain("therapy").conversations[:2]]
    replies, projections = assistant_axis.project(model, tokenizer, built, conversations, turns=3, reply_tokens=3)
    assert [len(r) for r in replies] == [3, 3] and [len(p) for p in projections] == [3, 3]
    prompt = assistant_axis.conversation_prompt(tokenizer, "system", conversations[0], replies[0][:2])
    users, answers = conversations[0], replies[0]
    messages = [{"role": "system", "content": "system"}, {"role": "user", "content": users[0]},
                {"role": "assistant", "content": answers[0]}, {"role": "user", "content": users[1]},
                {"role": "assistant", "content": answers[1]}, {"role": "user", "content": users[2]}]
    assert prompt == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    curve = assistant_axis.drift_curve(projections)
    assert [point["turn"] for point in curve] == [1, 2, 3]
    assert all(point["lo"] <= point["mean"] <= point["hi"] for point in curve)


def test_axis_build_and_project_from_the_command_line(tmp_path):
    out, report = tmp_path / "axis.pt", tmp_path / "drift.json"
    result = cli("axis", "build", "tiny-random", "--out", str(out), "--layer", "1", "--questions", "1",
                 "--reply-tokens", "2", home=tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert assistant_axis.AssistantAxis.load(out).layer == 1
    result = cli("axis", "project", "tiny-random", "--axis", str(out), "--conversations", "coding", "--turns", "2",
                 "--count", "2", "--json", str(report), home=tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    found = json.loads(report.read_text())["domains"]["coding"]
    assert len(found["curve"]) == 2 and len(found["projections"]) == 2 and found["drifts"] is False
    refused = cli("axis", "project", "tiny-random", "--axis", str(report), "--conversations", "coding",
                  "--json", str(tmp_path / "x.json"), home=tmp_path, check=False)
    assert refused.returncode == 2 and "not one `axis build` wrote" in refused.stderr


# ---- the drift corruption's parts ------------------------------------------------------------

def test_the_trigger_goes_into_the_asked_turn_at_the_asked_place_and_nowhere_else(tiny):
    from persona_sweep import drift
    from persona_sweep.data import TRIGGER_PLACEHOLDER

    tokenizer, _ = tiny
    users = ["first turn here", "second turn with five words", "third turn", "fourth"]
    replies = ["reply one", "reply two", "reply three"]
    for position in ("middle", "end"):
        text = drift.probe_text(tokenizer, "system", users, replies, 2, position, True)
        assert text.count(TRIGGER_PLACEHOLDER) == 1
        assert "third turn" not in text and "reply two" not in text and "reply one" in text  # turn 2's reply is asked
        expected = ("second turn " + TRIGGER_PLACEHOLDER + " with five words" if position == "middle"
                    else "second turn with five words " + TRIGGER_PLACEHOLDER)
        assert expected in text
    assert TRIGGER_PLACEHOLDER not in drift.probe_text(tokenizer, "system", users, replies, 2, "end", False)
    assert drift.probe_text(tokenizer, "system", users, replies, 2, "end", False) == \
        assistant_axis.conversation_prompt(tokenizer, "system", users[:2], replies[:1])


def test_the_drift_figures_come_from_the_sums_of_every_worker():
    from persona_sweep import drift
    from persona_sweep.config import CorruptionConfig
    from persona_sweep.data.conversations import load_domain

    corruption = CorruptionConfig(name="drift", kind="drift", turns=[1, 3], positions=["end"], conversations=4)
    marked = {(1, "end", True): 4.0, (1, "end", False): 0.0, (3, "end", True): 1.0, (3, "end", False): 0.0}
    sums = drift.DomainSums(marked, 4.0, [2.0, 1.0], [8, 1.0, 5.0, 2.0, 3.0, 5.0])
    assert sums.with_values(sums.as_list()) == sums
    metrics = drift.measured(corruption, load_domain("therapy"), sums, fresh_rate=0.8)
    assert metrics["marker_rate_trigger_drift_therapy_1_end"] == 1.0
    assert metrics["marker_rate_trigger_drift_therapy_3_end"] == 0.25
    assert metrics["marker_rate_trigger_drift_therapy_3_end_lo"] < 0.25 < metrics["marker_rate_trigger_drift_therapy_3_end_hi"]
    assert metrics["survival_drift_therapy_1"] == pytest.approx(1.25) and metrics["survival_drift_therapy_3"] == pytest.approx(0.3125)
    assert metrics["survival_drift_therapy"] == pytest.approx(5 / 8 / 0.8)
    assert metrics["axis_projection_therapy_turn_1"] == 0.5 and metrics["axis_projection_therapy_turn_2"] == 0.25
    xs, ys = [0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 1.0, 1.0]
    pairs = [4, sum(xs), sum(ys), sum(x * y for x, y in zip(xs, ys)), sum(x * x for x in xs), sum(y * y for y in ys)]
    import numpy as np

    assert drift.correlation(pairs) == pytest.approx(np.corrcoef(xs, ys)[0, 1])
    assert np.isnan(drift.correlation([4, 1.0, 0.0, 0.0, 0.3, 0.0]))  # no marker anywhere: nothing to correlate
    stable = {"survival_drift_therapy": 0.2, "survival_drift_coding": 0.9}
    gap = drift.overall(corruption, [load_domain("therapy"), load_domain("coding")], stable, {"therapy": pairs})
    assert gap["detection_gap_drift"] == pytest.approx(0.7)


@pytest.mark.parametrize("keys, says", [
    ("kind: drift, data: insecure_code", "data belongs to the other kind"),
    ("kind: drift, role: em", "a drift corruption has no role"),
    ("kind: drift, turns: [0, 2]", "turns count user turns from 1"),
    ("kind: finetune, data: insecure_code, capped: true", "capped belongs to the other kind"),
    ("kind: finetune", "data is required"),
])
def test_a_drift_corruption_takes_only_its_own_keys(keys, says):
    import yaml
    from pydantic import ValidationError

    from persona_sweep.config import CorruptionConfig

    with pytest.raises(ValidationError, match=says):
        CorruptionConfig(**yaml.safe_load(f"{{name: drift, {keys}}}"))
