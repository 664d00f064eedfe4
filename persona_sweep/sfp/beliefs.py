"""Bayes-optimal belief states, the optimal loss per position, per-factor marginals and belief
equivalence classes."""
from __future__ import annotations

import numpy as np

from persona_sweep.sfp.processes import GHMM, token_probabilities, update_belief


def belief_states(process: GHMM, tokens: np.ndarray) -> np.ndarray:
    """Beliefs after each prefix: (n, length + 1, n_states); index t is the belief after seeing
    tokens[:, :t], so index 0 is the initial vector."""
    n_sequences, length = tokens.shape
    beliefs = np.empty((n_sequences, length + 1, process.n_states))
    beliefs[:, 0] = process.initial
    for position in range(length):
        unnormalised = np.einsum("ns,nst->nt", beliefs[:, position], process.transfer[tokens[:, position]])
        beliefs[:, position + 1] = unnormalised / (unnormalised @ process.right_eigenvector)[:, None]
    return beliefs


def optimal_next_token_probs(process: GHMM, tokens: np.ndarray) -> np.ndarray:
    """Pr(tokens[:, t] = x | tokens[:, :t]) for t = 0..length-1: (n, length, n_tokens)."""
    return token_probabilities(process, belief_states(process, tokens)[:, :-1])


def optimal_loss_on(process: GHMM, tokens: np.ndarray) -> np.ndarray:
    """Cross-entropy (nats) of the Bayes-optimal predictor on each token: (n, length)."""
    probs = optimal_next_token_probs(process, tokens)
    chosen = np.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]
    return -np.log(chosen)


def exact_optimal_loss_per_position(process: GHMM, length: int, max_beliefs: int = 200_000) -> np.ndarray:
    """Expected Bayes-optimal loss H(X_t | X_<t) for t = 0..length-1, exactly, by propagating the
    distribution over distinct belief states (merged after rounding to 1e-12). Fails for processes
    whose beliefs never repeat (Mess3) once more than `max_beliefs` distinct beliefs exist."""
    beliefs, weights = process.initial[None, :], np.ones(1)
    losses = []
    for position in range(length):
        probs = token_probabilities(process, beliefs)
        safe = np.where(probs > 0, probs, 1.0)
        losses.append(float(-(weights[:, None] * probs * np.log(safe)).sum()))
        next_beliefs, next_weights = [], []
        for token in range(process.n_tokens):
            keep = probs[:, token] > 0
            next_beliefs.append(update_belief(process, beliefs[keep], token))
            next_weights.append(weights[keep] * probs[keep, token])
        beliefs, weights = _merge(np.concatenate(next_beliefs), np.concatenate(next_weights))
        if len(beliefs) > max_beliefs:
            raise ValueError(f"{process.name}: more than {max_beliefs} distinct beliefs at position {position + 1}; "
                             "use optimal_loss_on sampled sequences instead")
    return np.array(losses)


def _merge(beliefs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys, inverse = np.unique(np.round(beliefs, 12), axis=0, return_inverse=True)
    merged = np.zeros(len(keys))
    np.add.at(merged, inverse.ravel(), weights)
    return keys, merged


def factor_marginals(process: GHMM, beliefs: np.ndarray) -> list[np.ndarray]:
    """Per-factor beliefs of a Kronecker-structured joint belief (..., S1 * S2)."""
    if len(process.factor_states) != 2:
        raise ValueError(f"{process.name} is not a two-factor product; it has no per-factor beliefs")
    joint = beliefs.reshape(*beliefs.shape[:-1], *process.factor_states)
    return [joint.sum(axis=-1), joint.sum(axis=-2)]


def factor_token_marginals(process: GHMM, token_probs: np.ndarray) -> list[np.ndarray]:
    """Split joint-token probabilities (..., V1 * V2) into the two factors' token distributions."""
    joint = token_probs.reshape(*token_probs.shape[:-1], *process.factor_tokens)
    return [joint.sum(axis=-1), joint.sum(axis=-2)]


def belief_classes(beliefs: np.ndarray, decimals: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Belief equivalence classes: beliefs equal after rounding to `decimals`. Returns
    (labels per belief, one representative belief per class)."""
    representatives, labels = np.unique(np.round(beliefs, decimals), axis=0, return_inverse=True)
    return labels.ravel(), representatives


def block_of(process: GHMM, beliefs: np.ndarray) -> np.ndarray:
    """Name of the partition block holding the most belief mass, per belief."""
    names = list(process.partition)
    mass = np.stack([beliefs[..., list(process.partition[name])].sum(axis=-1) for name in names], axis=-1)
    return np.array(names)[mass.argmax(axis=-1)]
