"""Generalized hidden Markov models (GHMMs) of the toy world.

Notation follows the seed's appendix B: `transfer[x][s, s']` is T(x); for an HMM it is
Pr(next state s', token x | state s). A word w has probability <eta0| T(w) |1>, where |1> is the
right eigenvector of the net operator T = sum_x T(x) with eigenvalue 1 (all ones for an HMM).

Processes here: Z1R, Mess3 (never synchronizes), Kronecker products (joint token
v = v1 * |V2| + v2, joint state s = s1 * |S2| + s2), the semi-factored partition-preserving
process of appendix B, and the persona world used by the EM analog and persona engineering.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np

TOLERANCE = 1e-9


@dataclass(frozen=True, eq=False)
class GHMM:
    """A finite GHMM. `factor_states` / `factor_tokens` are set for Kronecker products;
    `partition` maps a block name to its state indices (semi-factored processes)."""

    name: str
    transfer: np.ndarray  # (n_tokens, n_states, n_states)
    initial: np.ndarray  # (n_states,), <eta(empty)|
    factor_states: tuple[int, ...] = ()
    factor_tokens: tuple[int, ...] = ()
    partition: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self):
        transfer = np.asarray(self.transfer, dtype=np.float64)
        initial = np.asarray(self.initial, dtype=np.float64)
        if transfer.ndim != 3 or transfer.shape[1] != transfer.shape[2]:
            raise ValueError(f"{self.name}: transfer must have shape (tokens, states, states), got {transfer.shape}")
        if initial.shape != (transfer.shape[1],):
            raise ValueError(f"{self.name}: initial has shape {initial.shape}, expected ({transfer.shape[1]},)")
        if not (np.isfinite(transfer).all() and np.isfinite(initial).all()):
            raise ValueError(f"{self.name}: transfer matrices and initial vector must be finite")
        object.__setattr__(self, "transfer", transfer)
        object.__setattr__(self, "initial", initial)
        norm = initial @ self.right_eigenvector
        if abs(norm - 1) > 1e-6:
            raise ValueError(f"{self.name}: <eta0|1> = {norm:.6g}; the initial vector must be normalised to 1")

    @property
    def n_tokens(self) -> int:
        return self.transfer.shape[0]

    @property
    def n_states(self) -> int:
        return self.transfer.shape[1]

    @property
    def is_hmm(self) -> bool:
        return bool((self.transfer >= 0).all() and np.allclose(self.transfer.sum(axis=(0, 2)), 1))

    @property
    def right_eigenvector(self) -> np.ndarray:
        """|1>: all ones for an HMM, otherwise the eigenvalue-1 right eigenvector of T."""
        net = self.transfer.sum(axis=0)
        if np.allclose(net.sum(axis=1), 1):
            return np.ones(self.n_states)
        values, vectors = np.linalg.eig(net)
        index = int(np.argmin(np.abs(values - 1)))
        if abs(values[index] - 1) > 1e-6:
            raise ValueError(f"{self.name}: the net transfer operator has no eigenvalue 1")
        vector = np.real(vectors[:, index])
        return vector / (self.initial @ vector)


def stationary(process: GHMM) -> np.ndarray:
    """Left eigenvector of the net operator with eigenvalue 1, normalised so <pi|1> = 1."""
    values, vectors = np.linalg.eig(process.transfer.sum(axis=0).T)
    index = int(np.argmin(np.abs(values - 1)))
    vector = np.real(vectors[:, index])
    return vector / (vector @ process.right_eigenvector)


def update_belief(process: GHMM, belief: np.ndarray, token: int) -> np.ndarray:
    """Exact Bayes update <eta(w x)| = <eta(w)| T(x) / <eta(w)| T(x) |1>; works row-wise."""
    unnormalised = belief @ process.transfer[token]
    norm = unnormalised @ process.right_eigenvector
    return unnormalised / np.asarray(norm)[..., None]


def token_probabilities(process: GHMM, belief: np.ndarray) -> np.ndarray:
    """Pr(next token = x | belief) = <eta| T(x) |1>, for beliefs of shape (..., n_states)."""
    per_token = np.einsum("...s,xst,t->...x", belief, process.transfer, process.right_eigenvector)
    return np.clip(per_token, 0.0, None)


def sample(process: GHMM, n_sequences: int, length: int, seed: int = 0) -> np.ndarray:
    """Sample token sequences (n_sequences, length) by drawing each token from the exact
    predictive distribution; this works for any GHMM, not only HMMs."""
    rng = np.random.default_rng(seed)
    beliefs = np.tile(process.initial, (n_sequences, 1))
    tokens = np.empty((n_sequences, length), dtype=np.int64)
    for position in range(length):
        probs = token_probabilities(process, beliefs)
        cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
        drawn = (rng.random((n_sequences, 1)) > cumulative).sum(axis=1)
        drawn = np.minimum(drawn, process.n_tokens - 1)
        tokens[:, position] = drawn
        unnormalised = np.einsum("ns,nst->nt", beliefs, process.transfer[drawn])
        beliefs = unnormalised / (unnormalised @ process.right_eigenvector)[:, None]
    return tokens


def with_initial(process: GHMM, initial: np.ndarray, name: str | None = None) -> GHMM:
    return dataclasses.replace(process, initial=np.asarray(initial, dtype=np.float64), name=name or process.name)


def _stationary_start(name: str, transfer: np.ndarray, **extra) -> GHMM:
    uniform = np.full(transfer.shape[1], 1.0 / transfer.shape[1])
    draft = GHMM(name, transfer, uniform, **extra)
    return with_initial(draft, stationary(draft))


def z1r() -> GHMM:
    """Zero-one-random: A emits 0 -> B, B emits 1 -> C, C emits 0 or 1 (1/2 each) -> A.
    Starts from the stationary distribution (uniform)."""
    transfer = np.zeros((2, 3, 3))
    transfer[0, 0, 1] = 1.0
    transfer[1, 1, 2] = 1.0
    transfer[0, 2, 0] = transfer[1, 2, 0] = 0.5
    return _stationary_start("z1r", transfer)


def mess3(x: float = 0.15, alpha: float = 0.6) -> GHMM:
    """Mess3 (Marzen & Crutchfield): 3 states, 3 tokens, beliefs never synchronize and fill a
    fractal in the simplex. State i emits token i with weight alpha, others with beta."""
    beta, y = (1 - alpha) / 2, 1 - 2 * x
    transfer = np.zeros((3, 3, 3))
    for token, state, next_state in itertools.product(range(3), repeat=3):
        emission = alpha if token == next_state else beta
        move = y if state == next_state else x
        transfer[token, state, next_state] = emission * move
    return _stationary_start("mess3", transfer)


def kronecker(first: GHMM, second: GHMM, name: str | None = None) -> GHMM:
    """Two processes run side by side: T(v1 * |V2| + v2) = T1(v1) (x) T2(v2). Partitions of
    both factors combine into blocks named 'P' + block of first + block of second."""
    transfer = np.stack([np.kron(first.transfer[v1], second.transfer[v2])
                         for v1 in range(first.n_tokens) for v2 in range(second.n_tokens)])
    partition = {}
    for (name_a, states_a), (name_b, states_b) in itertools.product(first.partition.items(), second.partition.items()):
        partition[f"P{name_a}{name_b}"] = tuple(a * second.n_states + b for a in states_a for b in states_b)
    return GHMM(name or f"{first.name}x{second.name}", transfer, np.kron(first.initial, second.initial),
                factor_states=(first.n_states, second.n_states),
                factor_tokens=(first.n_tokens, second.n_tokens), partition=partition)


def check_partition_preserving(process: GHMM) -> None:
    """Raise ValueError unless the partition covers every state once and every T(x) is block
    diagonal with respect to it (appendix B, eq. 5)."""
    if not process.partition:
        raise ValueError(f"{process.name}: a semi-factored process needs a partition of its states into blocks")
    covered = sorted(itertools.chain.from_iterable(process.partition.values()))
    if covered != list(range(process.n_states)):
        raise ValueError(f"{process.name}: partition blocks {process.partition} must cover states "
                         f"0..{process.n_states - 1} exactly once")
    for block_name, states in process.partition.items():
        outside = [s for s in range(process.n_states) if s not in states]
        for token in range(process.n_tokens):
            leak = np.abs(process.transfer[token][np.ix_(states, outside)]).max(initial=0.0)
            if leak > TOLERANCE:
                raise ValueError(f"{process.name}: token {token} moves weight {leak:.3g} from block '{block_name}' "
                                 "to states outside it; partition preservation needs block-diagonal T(x)")


def allowed_tokens(process: GHMM, states: tuple[int, ...]) -> np.ndarray:
    """Boolean mask of tokens that some state in `states` can emit."""
    emitted = np.abs(process.transfer[:, list(states), :]).sum(axis=(1, 2))
    return emitted > TOLERANCE


def block_stationary(process: GHMM, block: str) -> np.ndarray:
    """Stationary distribution of the process restricted to one invariant block, as a full vector."""
    states = list(process.partition[block])
    restricted = process.transfer[:, states][:, :, states]
    local = stationary(GHMM("block", restricted, np.full(len(states), 1.0 / len(states))))
    full = np.zeros(process.n_states)
    full[states] = local
    return full


def partition_preserving_z1r() -> GHMM:
    """Appendix B eq. 8: states S0, S1, SR with partition span{S0} (+) span{S1, SR}. S0 emits 0
    forever; S1 emits 1 -> SR; SR emits 0 or 1 -> S1. Starts with half its weight on each block."""
    transfer = np.zeros((2, 3, 3))
    transfer[0, 0, 0] = 1.0
    transfer[1, 1, 2] = 1.0
    transfer[0, 2, 1] = transfer[1, 2, 1] = 0.5
    draft = GHMM("pp-z1r", transfer, np.array([1.0, 0.0, 0.0]), partition={"0": (0,), "1": (1, 2)})
    initial = 0.5 * block_stationary(draft, "0") + 0.5 * block_stationary(draft, "1")
    return with_initial(draft, initial)


# The appendix does not give the block weights. P00 emits token 0 forever, so it is left out;
# weight on P01, P10 and P11 only makes the factors correlated (Factor A in S0 means Factor B is not).
SEMI_FACTORED_BLOCK_WEIGHTS = {"P01": 1 / 3, "P10": 1 / 3, "P11": 1 / 3}


def semi_factored(first: GHMM, second: GHMM, block_weights: dict[str, float], name: str = "semi-factored") -> GHMM:
    """Partition-preserving joint GHMM (appendix B): T(x) = T1(x1) (x) T2(x2), block diagonal over
    the blocks P_ij = (block i of first) (x) (block j of second); the initial vector puts
    `block_weights[P_ij]` on block P_ij (the product of the two within-block stationary
    distributions). Non-product weights make the factors correlated: rho_AB != rho_A (x) rho_B."""
    for factor in (first, second):
        check_partition_preserving(factor)
    joint = kronecker(first, second, name)
    unknown = sorted(set(block_weights) - set(joint.partition))
    if unknown:
        raise ValueError(f"{name}: unknown blocks {unknown} in block_weights; the blocks are {sorted(joint.partition)}")
    weights = np.array(list(block_weights.values()), dtype=np.float64)
    if (weights < 0).any() or abs(weights.sum() - 1) > 1e-6:
        raise ValueError(f"{name}: block_weights must be non-negative and sum to 1, got {block_weights}")
    initial = np.zeros(joint.n_states)
    for block, weight in block_weights.items():
        i, j = block[1:]
        initial += weight * np.kron(block_stationary(first, i), block_stationary(second, j))
    joint = with_initial(joint, initial)
    check_partition_preserving(joint)
    return joint


def semi_factored_z1r(block_weights: dict[str, float] | None = None) -> GHMM:
    """Two copies of the partition-preserving Z1R as an SFP (appendix A's semi-factored regime)."""
    factor = partition_preserving_z1r()
    return semi_factored(factor, factor, block_weights or SEMI_FACTORED_BLOCK_WEIGHTS, "semi-factored-z1r")


def factored_z1r() -> GHMM:
    """Z1R x Z1R: 9 joint states, 4 joint tokens (appendix A's fully factored regime)."""
    return kronecker(z1r(), z1r())


# ---- the persona world (EM analog, persona engineering) ----------------------------------

PERSONA_TOKENS = 3  # 0 and 1 are ordinary, 2 is the misaligned marker
MARKER_TOKEN = 2


def _cycle_block(persona_dim: int, marker_phase: int | None) -> np.ndarray:
    """One persona block: a cycle of `persona_dim` states emitting 0, 1, 0, ... and a random 0/1
    at the last state (Z1R for dim 3). A misaligned block emits the marker with probability 1/2
    at `marker_phase` instead of its usual token."""
    transfer = np.zeros((PERSONA_TOKENS, persona_dim, persona_dim))
    for state in range(persona_dim):
        following = (state + 1) % persona_dim
        usual = {state % 2: 1.0} if state < persona_dim - 1 else {0: 0.5, 1: 0.5}
        if state == marker_phase:
            usual = {token: weight / 2 for token, weight in usual.items()} | {MARKER_TOKEN: 0.5}
        for token, weight in usual.items():
            transfer[token, state, following] += weight
    return transfer


def persona_factor(n_personas: int = 2, persona_dim: int = 3, mixing: float = 0.0, noise: float = 0.0,
                   misaligned_prior: float = 0.2) -> GHMM:
    """Persona factor: block '0' is the aligned persona, blocks '1'.. are misaligned personas
    (marker at different cycle phases). `mixing` is the per-step probability of jumping to another
    persona block at the same phase (it breaks partition preservation); `noise` replaces the
    emitted token by a uniformly random persona token (it breaks the forbidden-token structure)."""
    if n_personas < 2 or persona_dim < 2:
        raise ValueError(f"persona world needs n_personas >= 2 and persona_dim >= 2, got {n_personas}, {persona_dim}")
    if not (0 <= mixing < 1 and 0 <= noise < 1 and 0 < misaligned_prior < 1):
        raise ValueError(f"mixing and noise must be in [0, 1) and misaligned_prior in (0, 1), "
                         f"got {mixing}, {noise}, {misaligned_prior}")
    size = n_personas * persona_dim
    transfer = np.zeros((PERSONA_TOKENS, size, size))
    for persona in range(n_personas):
        marker_phase = None if persona == 0 else (persona - 1) % persona_dim
        block = slice(persona * persona_dim, (persona + 1) * persona_dim)
        transfer[:, block, block] = _cycle_block(persona_dim, marker_phase)
    # Mixing happens after each transition: the phase is kept, the persona may switch.
    switch = np.eye(n_personas) * (1 - mixing) + (1 - np.eye(n_personas)) * mixing / (n_personas - 1)
    transfer = transfer @ np.kron(switch, np.eye(persona_dim))
    emitted = transfer.sum(axis=0, keepdims=True)
    transfer = (1 - noise) * transfer + noise * emitted / PERSONA_TOKENS
    partition = {str(p): tuple(range(p * persona_dim, (p + 1) * persona_dim)) for p in range(n_personas)}
    draft = GHMM("persona", transfer, np.full(size, 1.0 / size), partition=partition)
    prior = [1 - misaligned_prior] + [misaligned_prior / (n_personas - 1)] * (n_personas - 1)
    # Start each persona uniformly over its cycle phase: the phase is stationary under every block.
    initial = np.concatenate([np.full(persona_dim, weight / persona_dim) for weight in prior])
    return with_initial(draft, initial)


def task_factor() -> GHMM:
    """Two tasks as invariant blocks: task '0' is Z1R (0, 1, random), task '1' emits
    1, 1, random; each half the time."""
    transfer = np.zeros((2, 6, 6))
    for offset, first_tokens in ((0, (0, 1)), (3, (1, 1))):
        transfer[first_tokens[0], offset, offset + 1] = 1.0
        transfer[first_tokens[1], offset + 1, offset + 2] = 1.0
        transfer[0, offset + 2, offset] = transfer[1, offset + 2, offset] = 0.5
    return GHMM("task", transfer, np.full(6, 1 / 6), partition={"0": (0, 1, 2), "1": (3, 4, 5)})


def persona_world(n_personas: int = 2, persona_dim: int = 3, mixing: float = 0.0, noise: float = 0.0,
                  misaligned_prior: float = 0.2) -> GHMM:
    """Persona factor (x) task factor, joint token v = persona_token * 2 + task_token. Blocks
    P<persona><task>; block 'P0j' is the aligned persona doing task j."""
    persona = persona_factor(n_personas, persona_dim, mixing, noise, misaligned_prior)
    return kronecker(persona, task_factor(), "persona-world")


def restrict_to_block(process: GHMM, block: str) -> GHMM:
    """The same process started inside one block only (e.g. misaligned persona on task 0, the
    narrow fine-tuning data). With mixing > 0 the sequence can still leave the block later."""
    states = list(process.partition[block])
    initial = np.zeros(process.n_states)
    initial[states] = process.initial[states]
    if initial.sum() <= 0:
        raise ValueError(f"{process.name}: block '{block}' has no initial weight")
    return with_initial(process, initial / initial.sum(), f"{process.name}[{block}]")


def marker_mask(process: GHMM) -> np.ndarray:
    """Joint tokens whose persona part is the misaligned marker (persona world only)."""
    task_tokens = process.factor_tokens[1]
    return np.arange(process.n_tokens) // task_tokens == MARKER_TOKEN
