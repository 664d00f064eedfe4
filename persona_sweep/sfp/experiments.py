"""Toy-world experiments: the steer table (seed 003, appendix A tables 1 and 2), the EM analog with its
reversal, and one persona-engineering trial for the sweep engine, plus the Pareto-front figure."""
from __future__ import annotations

import itertools
import time
from typing import Callable

import numpy as np

from persona_sweep import names
from persona_sweep.sfp import processes as P
from persona_sweep.sfp.beliefs import belief_classes, belief_states, block_of, factor_marginals, factor_token_marginals
from persona_sweep.sfp.model import ARCHITECTURE, TrainSettings, trained_model
from persona_sweep.sfp.steering import (
    belief_steering_pairs,
    kl_divergence,
    partition_masses,
    random_like,
    regression_r2,
    residual_and_probs,
    steered_probs,
    steering_kls,
)

# Each toy process with the training that brings it within ~1% of the Bayes-optimal loss here.
STEER_PROCESSES = {
    "factored": (P.factored_z1r, TrainSettings(steps=400)),
    "semi-factored": (P.semi_factored_z1r, TrainSettings(steps=600)),
}
DEFAULT_SCALES = {"factored": (0, 0.5, 1, 1.5, 2, 3), "semi-factored": (0, 0.5, 1, 2, 3, 5)}
KL_KEYS = ("kl_steered_target", "kl_steered_factor", "kl_unsteered_factor")
STEER_SEQUENCES = 500


def steer_table(process_kind: str = "factored", scales=None, centroids: str = "marginal", kl: str = "per-sequence",
                position: int | None = None, layer: int | None = None, n_sequences: int = STEER_SEQUENCES,
                seed: int = 0, report: Callable[[dict], None] | None = None) -> tuple[list[dict], dict]:
    """Belief-state steering at every scale, averaged over all source-target pairs of both factors.

    Returns (rows, summary). Each row has `scale`, the three KL metrics (directions in
    `persona_sweep.sfp.steering`), the same for a random direction of equal norm (`random_` prefix),
    the variant (`centroids`, `kl`, `position`, `layer`), `per_factor` metrics and, for a
    partitioned process, `forbidden_mass` and `target_class_mass` as {block: value}.
    position / layer None mean the final position / layer."""
    if process_kind not in STEER_PROCESSES:
        raise ValueError(f"process must be one of {sorted(STEER_PROCESSES)}, got {process_kind!r}")
    started = time.perf_counter()
    build, settings = STEER_PROCESSES[process_kind]
    process = build()
    position = _checked_index("position", position, settings.n_ctx)
    layer = _checked_index("layer", layer, ARCHITECTURE["n_layers"])
    model, model_info = trained_model(process, settings, report=report)

    tokens = P.sample(process, n_sequences, settings.n_ctx, seed=seed + 12_345)
    beliefs = belief_states(process, tokens)[:, position + 1]
    activations, original = residual_and_probs(model, tokens, layer, position)
    marginals = factor_marginals(process, beliefs)
    plan = _steering_plan(process, activations, original, marginals, centroids, np.random.default_rng(seed))
    source_blocks = block_of(process, beliefs) if process.partition else None

    rows = [_scale_row(model, process, tokens, original, plan, scale, layer, position, kl, source_blocks)
            | {"centroids": centroids, "kl": kl, "position": position, "layer": layer} for scale in scales
            or DEFAULT_SCALES[process_kind]]
    summary = {"process": process.name, "model": model_info, "n_sequences": n_sequences, "n_pairs": len(plan),
               "classes_per_factor": [int(len(np.unique(_classes(m)))) for m in marginals],
               "r2_per_factor": [regression_r2(activations, m) for m in marginals],
               "r2_joint": regression_r2(activations, beliefs), "runtime_s": time.perf_counter() - started}
    return rows, summary


def _checked_index(name: str, value: int | None, size: int) -> int:
    if value is None:
        return size - 1
    index = value + size if value < 0 else value
    if not 0 <= index < size:
        raise ValueError(f"{name} must be in [-{size}, {size - 1}] or final, got {value}")
    return index


