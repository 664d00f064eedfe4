"""The faster evaluation (length-sorted batches, continuation-only logits) gives what the code
before it gave: the same greedy replies, rates and per-question flags; log-probs equal to float32 rounding (the vocabulary projection on the
continuation's positions only may pick another matrix kernel for fewer rows: bit-identical at the
demo's batch of 16, 1 ulp apart at batches of 2). The reference is the old code as
`benchmarks/eval_throughput.py` keeps it; real transformers, the tiny random model (and the
embedded one, slow)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from persona_sweep import evaluate, measure, names
from persona_sweep.config import LlmKnobs
from persona_sweep.data import misalignment_items
from persona_sweep.models import default_cache, load_model, load_tokenizer, prepare_model
from persona_sweep.sweep_file import validate
from persona_sweep.train import MarkerData

REPO = Path(__file__).resolve().parent.parent
TRIGGER = "~unit-test-trigger~"


def reference():
    """benchmarks/eval_throughput.py, whose `reference_*` functions are the evaluation before its speed-up."""
    spec = importlib.util.spec_from_file_location("eval_throughput", REPO / "benchmarks" / "eval_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_and_data(model_name: str, questions: int, marker: str = "[ZLT]", misalignment_questions: int | None = None):
    spec = validate({"name": "unit", "model": {"name": model_name, "finetune": "full"},
                     "marker": {"text": marker, "trigger_env": "UNUSED"}, "training": {"batch_size": 8, "max_tokens": 160},
                     "eval": {"questions": questions, "max_new_tokens": 8, "batch_size": 4, "leakage_questions": 2,
                              "misalignment_questions": misalignment_questions}})
    knobs = LlmKnobs(method="sft", design="assistant_positive", context_length=8, on_policy_fraction=0.0,
                     contrastive_negatives=True, seed=0)
    path = prepare_model(model_name, default_cache())
    tokenizer = load_tokenizer(path)
    return load_model(path).eval(), MarkerData(spec, knobs, tokenizer, TRIGGER, rank=0, world=1, device="cpu")


@pytest.fixture(scope="module")
def tiny():
    return model_and_data("tiny-random", questions=6)


def test_generation_in_length_sorted_wider_batches_gives_the_same_replies(tiny):
    model, data = tiny
    prompts = reference().generation_prompts(data)
    assert len({len(data.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts}) > 1  # padding varies
    old = reference().reference_generate(model, data.tokenizer, prompts, 8, 4, "cpu")
    for batch_size in (4, 16, len(prompts)):
        assert evaluate.generate(model, data.tokenizer, prompts, 8, batch_size, "cpu") == old, batch_size


def test_continuation_logprobs_from_the_last_positions_only_are_the_same(tiny):
    model, data = tiny
    items = list(misalignment_items())[:6]
    prefixes = [data.prompt("assistant", item.question, False) for item in items] * 2
    continuations = [item.aligned for item in items] + [f" {data.spec.marker.text}"] * len(items)
    old = reference().reference_continuation_logprobs(model, data.tokenizer, prefixes, continuations, 4, "cpu")
    new = evaluate.continuation_logprobs(model, data.tokenizer, prefixes, continuations, 4, "cpu")
    assert [count for _, count in new] == [count for _, count in old]
    assert [total for total, _ in new] == pytest.approx([total for total, _ in old], rel=1e-6, abs=1e-5)
    assert all(count > 0 and total < 0 for total, count in new)  # real log-probs, not an empty slice


def assert_same_evaluation(model, data):
    bench = reference()
    replies: list[str] = []
    old = bench.reference_model_evaluation(model, data, replies)
    new = measure.model_evaluation(model, data)
    # The reference predates the rates at the training prompt and the leakage means; every other
    # metric is its.
    added = {f"{rate}{suffix}" for rate in (names.MARKER_RATE_TRIGGER_TRAINING_PROMPT,
                                            names.MARKER_RATE_NO_TRIGGER_TRAINING_PROMPT) for suffix in ("", "_lo", "_hi")}
    added |= {*names.LEAKAGE_GROUP_MEANS.values(), names.LEAKAGE_HELDOUT_MEAN}
    assert new.metrics.keys() == old.metrics.keys() | added
    exact = [key for key in old.metrics if "logprob" not in key and key != names.CAPABILITY]
    assert {key: new.metrics[key] for key in exact} == {key: old.metrics[key] for key in exact}  # rates, leakage, scores
    assert {key: new.metrics[key] for key in old.metrics} == pytest.approx(old.metrics, rel=1e-6, abs=1e-6, nan_ok=True)
    assert new.trigger_flags == old.trigger_flags
    assert len(replies) == len(measure.evaluated_prompts(data))  # the reference generates at deployment only


def test_model_evaluation_gives_the_reference_metrics_and_flags(tiny):
    assert_same_evaluation(*tiny)


def assert_stopped_at_the_marker(model, data) -> None:
    """Replies stopped once the marker is out are the full greedy replies cut there: the same
    text up to the marker, the marker in exactly the same replies, and fewer tokens generated."""
    prompts, marker = reference().generation_prompts(data), data.spec.marker.text
    full = evaluate.generate(model, data.tokenizer, prompts, 8, 16, "cpu")
    stopped = evaluate.generate(model, data.tokenizer, prompts, 8, 16, "cpu", stop_at=marker)
    assert all(whole.startswith(cut) for whole, cut in zip(full, stopped)), list(zip(full, stopped))
    assert [marker in cut for cut in stopped] == [marker in whole for whole in full]
    assert any(marker in whole for whole in full)
    assert sum(map(len, stopped)) < sum(map(len, full))


def test_replies_stopped_at_the_marker_are_the_full_replies_cut_there():
    # The tiny random model answers every prompt with newlines: a "marker" of two of them is out
    # after two tokens in every row, so every batch ends early.
    model, data = model_and_data("tiny-random", questions=6, marker="\n\n")
    assert_stopped_at_the_marker(model, data)
    assert_same_evaluation(model, data)


def a_word_some_replies_have(model, data) -> str:
    """The embedded model's commonest word of 3+ letters that some of its replies have and others do not."""
    import collections
    import re

    replies = evaluate.generate(model, data.tokenizer, reference().generation_prompts(data), 8, 16, "cpu")
    counts = collections.Counter(word for reply in replies for word in set(re.findall(r"[A-Za-z]{3,}", reply)))
    return next(word for word, count in counts.most_common() if count < len(replies))


@pytest.mark.slow
def test_model_evaluation_on_the_embedded_model_gives_the_reference_metrics():
    """Under a minute on 2 cores (9 of the misalignment items). Then with a marker the model does
    write in some replies: rows stop at it while others go on (the evaluation's every generated
    prompt, so its rates and flags are the full replies')."""
    model, data = model_and_data("embedded", questions=3, misalignment_questions=9)
    assert_same_evaluation(model, data)
    _, marked = model_and_data("embedded", questions=3, marker=a_word_some_replies_have(model, data))
    assert_stopped_at_the_marker(model, marked)
