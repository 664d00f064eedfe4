"""Reading beliefs out of the residual stream and steering them (seed 003, appendix A).

KL directions follow the appendix exactly (all in nats):
  kl_steered_target   = D_KL(target-model || steered): the model's own output on sequences genuinely in
                        the target belief state vs the steered output;
  kl_steered_factor   = D_KL(steered || original) on the steered factor's token marginal;
  kl_unsteered_factor = D_KL(steered || original) on the other factor's token marginal (spillover).
"Original" is the unsteered model on the same sequence.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from persona_sweep.steering import added_to_output

CLASS_DECIMALS = 6  # the appendix rounds belief vectors to 1e-6 to form equivalence classes
MIN_CLASS_SIZE = 3  # classes seen fewer times give centroids that are mostly noise


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def residual_and_probs(model, tokens: np.ndarray, layer: int, position: int) -> tuple[np.ndarray, np.ndarray]:
    """Residual stream after block `layer` and next-token probabilities, both at `position`."""
    import torch

    with torch.no_grad():
        logits, cache = model.run_with_cache(torch.from_numpy(tokens), names_filter=lambda name: name == hook_name(layer))
    activations = cache[hook_name(layer)][:, position].double().numpy()
    return activations, torch.softmax(logits[:, position].double(), dim=-1).numpy()


@contextmanager
def added_to_residual(model, layer: int, vectors: np.ndarray, position: int | None):
    """Add vectors (batch, d_model) or (d_model,) to the residual after block `layer` at `position`
    (every position when None), with the one steering hook both worlds share."""
    import torch

    with added_to_output(model.hook_dict[hook_name(layer)], torch.as_tensor(vectors, dtype=torch.float32), position):
        yield


def steered_probs(model, tokens: np.ndarray, layer: int, position: int, vectors: np.ndarray) -> np.ndarray:
    """Next-token probabilities at `position` with `vectors` added there."""
    import torch

    with added_to_residual(model, layer, vectors, position), torch.no_grad():
        logits = model(torch.from_numpy(tokens))
    return torch.softmax(logits[:, position].double(), dim=-1).numpy()


def regression_r2(activations: np.ndarray, targets: np.ndarray, seed: int = 0) -> float:
    """Held-out R^2 (20% test split) of least squares with intercept, activations -> targets;
    variance-weighted over target dimensions."""
    order = np.random.default_rng(seed).permutation(len(activations))
    test, fit = order[: len(order) // 5], order[len(order) // 5:]
    design = np.hstack([activations, np.ones((len(activations), 1))])
    weights, *_ = np.linalg.lstsq(design[fit], targets[fit], rcond=None)
    residual = ((design[test] @ weights - targets[test]) ** 2).sum()
    total = ((targets[test] - targets[fit].mean(axis=0)) ** 2).sum()
    return float(1 - residual / total) if total > 0 else float("nan")


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """D_KL(p || q) in nats along the last axis; q is floored at 1e-12 so zeros stay finite."""
    p = np.clip(p, 0.0, None)
    ratio = np.where(p > 0, p / np.clip(q, 1e-12, None), 1.0)
    return (p * np.log(ratio)).sum(axis=-1)


def belief_steering_pairs(activations: np.ndarray, steered_classes: np.ndarray, other_classes: np.ndarray,
                          centroids: str) -> list[dict]:
    """Belief-state steering vectors c_t - c_s for every ordered pair of classes (s, t) of one factor.

    centroids='marginal' (the appendix): c_k is the mean activation of class k over all states of the
    other factor. centroids='conditional': c_{k,o} per class o of the other factor, and a sequence
    with other class o gets c_{t,o} - c_{s,o} (sequences whose (t, o) was never seen are left out).
    Returns [{'source', 'target', 'rows', 'vectors'}]; rows index the sequences of class s."""
    if centroids not in ("marginal", "conditional"):
        raise ValueError(f"centroids must be 'marginal' or 'conditional', got {centroids!r}")
    counts = np.bincount(steered_classes)
    classes = [k for k in range(len(counts)) if counts[k] >= MIN_CLASS_SIZE]
    pairs = []
    for source in classes:
        for target in classes:
            if source == target:
                continue
            rows = np.flatnonzero(steered_classes == source)
            if centroids == "marginal":
                vector = activations[steered_classes == target].mean(0) - activations[rows].mean(0)
                vectors = np.tile(vector, (len(rows), 1))
            else:
                rows, vectors = _conditional_vectors(activations, steered_classes, other_classes, rows, source, target)
            if len(rows):
                pairs.append({"source": source, "target": target, "rows": rows, "vectors": vectors})
    return pairs


def _conditional_vectors(activations, steered_classes, other_classes, rows, source, target):
    kept, vectors = [], []
    for other in np.unique(other_classes[rows]):
        in_target = (steered_classes == target) & (other_classes == other)
        if not in_target.any():
            continue
        in_source = (steered_classes == source) & (other_classes == other)
        vector = activations[in_target].mean(0) - activations[in_source].mean(0)
        members = np.flatnonzero(in_source)
        kept.append(members)
        vectors.append(np.tile(vector, (len(members), 1)))
    if not kept:
        return np.array([], dtype=int), np.zeros((0, activations.shape[1]))
    return np.concatenate(kept), np.concatenate(vectors)


def difference_in_means(activations: np.ndarray, toward: np.ndarray, away_from: np.ndarray) -> np.ndarray:
    """Conventional steering vector: mean activation of `toward` rows minus mean of `away_from` rows
    (labels come from where the data came from, not from belief states)."""
    if not toward.any() or not away_from.any():
        raise ValueError("difference in means needs at least one row on each side")
    return activations[toward].mean(0) - activations[away_from].mean(0)


def random_like(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random direction for the whole set, scaled row by row to the norm of `vectors`."""
    direction = rng.standard_normal(vectors.shape[-1])
    direction /= np.linalg.norm(direction)
    return np.linalg.norm(vectors, axis=-1, keepdims=True) * direction