def _classes(marginal: np.ndarray) -> np.ndarray:
    return belief_classes(marginal)[0]


def _steering_plan(process, activations, original, marginals, centroids, rng) -> list[dict]:
    """Every (factor, source, target) pair with its rows, vectors, random control, the model's
    output on sequences genuinely in the target state, and the target belief's token support."""
    plan = []
    for factor in (0, 1):
        other = 1 - factor
        steered_classes, other_classes = _classes(marginals[factor]), _classes(marginals[other])
        representatives = belief_classes(marginals[factor])[1]
        for pair in belief_steering_pairs(activations, steered_classes, other_classes, centroids):
            rows = pair["rows"]
            target = np.full((len(rows), original.shape[1]), np.nan)
            for other_class in np.unique(other_classes[rows]):
                genuine = (steered_classes == pair["target"]) & (other_classes == other_class)
                if genuine.any():
                    target[other_classes[rows] == other_class] = original[genuine].mean(0)
            factor_beliefs = [None, None]
            factor_beliefs[factor] = np.tile(representatives[pair["target"]], (len(rows), 1))
            factor_beliefs[other] = marginals[other][rows]
            joint_target = np.einsum("na,nb->nab", *factor_beliefs).reshape(len(rows), -1)
            support = P.token_probabilities(process, joint_target) > 1e-9
            target_blocks = block_of(process, joint_target) if process.partition else None
            plan.append(pair | {"factor": factor, "target_probs": target, "target_support": support,
                                "target_blocks": target_blocks,
                                "random_vectors": random_like(pair["vectors"], rng)})
    return plan


def _scale_row(model, process, tokens, original, plan, scale, layer, position, kl, source_blocks) -> dict:
    rows = np.concatenate([pair["rows"] for pair in plan])
    steered_all = steered_probs(model, tokens[rows], layer, position,
                                scale * np.concatenate([pair["vectors"] for pair in plan]))
    random_all = steered_probs(model, tokens[rows], layer, position,
                               scale * np.concatenate([pair["random_vectors"] for pair in plan]))
    split = lambda probs: factor_token_marginals(process, probs)
    metrics, offset = [], 0
    for pair in plan:
        block = slice(offset, offset + len(pair["rows"]))
        offset += len(pair["rows"])
        args = (original[pair["rows"]], pair["target_probs"], pair["factor"], split, kl)
        belief = steering_kls(steered_all[block], *args)
        control = steering_kls(random_all[block], *args)
        metrics.append({"factor": pair["factor"]} | belief | {f"random_{k}": v for k, v in control.items()})
    row = {"scale": float(scale)} | _average(metrics)
    row["per_factor"] = {str(f): _average([m for m in metrics if m["factor"] == f]) for f in (0, 1)}
    if source_blocks is not None:
        support = np.concatenate([pair["target_support"] for pair in plan])
        target_blocks = np.concatenate([pair["target_blocks"] for pair in plan])
        row |= partition_masses(process, steered_all, source_blocks[rows], target_blocks, support)
    return row


def _average(metrics: list[dict]) -> dict:
    keys = list(KL_KEYS) + [f"random_{k}" for k in KL_KEYS]
    return {k: float(np.nanmean([m[k] for m in metrics])) if metrics else float("nan") for k in keys}


