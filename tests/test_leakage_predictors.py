"""The leakage predictors of seed 000 (`leakage_predictors`): JS divergence and activation cosine
on the tiny random model (real transformers), and the rank statistics on known values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from persona_sweep import leakage_predictors as predictors
from persona_sweep.data import personas
from persona_sweep.models import default_cache, load_model, load_tokenizer, prepare_model


@pytest.fixture(scope="module")
def tiny():
    path = prepare_model("tiny-random", default_cache())
    return load_tokenizer(path), load_model(path).eval()


def test_the_same_system_prompt_is_at_no_distance_and_another_one_is_not(tiny):
    tokenizer, model = tiny
    bank = personas()
    systems = [bank["assistant"].short_description, bank["assistant"].short_description,
               bank["deceiver"].short_description]
    js, hidden = predictors.answer_readings(model, tokenizer, systems, "What is the capital of France?",
                                            "The capital of France is Paris.", "cpu")
    assert js[0] == pytest.approx(0.0, abs=1e-6) and 0 < js[1] <= math.log(2)
    assert torch.allclose(hidden[0], hidden[1], atol=1e-5) and not torch.allclose(hidden[0], hidden[2], atol=1e-3)


def test_every_held_out_persona_gets_both_predictors(tiny):
    tokenizer, model = tiny
    measured = predictors.measured(model, tokenizer)
    held_out = predictors.held_out_personas()
    assert held_out and "assistant" not in held_out and "other_ai" not in held_out  # trained on: not a bystander
    assert sorted(measured) == sorted(f"base_{p}_{name}" for p in ("js", "cosine") for name in held_out)
    assert all(0 < measured[f"base_js_{name}"] <= math.log(2) for name in held_out)
    assert all(-1 <= measured[f"base_cosine_{name}"] <= 1 for name in held_out)


def test_jensen_shannon_is_symmetric_and_ln2_between_disjoint_distributions():
    certain_a = torch.log(torch.tensor([[1.0, 1e-30]]))
    certain_b = torch.log(torch.tensor([[1e-30, 1.0]]))
    assert predictors.jensen_shannon(certain_a, certain_b).item() == pytest.approx(math.log(2), rel=1e-4)
    p, q = torch.randn(3, 5).log_softmax(-1), torch.randn(3, 5).log_softmax(-1)
    assert torch.allclose(predictors.jensen_shannon(p, q), predictors.jensen_shannon(q, p))
    assert predictors.jensen_shannon(p, p).abs().max().item() < 1e-6


def test_spearman_ranks_and_is_nan_on_a_constant():
    from scipy.stats import spearmanr

    assert predictors.spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert predictors.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(predictors.spearman([1, 2, 3], [0.5, 0.5, 0.5]))
    x, y = np.random.default_rng(0).normal(size=(2, 9))
    y[3] = y[4]  # a tie
    assert predictors.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)


def test_a_predictor_that_orders_the_leakage_correlates_fully_with_an_interval_around_it():
    held_out = predictors.held_out_personas()
    base = {f"base_js_{name}": index / 10 for index, name in enumerate(held_out)}
    base |= {f"base_cosine_{name}": (index * 7 % len(held_out)) / 10 for index, name in enumerate(held_out)}
    leakage = {name: 1 - index / 10 for index, name in enumerate(held_out)}  # less leakage where JS is larger
    metrics = predictors.correlations(base, leakage)
    assert metrics["leakage_spearman_js"] == pytest.approx(-1.0)
    for predictor in ("js", "cosine"):
        key = f"leakage_spearman_{predictor}"
        assert metrics[f"{key}_lo"] <= metrics[key] + 1e-9 and metrics[key] <= metrics[f"{key}_hi"] + 1e-9
    assert abs(metrics["leakage_spearman_cosine"]) < 1
    assert predictors.correlations(base, {held_out[0]: 0.5, held_out[1]: 0.2}) == {}  # too few personas to rank
