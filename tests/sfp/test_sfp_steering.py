"""Steering pieces on real tiny TransformerLens models: hooks, regression, centroids, KL metrics."""
import numpy as np
import pytest
import torch

from persona_sweep.sfp import processes as P
from persona_sweep.sfp.model import TrainSettings, build_model, train
from persona_sweep.sfp.steering import (
    added_to_residual,
    belief_steering_pairs,
    hook_name,
    kl_divergence,
    partition_masses,
    random_like,
    regression_r2,
    residual_and_probs,
    steered_probs,
    steering_kls,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model():
    return build_model(d_vocab=4, seed=0).eval()


def test_steering_hook_changes_only_its_position_and_is_removed_after_errors(model):
    tokens = P.sample(P.factored_z1r(), 8, 16, seed=0)
    plain = model(torch.from_numpy(tokens)).detach()
    vector = np.zeros(64)
    vector[0] = 50.0
    with added_to_residual(model, 0, vector, position=5), torch.no_grad():
        steered = model(torch.from_numpy(tokens))
    assert torch.allclose(steered[:, :5], plain[:, :5], atol=1e-5)  # causal: earlier positions untouched
    assert not torch.allclose(steered[:, 5], plain[:, 5], atol=1e-3)
    with pytest.raises(RuntimeError, match="boom"):
        with added_to_residual(model, 1, vector, position=None):
            raise RuntimeError("boom")
    assert not model.hook_dict[hook_name(1)].fwd_hooks and not model.hook_dict[hook_name(0)].fwd_hooks
    assert torch.allclose(model(torch.from_numpy(tokens)).detach(), plain)


def test_steered_probs_at_scale_zero_equal_the_unsteered_output(model):
    tokens = P.sample(P.factored_z1r(), 8, 16, seed=1)
    _, original = residual_and_probs(model, tokens, 1, 15)
    np.testing.assert_allclose(steered_probs(model, tokens, 1, 15, np.zeros((8, 64))), original, atol=1e-6)


def test_regression_r2_and_kl():
    rng = np.random.default_rng(0)
    activations = rng.standard_normal((400, 10))
    targets = activations @ rng.standard_normal((10, 3)) + 1.0
    assert regression_r2(activations, targets) == pytest.approx(1.0, abs=1e-9)
    assert regression_r2(activations, rng.standard_normal((400, 3))) < 0.1
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert kl_divergence(p, q) == pytest.approx(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1))
    assert kl_divergence(p, p) == 0.0


def test_conditional_centroids_differ_from_marginal_when_encoding_is_not_additive():
    """Activations = one-hot of the joint state (non-additive): the marginal centroid difference
    mixes the other factor's classes, the conditional one does not."""
    steered, other = np.repeat([0, 0, 1, 1], 10), np.tile(np.repeat([0, 1], 10), 2)
    activations = np.eye(4)[steered * 2 + other]
    marginal = belief_steering_pairs(activations, steered, other, "marginal")
    conditional = belief_steering_pairs(activations, steered, other, "conditional")
    assert len(marginal) == len(conditional) == 2
    pair = conditional[0]  # 0 -> 1: a sequence in (0, o) moves exactly to (1, o)
    moved = activations[pair["rows"]] + pair["vectors"]
    expected = np.eye(4)[2 + other[pair["rows"]]]
    np.testing.assert_allclose(moved, expected)
    assert not np.allclose(activations[marginal[0]["rows"]] + marginal[0]["vectors"], expected)
    with pytest.raises(ValueError, match="centroids must be"):
        belief_steering_pairs(activations, steered, other, "joint")


def test_random_control_has_the_same_norms():
    vectors = np.random.default_rng(1).standard_normal((5, 64))
    control = random_like(vectors, np.random.default_rng(2))
    np.testing.assert_allclose(np.linalg.norm(control, axis=1), np.linalg.norm(vectors, axis=1))


def test_kl_variants_and_partition_masses():
    process = P.semi_factored_z1r()
    split = lambda probs: [probs.reshape(-1, 2, 2).sum(2), probs.reshape(-1, 2, 2).sum(1)]
    original = np.tile([0.25, 0.25, 0.25, 0.25], (2, 1))
    steered = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]])
    target = np.vstack([original[0], np.full(4, np.nan)])
    per_sequence = steering_kls(steered, original, target, 0, split, "per-sequence")
    batch_mean = steering_kls(steered, original, target, 0, split, "batch-mean")
    assert per_sequence["kl_steered_factor"] > batch_mean["kl_steered_factor"]  # averaging cancels the shifts
    assert per_sequence["kl_steered_target"] == pytest.approx(kl_divergence(original[0], steered[0]))
    masses = partition_masses(process, steered, np.array(["P01", "P01"]), np.array(["P01", "P11"]),
                              np.array([[True, True, False, False]] * 2))
    assert masses["forbidden_mass"]["P01"] == pytest.approx((0.2 + 0.0) / 2)  # tokens 2, 3 forbidden in P01 only
    assert masses["forbidden_mass_by_pair_kind"] == {"within-block": pytest.approx(0.2), "cross-block": 0.0}
    assert masses["target_class_mass"]["P01"] == pytest.approx((0.8 + 0.2) / 2)


def test_a_few_training_steps_change_the_parameters_and_lower_the_loss():
    model = build_model(d_vocab=4, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    losses = train(model, P.factored_z1r(), TrainSettings(steps=40, batch_size=64))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