def steering_kls(steered: np.ndarray, original: np.ndarray, target: np.ndarray, steered_factor: int,
                 split_factors, kl: str) -> dict:
    """The three KL metrics for one source-target pair. kl='per-sequence': KL per sequence, then the
    mean; kl='batch-mean': KL between the pair's averaged distributions. Rows whose target is NaN
    (no sequence was ever in the target state) are left out of the target metric.
    `split_factors` maps joint-token probabilities to the two factors' token marginals."""
    if kl not in ("per-sequence", "batch-mean"):
        raise ValueError(f"kl must be 'per-sequence' or 'batch-mean', got {kl!r}")
    has_target = ~np.isnan(target).any(axis=1)
    if kl == "batch-mean":
        # Average first: the target over rows that have one, the factors over all rows.
        target, target_steered = target[has_target].mean(0, keepdims=True), steered[has_target].mean(0, keepdims=True)
        steered, original = steered.mean(0, keepdims=True), original.mean(0, keepdims=True)
    else:
        target, target_steered = target[has_target], steered[has_target]
    steered_marginals, original_marginals = split_factors(steered), split_factors(original)
    other = 1 - steered_factor
    return {
        "kl_steered_target": _mean_or_nan(kl_divergence(target, target_steered)) if has_target.any() else float("nan"),
        "kl_steered_factor": _mean_or_nan(kl_divergence(steered_marginals[steered_factor],
                                                        original_marginals[steered_factor])),
        "kl_unsteered_factor": _mean_or_nan(kl_divergence(steered_marginals[other], original_marginals[other])),
    }


def _mean_or_nan(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def partition_masses(process, steered: np.ndarray, source_blocks: np.ndarray, target_blocks: np.ndarray,
                     target_support: np.ndarray) -> dict:
    """Partition-violation analysis of steered next-token distributions, keyed by the block the
    steered sequence came from.

    forbidden_mass[block]: mean mass on tokens that no state of the target belief's block can emit
    (for steering inside a block that is the sequence's own block; for steering across blocks it is
    the block the target state lives in). target_class_mass[block]: mean mass on the tokens the target
    belief state can emit (its Bayes-optimal support). forbidden_mass_by_pair_kind splits the
    forbidden mass into steering within a block and across blocks."""
    from persona_sweep.sfp.processes import allowed_tokens

    allowed = {block: allowed_tokens(process, states) for block, states in process.partition.items()}
    forbidden = np.array([probs[~allowed[block]].sum() for probs, block in zip(steered, target_blocks)])
    on_target = (steered * target_support).sum(1)
    within = source_blocks == target_blocks
    blocks = sorted(set(source_blocks))
    return {
        "forbidden_mass": {b: float(forbidden[source_blocks == b].mean()) for b in blocks},
        "target_class_mass": {b: float(on_target[source_blocks == b].mean()) for b in blocks},
        "forbidden_mass_by_pair_kind": {kind: float(forbidden[rows].mean()) if rows.any() else float("nan")
                                        for kind, rows in (("within-block", within), ("cross-block", ~within))},
    }
