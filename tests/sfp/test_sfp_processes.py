"""Processes and exact beliefs: brute-force enumeration of hidden paths, Kronecker products vs two
processes sampled side by side, validity checks of semi-factored processes."""
import itertools

import numpy as np
import pytest

from persona_sweep.sfp import processes as P
from persona_sweep.sfp.beliefs import (
    belief_states,
    exact_optimal_loss_per_position,
    factor_marginals,
    optimal_loss_on,
    optimal_next_token_probs,
)


def brute_force_posterior(process, word):
    """Pr(word) and Pr(final hidden state | word) by summing over every hidden path."""
    joint_final = np.zeros(process.n_states)
    for path in itertools.product(range(process.n_states), repeat=len(word) + 1):
        weight = process.initial[path[0]]
        for step, token in enumerate(word):
            weight *= process.transfer[token, path[step], path[step + 1]]
        joint_final[path[-1]] += weight
    return joint_final.sum(), joint_final / max(joint_final.sum(), 1e-300)


SMALL_PROCESSES = [P.z1r(), P.mess3(), P.factored_z1r(), P.semi_factored_z1r(),
                   P.persona_world(n_personas=2, persona_dim=2, mixing=0.1, noise=0.05)]


@pytest.mark.parametrize("process", SMALL_PROCESSES, ids=lambda p: p.name)
def test_belief_updates_match_brute_force_enumeration(process):
    length = 4 if process.n_states <= 9 else 3
    words = P.sample(process, 6, length, seed=3)
    beliefs = belief_states(process, words)
    next_probs = optimal_next_token_probs(process, words)
    for word, word_beliefs, word_next in zip(words, beliefs, next_probs):
        for prefix in range(1, length + 1):
            probability, posterior = brute_force_posterior(process, word[:prefix])
            np.testing.assert_allclose(word_beliefs[prefix], posterior, atol=1e-10)
            chain_rule = np.prod(word_next[np.arange(prefix), word[:prefix]])
            np.testing.assert_allclose(chain_rule, probability, rtol=1e-9)


def test_word_probabilities_sum_to_one_and_sampling_matches_them():
    process = P.z1r()
    words = list(itertools.product(range(2), repeat=4))
    exact = np.array([brute_force_posterior(process, w)[0] for w in words])
    assert exact.sum() == pytest.approx(1.0)
    samples = P.sample(process, 40_000, 4, seed=0)
    index = samples @ (2 ** np.arange(3, -1, -1))
    empirical = np.bincount(index, minlength=16) / len(samples)
    assert np.abs(empirical - exact).max() < 0.01


def test_non_hmm_ghmm_gives_the_same_predictions():
    """A similarity transform S^-1 T(x) S has negative entries (not an HMM) but the same word
    probabilities: beliefs are computed with <eta| T(x) |1> and the transformed |1>."""
    base = P.mess3()
    rng = np.random.default_rng(0)
    change = np.eye(3) + 0.3 * rng.standard_normal((3, 3))
    transfer = np.linalg.inv(change) @ base.transfer @ change
    process = P.GHMM("mess3-similar", transfer, base.initial @ change)
    assert not process.is_hmm
    words = P.sample(base, 50, 6, seed=1)
    np.testing.assert_allclose(optimal_next_token_probs(process, words), optimal_next_token_probs(base, words),
                               atol=1e-10)


def test_kronecker_word_probabilities_are_products():
    first, second = P.z1r(), P.mess3()
    joint = P.kronecker(first, second)
    for word in itertools.product(range(joint.n_tokens), repeat=3):
        word = np.array(word)
        first_word, second_word = word // second.n_tokens, word % second.n_tokens
        expected = brute_force_posterior(first, first_word)[0] * brute_force_posterior(second, second_word)[0]
        assert brute_force_posterior(joint, word)[0] == pytest.approx(expected, abs=1e-12)