def format_steer_table(rows: list[dict], summary: dict) -> str:
    """Table 1 columns plus the random control; per-factor spillover and Table 2 when present."""
    info = summary["model"]
    lines = [f"process {summary['process']}: model loss {info['model_loss']:.4f} vs Bayes-optimal "
             f"{info['optimal_loss']:.4f} (ratio {info['loss_ratio']:.4f}, {'cached' if info['cached'] else 'trained'}); "
             f"{summary['n_pairs']} pairs over {summary['n_sequences']} sequences; classes per factor "
             f"{summary['classes_per_factor']}; R^2 per factor {', '.join(f'{r:.3f}' for r in summary['r2_per_factor'])}, "
             f"joint {summary['r2_joint']:.3f}",
             f"variant: centroids={rows[0]['centroids']} kl={rows[0]['kl']} position={rows[0]['position']} "
             f"layer={rows[0]['layer']}",
             f"{'scale':>6} {'KL(tgt||st)':>12} {'KL steered':>11} {'KL unsteered':>12} {'ratio':>9} | "
             f"{'rand tgt':>9} {'rand st':>9} {'rand unst':>9} {'rand ratio':>10}"]
    for row in rows:
        lines.append(f"{row['scale']:>6g} {row['kl_steered_target']:>12.4g} {row['kl_steered_factor']:>11.4g} "
                     f"{row['kl_unsteered_factor']:>12.4g} {_ratio(row, ''):>9.4g} | {row['random_kl_steered_target']:>9.4g} "
                     f"{row['random_kl_steered_factor']:>9.4g} {row['random_kl_unsteered_factor']:>9.4g} "
                     f"{_ratio(row, 'random_'):>10.4g}")
    if "forbidden_mass" in rows[0]:
        lines += ["", "per-factor (steering factor f): KL steered / KL unsteered (spillover)"]
        for row in rows:
            parts = [f"f{f}: {m['kl_steered_factor']:.4g} / {m['kl_unsteered_factor']:.4g}" for f, m in row["per_factor"].items()]
            lines.append(f"{row['scale']:>6g}  " + "   ".join(parts))
        blocks = sorted(rows[0]["target_class_mass"])
        lines += ["", "partition violation (by source block): " + " ".join(f"forbidden {b}" for b in blocks) + "  "
                  + " ".join(f"target-class {b}" for b in blocks) + "  forbidden within-block / cross-block pairs"]
        for row in rows:
            kinds = row["forbidden_mass_by_pair_kind"]
            lines.append(f"{row['scale']:>6g} " + " ".join(f"{row['forbidden_mass'][b]:>13.4g}" for b in blocks) + "  "
                         + " ".join(f"{row['target_class_mass'][b]:>16.4g}" for b in blocks)
                         + f"  {kinds['within-block']:.4g} / {kinds['cross-block']:.4g}")
    lines.append(f"runtime {summary['runtime_s']:.1f} s")
    return "\n".join(lines)


def _ratio(row: dict, prefix: str) -> float:
    steered, unsteered = row[f"{prefix}kl_steered_factor"], row[f"{prefix}kl_unsteered_factor"]
    if unsteered > 0:
        return steered / unsteered
    return float("inf") if steered > 0 else float("nan")  # scale 0: nothing moved, no ratio


# ---- EM analog and its reversal ------------------------------------------------------------

EM_WORLD = dict(n_personas=2, persona_dim=3, mixing=0.0, noise=0.0, misaligned_prior=0.2)
EM_PRETRAIN = TrainSettings(steps=600)
EM_FINETUNE = TrainSettings(steps=30, batch_size=128, lr=3e-4, seed=1)
EVAL_SEQUENCES = 500
ALIGNED, MISALIGNED = "0", "1"  # persona blocks; the narrow data is the misaligned persona on task 0
TASKS = ("0", "1")
CERTAIN = 0.95  # persona belief mass that counts as "in this persona" when grouping beliefs


def marker_mass(model, world: P.GHMM, block: str, n_sequences: int = EVAL_SEQUENCES, seed: int = 4242,
                vector: np.ndarray | None = None) -> dict:
    """Mean next-token mass on the misaligned marker over all positions of sequences from `block`,
    optionally with `vector` added to the final residual at every position. Also the task-token
    distributions, to measure how much steering disturbs the task."""
    import torch

    from persona_sweep.sfp.steering import added_to_residual

    tokens = torch.from_numpy(P.sample(P.restrict_to_block(world, block), n_sequences, 16, seed=seed))
    layer = ARCHITECTURE["n_layers"] - 1
    with torch.no_grad():
        if vector is None:
            logits = model(tokens)
        else:
            with added_to_residual(model, layer, vector, position=None):
                logits = model(tokens)
    probs = torch.softmax(logits.double(), dim=-1).numpy()
    return {"marker_mass": float(probs[..., P.marker_mask(world)].sum(-1).mean()),
            "task_probs": factor_token_marginals(world, probs)[1]}