def test_kronecker_matches_two_processes_sampled_side_by_side():
    first, second = P.z1r(), P.mess3()
    n, length = 60_000, 3
    side_by_side = P.sample(first, n, length, seed=10) * second.n_tokens + P.sample(second, n, length, seed=11)
    from_product = P.sample(P.kronecker(first, second), n, length, seed=12)

    def word_frequencies(tokens):
        index = tokens @ (6 ** np.arange(length - 1, -1, -1))
        return np.bincount(index, minlength=6 ** length) / len(tokens)

    # 216 words: total variation between two samples of 60k is ~0.03 when the laws agree.
    assert 0.5 * np.abs(word_frequencies(side_by_side) - word_frequencies(from_product)).sum() < 0.05
    # Per-position joint token statistics, including the cross-factor correlation (zero).
    for tokens in (side_by_side, from_product):
        first_part, second_part = tokens // 3, tokens % 3
        assert abs(np.corrcoef(first_part[:, 2], second_part[:, 2])[0, 1]) < 0.02
    # Marginal beliefs of the product equal the factors' own beliefs.
    beliefs = belief_states(P.kronecker(first, second), from_product[:200])
    marginal_first, marginal_second = factor_marginals(P.kronecker(first, second), beliefs)
    np.testing.assert_allclose(marginal_first, belief_states(first, from_product[:200] // 3), atol=1e-12)
    np.testing.assert_allclose(marginal_second, belief_states(second, from_product[:200] % 3), atol=1e-12)


def test_z1r_product_optimal_loss_matches_the_known_values():
    per_position = exact_optimal_loss_per_position(P.factored_z1r(), 17)
    np.testing.assert_allclose(per_position[:4], [np.log(4), 1.273, 0.924, 0.462], atol=1e-3)
    assert per_position[1:].mean() == pytest.approx(0.5417, abs=1e-4)
    sampled = optimal_loss_on(P.factored_z1r(), P.sample(P.factored_z1r(), 5000, 17, seed=2))
    assert sampled[:, 1:].mean() == pytest.approx(0.5417, abs=0.01)


def test_semi_factored_process_is_block_diagonal_and_correlated():
    process = P.semi_factored_z1r()
    P.check_partition_preserving(process)
    assert sorted(process.partition) == ["P00", "P01", "P10", "P11"]
    joint = process.initial.reshape(3, 3)
    assert not np.allclose(joint, np.outer(joint.sum(1), joint.sum(0)))  # rho_AB != rho_A (x) rho_B
    tokens = P.sample(process, 2000, 12, seed=0)
    blocks = {tuple(np.unique(row)) for row in tokens}
    assert (0,) not in blocks  # P00 has no weight
    # In P01 factor A sits in S0 and only emits 0: tokens 2, 3 never follow its sequences.
    assert not P.allowed_tokens(process, process.partition["P01"])[[2, 3]].any()


def test_semi_factored_validity_checks_raise_clear_errors():
    leaky = P.GHMM("z1r-with-partition", P.z1r().transfer, P.z1r().initial, partition={"0": (0,), "1": (1, 2)})
    with pytest.raises(ValueError, match="token 0 moves weight 1 from block '0'"):
        P.semi_factored(leaky, P.partition_preserving_z1r(), {"P11": 1.0})
    factor = P.partition_preserving_z1r()
    with pytest.raises(ValueError, match="unknown blocks \\['P22'\\]"):
        P.semi_factored(factor, factor, {"P22": 1.0})
    with pytest.raises(ValueError, match="sum to 1"):
        P.semi_factored(factor, factor, {"P01": 0.5, "P10": 0.6})
    with pytest.raises(ValueError, match="cover states"):
        P.check_partition_preserving(P.GHMM("gap", factor.transfer, factor.initial, partition={"0": (0,)}))
    with pytest.raises(ValueError, match="normalised"):
        P.GHMM("bad", factor.transfer, np.array([1.0, 1.0, 0.0]))


def test_persona_world_marker_only_in_misaligned_blocks():
    world = P.persona_world()
    markers = P.marker_mask(world)
    assert markers.sum() == 2
    for block, states in world.partition.items():
        emits_marker = P.allowed_tokens(world, states)[markers].any()
        assert emits_marker == (block[1] != "0")
    with pytest.raises(ValueError, match="n_personas >= 2"):
        P.persona_world(n_personas=1)
    mixed = P.persona_world(mixing=0.2)
    with pytest.raises(ValueError, match="partition preservation"):
        P.check_partition_preserving(mixed)