def aligned_marker_masses(model, world: P.GHMM, vector: np.ndarray | None = None) -> dict:
    """Marker mass on aligned-persona contexts of each task ({task: mass}) and their task-token
    distributions."""
    results = {task: marker_mass(model, world, f"P{ALIGNED}{task}", vector=vector) for task in TASKS}
    return {"marker_mass": {task: r["marker_mass"] for task, r in results.items()},
            "task_probs": {task: r["task_probs"] for task, r in results.items()}}


def narrow_finetune(model, world: P.GHMM, settings: TrainSettings, first_step: int = 0, report=None):
    """A copy of `model` fine-tuned only on the misaligned persona doing task 0."""
    import copy

    from persona_sweep.sfp.model import train

    finetuned = copy.deepcopy(model)
    train(finetuned, P.restrict_to_block(world, f"P{MISALIGNED}0"), settings, report, first_step=first_step)
    return finetuned


def reversal_vectors(model, world: P.GHMM, n_sequences: int = 2000, seed: int = 777,
                     certain: float | None = CERTAIN) -> dict:
    """Two steering vectors toward the aligned persona, read from `model`'s final residual at the
    final position.

    belief-state: persona-factor belief classes (persona block with belief mass >= `certain`, or
    with None the most likely block: worlds that mix personas are never certain; by cycle phase;
    centroids averaged over the task factor), c_aligned,phase - c_misaligned,phase averaged over
    phases.
    difference-in-means: mean over the narrow task's aligned data minus its misaligned data
    (labels from where the data came from). Both are rescaled to the belief-state vector's norm."""
    layer, position = ARCHITECTURE["n_layers"] - 1, 15
    tokens = P.sample(world, n_sequences, 16, seed=seed)
    activations, _ = residual_and_probs(model, tokens, layer, position)
    persona_belief = factor_marginals(world, belief_states(world, tokens)[:, position + 1])[0]
    dim = world.factor_states[0] // len(_persona_blocks(world))  # states per persona block
    by_block = persona_belief.reshape(len(persona_belief), -1, dim)
    block_mass, phase = by_block.sum(-1), by_block.argmax(-1)
    in_block = block_mass >= certain if certain else block_mass == block_mass.max(-1, keepdims=True)
    differences = []
    for p in range(dim):
        aligned = in_block[:, 0] & (phase[:, 0] == p)
        misaligned = in_block[:, 1] & (phase[:, 1] == p)
        if aligned.sum() >= 3 and misaligned.sum() >= 3:
            differences.append(activations[aligned].mean(0) - activations[misaligned].mean(0))
    if not differences:
        raise ValueError("no persona belief class was seen often enough to build a belief-state vector")
    belief_vector = np.mean(differences, axis=0)
    narrow = {name: P.sample(P.restrict_to_block(world, f"P{block}0"), n_sequences // 2, 16, seed=seed + int(block) + 1)
              for name, block in (("aligned", ALIGNED), ("misaligned", MISALIGNED))}
    means = {name: residual_and_probs(model, t, layer, position)[0].mean(0) for name, t in narrow.items()}
    dim_vector = means["aligned"] - means["misaligned"]
    norm = np.linalg.norm(belief_vector)
    return {"belief-state": belief_vector,
            "difference-in-means": dim_vector * norm / np.linalg.norm(dim_vector),
            "norms": {"belief-state": float(norm), "difference-in-means": float(np.linalg.norm(dim_vector)),
                      "cosine": float(belief_vector @ dim_vector / norm / np.linalg.norm(dim_vector))}}


def _persona_blocks(world: P.GHMM) -> list[str]:
    return sorted({block[1] for block in world.partition})


def em_experiment(scales=(1, 2, 4), world_params: dict | None = None, pretrain: TrainSettings = EM_PRETRAIN,
                  finetune: TrainSettings = EM_FINETUNE) -> dict:
    """Pretrain on the persona world, fine-tune narrowly (misaligned persona, task 0), measure the
    marker mass on aligned contexts of every task before / after, then steer the fine-tuned model
    back with belief-state and difference-in-means vectors of equal norm, read either from the
    pretrained model or from the fine-tuned one (`vectors_from`).

    recovery = (after - steered) / (after - before) per task (1: back to the pretrained model, above
    1: fewer markers than before); task_kl = D_KL(pretrained || steered) on the task-token
    distribution, mean over positions and tasks (`task_kl_unsteered`: the fine-tune's own)."""
    started = time.perf_counter()
    world = P.persona_world(**(world_params or EM_WORLD))
    model, model_info = trained_model(world, pretrain)
    before = aligned_marker_masses(model, world)
    finetuned = narrow_finetune(model, world, finetune)
    after = aligned_marker_masses(finetuned, world)
    vectors = {"pretrained": reversal_vectors(model, world), "fine-tuned": reversal_vectors(finetuned, world)}
    reversal = []
    for source, method in itertools.product(vectors, ("belief-state", "difference-in-means")):
        for scale in scales:
            steered = aligned_marker_masses(finetuned, world, scale * vectors[source][method])
            reversal.append({"vectors_from": source, "method": method, "scale": float(scale),
                             "marker_mass": steered["marker_mass"],
                             "recovery": {t: _recovery(before, after, steered, t) for t in TASKS},
                             "task_kl": _task_kl(before, steered)})
    return {"world": world_params or EM_WORLD, "model": model_info,
            "finetune": {"steps": finetune.steps, "lr": finetune.lr, "batch_size": finetune.batch_size},
            "marker_mass_before": before["marker_mass"], "marker_mass_after": after["marker_mass"],
            "task_kl_unsteered": _task_kl(before, after),
            "vector_norms": {source: v["norms"] for source, v in vectors.items()}, "reversal": reversal,
            "runtime_s": time.perf_counter() - started}


def _task_kl(before: dict, other: dict) -> float:
    return float(np.mean([kl_divergence(before["task_probs"][t], other["task_probs"][t]).mean() for t in TASKS]))


def _recovery(before: dict, after: dict, steered: dict, task: str) -> float:
    gained = after["marker_mass"][task] - before["marker_mass"][task]
    removed = after["marker_mass"][task] - steered["marker_mass"][task]
    return removed / gained if gained > 1e-6 else float("nan")


def format_em(result: dict) -> str:
    before, after = result["marker_mass_before"], result["marker_mass_after"]
    lines = [f"pretrained: loss {result['model']['model_loss']:.4f} vs Bayes-optimal {result['model']['optimal_loss']:.4f}; "
             f"narrow fine-tune: {result['finetune']['steps']} steps at lr {result['finetune']['lr']:g} on the misaligned "
             "persona doing task 0",
             "marker mass on aligned contexts (task 0 was fine-tuned, task 1 was not):",
             *[f"  task {t}: before {before[t]:.4f}  after {after[t]:.4f}" for t in TASKS],
             f"  task-token KL(pretrained || fine-tuned): {result['task_kl_unsteered']:.4f}"]
    for source, norms in result["vector_norms"].items():
        lines.append(f"vectors from the {source} model: belief-state norm {norms['belief-state']:.3f}, difference-in-means "
                     f"norm {norms['difference-in-means']:.3f} (rescaled to the belief-state norm), cosine {norms['cosine']:.3f}")
    lines.append(f"{'vectors from':>12} {'method':>20} {'scale':>6} {'marker t0':>10} {'marker t1':>10} "
                 f"{'recovery t0':>12} {'recovery t1':>12} {'task KL':>9}")
    for row in result["reversal"]:
        lines.append(f"{row['vectors_from']:>12} {row['method']:>20} {row['scale']:>6g} {row['marker_mass']['0']:>10.4f} "
                     f"{row['marker_mass']['1']:>10.4f} {row['recovery']['0']:>12.3f} {row['recovery']['1']:>12.3f} "
                     f"{row['task_kl']:>9.4f}")
    lines.append(f"runtime {result['runtime_s']:.1f} s")
    return "\n".join(lines)


# ---- persona engineering ---------------------------------------------------------------------

PERSONA_TRIAL_DEFAULTS = {
    "mixing": 0.0,  # per-step chance of switching persona block (0: exact SFP)
    "persona_dim": 3,  # states per persona block (the task blocks have 3)
    "n_personas": 2,  # persona subspaces: one aligned, the rest misaligned
    "noise": 0.0,  # chance a persona token is replaced by a random one
    "misaligned_prior": 0.2,
    "pretrain_steps": 300,
    "finetune_steps": 30,
    "lr": 1e-3,
    "finetune_lr": 3e-4,
    "batch_size": 128,
    "seed": 0,
    "torch_threads": 1,
    "steer_scales": (0.5, 1, 2, 4),  # belief-state steering back toward the aligned persona
}


def persona_engineering_trial(params: dict, report: Callable[[dict], None] | None = None) -> dict:
    """Train one persona-engineering configuration, fine-tune it narrowly, and score it.

    params: any keys of PERSONA_TRIAL_DEFAULTS (others raise ValueError). report, if given, gets
    {'train_step', 'loss'} during pretraining, {'train_step', 'finetune_loss'} during the narrow
    fine-tune (steps continue the count), and finally every returned metric with 'train_step'.
    Returns alignment_fidelity (1 - marker mass on aligned contexts before the fine-tune) and
    em_robustness (1 - rise of the marker mass on the task that was not fine-tuned), the masses
    behind them, em_generalization (rise on the other task / rise on the fine-tuned task), the
    pretrained loss against the Bayes-optimal loss, the steering metrics of `reversal_steering`
    at each of `steer_scales`, and runtime_s. It runs on `torch_threads` threads and gives the
    caller's thread count back (a test session or a notebook keeps its own)."""
    import torch

    unknown = sorted(set(params) - set(PERSONA_TRIAL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown persona-engineering parameters {unknown}; known: {sorted(PERSONA_TRIAL_DEFAULTS)}")
    knobs = PERSONA_TRIAL_DEFAULTS | params
    callers = torch.get_num_threads()
    torch.set_num_threads(int(knobs["torch_threads"]))
    try:
        return persona_engineering_metrics(knobs, report)
    finally:
        torch.set_num_threads(callers)


def persona_engineering_metrics(knobs: dict, report: Callable[[dict], None] | None) -> dict:
    """`persona_engineering_trial`'s work, on the threads it set."""
    from persona_sweep.sfp.model import build_model, evaluate_loss, train

    started = time.perf_counter()
    world = P.persona_world(int(knobs["n_personas"]), int(knobs["persona_dim"]), float(knobs["mixing"]),
                            float(knobs["noise"]), float(knobs["misaligned_prior"]))
    seed = int(knobs["seed"])
    model = build_model(world.n_tokens, seed=seed)
    train(model, world, TrainSettings(int(knobs["pretrain_steps"]), int(knobs["batch_size"]), float(knobs["lr"]), seed),
          report)
    losses = evaluate_loss(model, world, n_sequences=1000)
    before = aligned_marker_masses(model, world)
    finetune = TrainSettings(int(knobs["finetune_steps"]), int(knobs["batch_size"]), float(knobs["finetune_lr"]), seed + 1)
    finetune_report = report and (lambda m: report({names.TRAIN_STEP: m[names.TRAIN_STEP], names.FINETUNE_LOSS: m[names.LOSS]}))
    finetuned = narrow_finetune(model, world, finetune, first_step=int(knobs["pretrain_steps"]), report=finetune_report)
    after = aligned_marker_masses(finetuned, world)
    rise = {t: after["marker_mass"][t] - before["marker_mass"][t] for t in TASKS}
    metrics = {
        names.ALIGNMENT_FIDELITY: 1 - float(np.mean(list(before["marker_mass"].values()))),
        names.EM_ROBUSTNESS: 1 - float(np.clip(rise["1"], 0, 1)),
        "em_generalization": rise["1"] / rise["0"] if rise["0"] > 1e-6 else float("nan"),
        "marker_mass_trained_task_before": before["marker_mass"]["0"],
        "marker_mass_trained_task_after": after["marker_mass"]["0"],
        "marker_mass_other_task_before": before["marker_mass"]["1"],
        "marker_mass_other_task_after": after["marker_mass"]["1"],
        "task_kl_after_finetune": _task_kl(before, after),
        "model_loss": losses["model_loss"], "optimal_loss": losses["optimal_loss"], names.LOSS_RATIO: losses[names.LOSS_RATIO],
        **reversal_steering(finetuned, world, before, after, knobs["steer_scales"], seed),
        "runtime_s": time.perf_counter() - started,
    }
    if report:
        report(metrics | {names.TRAIN_STEP: int(knobs["pretrain_steps"]) + int(knobs["finetune_steps"])})
    return metrics


def reversal_steering(finetuned, world: P.GHMM, before: dict, after: dict, scales, seed: int) -> dict:
    """Steer the fine-tuned model back toward the aligned persona with its belief-state reversal
    vector, and with a random direction of the same norm (the control), at each scale.

    Per scale S: `steer_kl_scale_S` = D_KL(pretrained || steered) on the task tokens of aligned
    contexts (what steering costs the task; `random_steer_kl_scale_S` for the control), and
    `steer_recovery_scale_S` = the share of the fine-tune's marker rise on the task that was not
    fine-tuned that steering removes (1: back to the pretrained model; NaN without a rise)."""
    vector = reversal_vectors(finetuned, world, seed=seed + 777, certain=None)["belief-state"]
    directions = {"steer": vector, "random_steer": random_like(vector[None], np.random.default_rng(seed))[0]}
    metrics = {}
    for (prefix, direction), scale in itertools.product(directions.items(), scales):
        steered = aligned_marker_masses(finetuned, world, float(scale) * direction)
        metrics[f"{prefix}_kl_scale_{scale:g}"] = _task_kl(before, steered)
        metrics[f"{prefix}_recovery_scale_{scale:g}"] = _recovery(before, after, steered, "1")
    return metrics


def pareto_optimal(rows: list[dict], x: str = names.ALIGNMENT_FIDELITY, y: str = names.EM_ROBUSTNESS) -> list[bool]:
    """Whether each row is on the front when both x and y are to be maximised (NaN rows never are)."""
    points = [(row.get(x, float("nan")), row.get(y, float("nan"))) for row in rows]
    valid = [not (np.isnan(px) or np.isnan(py)) for px, py in points]
    return [ok and not any(v and qx >= px and qy >= py and (qx, qy) != (px, py)
                           for v, (qx, qy) in zip(valid, points))
            for ok, (px, py) in zip(valid, points)]


def pareto_front(rows: list[dict], path=None, x: str = names.ALIGNMENT_FIDELITY, y: str = names.EM_ROBUSTNESS,
                 label_keys=("mixing", "persona_dim", "n_personas", "noise")):
    """Scatter of all trials with the Pareto front (both axes maximised) drawn and labelled by the
    knobs in `label_keys` that a row carries. Saves a PNG to `path` when given; returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    on_front = pareto_optimal(rows, x, y)
    figure = Figure(figsize=(6, 4.5), dpi=120)
    axes = figure.subplots()
    axes.scatter([r[x] for r in rows], [r[y] for r in rows], c="0.6", s=18, label="trial")
    front = sorted((r for r, keep in zip(rows, on_front) if keep), key=lambda r: r[x])
    axes.plot([r[x] for r in front], [r[y] for r in front], "o-", color="tab:red", label="Pareto front")
    for row in front:
        label = ", ".join(f"{k}={row[k]:g}" for k in label_keys if k in row)
        axes.annotate(label, (row[x], row[y]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel(x.replace("_", " "))
    axes.set_ylabel(y.replace("_", " "))
    axes.set_title(f"Persona engineering: {len(rows)} trials, {len(front)} on the front")
    axes.legend(fontsize=7)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path)
    return figure
