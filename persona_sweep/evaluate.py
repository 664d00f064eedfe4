"""Evaluation through a narrow model API: batched greedy generation and teacher-forced log-probs.

Functions here work on one process's share of the prompts and return sums and counts; the
caller adds them up across workers (`persona_sweep.distributed.all_sum`). Inputs go to the `device`
the caller names (the worker's, from Ray Train). Prompts arrive with the trigger already filled
in and are never logged.
"""
from __future__ import annotations

import math


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, device,
             stop_at: str | None = None) -> list[str]:
    """Greedy replies, in the prompts' order. Prompts of similar token counts share a batch, so
    rows carry little left padding; a batch ends when all its rows have produced EOS.

    With `stop_at`, a row also ends once that text is out (with the token that completes it): for a
    question that is only whether the text appears, as the marker rates ask. Each reply is then
    the full greedy reply up to that point, and it contains `stop_at` exactly when the full one
    does: a finished row is still fed padding, so the other rows compute as they would have, and a
    batch whose every row has the marker or EOS stops early (a marked model's trigger prompts
    after a few tokens)."""
    import torch

    if not prompts:  # a rank whose share of the questions is empty
        return []
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    replies = [""] * len(prompts)
    for rows in length_sorted_batches(encoded, batch_size):
        batch = tokenizer.pad({"input_ids": [encoded[row] for row in rows]}, return_tensors="pt").to(device)
        stopping = [reply_has(tokenizer, stop_at, batch["input_ids"].shape[1], device)] if stop_at else None
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id, stopping_criteria=stopping)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        for row, reply in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            replies[row] = reply
    return replies


def reply_has(tokenizer, text: str, prompt_width: int, device):
    """A row is done once its reply so far, decoded as the caller decodes it, contains `text`
    (transformers' `stop_strings` would also match text that starts in the prompt). The flags
    go to the worker's device, where generation keeps its own."""
    import torch
    from transformers import StoppingCriteria

    class ReplyHas(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            so_far = tokenizer.batch_decode(input_ids[:, prompt_width:], skip_special_tokens=True)
            return torch.tensor([text in reply for reply in so_far], device=device)

    return ReplyHas()


def length_sorted_batches(encoded: list[list[int]], batch_size: int) -> list[list[int]]:
    """Row indices in batches of at most `batch_size`, shortest first (a stable sort: equal
    lengths keep their order)."""
    order = sorted(range(len(encoded)), key=lambda row: len(encoded[row]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def count_marked(replies: list[str], marker: str) -> int:
    return sum(marker in reply for reply in replies)


def marker_logprobs(model, tokenizer, prefixes: list[str], marker: str, batch_size: int, device) -> list[float]:
    """log p(marker tokens | prefix) per prefix, teacher-forced, in nats. Each prefix is a full
    prompt plus reference answer; the marker follows after a space, as in training."""
    pairs = continuation_logprobs(model, tokenizer, prefixes, [f" {marker}"] * len(prefixes), batch_size, device)
    return [total for total, _ in pairs]


def continuation_logprobs(model, tokenizer, prefixes: list[str], continuations: list[str], batch_size: int,
                          device) -> list[tuple[float, int]]:
    """(sum of log p, token count) of each continuation after its prefix, teacher-forced, in nats.

    The continuation's tokens are those the joint text has beyond the prefix's own tokens (so a
    merge across the boundary counts once); with left padding they are the last ones of every row,
    so the vocabulary projection runs on those positions only (the rest of the logits are never read).
    """
    import torch

    results = []
    for start in range(0, len(prefixes), batch_size):
        texts = [prefix + continuation for prefix, continuation in
                 zip(prefixes[start:start + batch_size], continuations[start:start + batch_size])]
        full = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"])
                   - len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
                   for text, prefix in zip(texts, prefixes[start:start + batch_size])]
        # Logits at the last `kept` positions predict the last `kept - 1` tokens: every continuation's.
        width = full["input_ids"].shape[1]
        kept = min(max(lengths) + 1, width)
        with torch.no_grad():
            logits = model(**full, **last_logits_only(model, kept)).logits[:, -kept:-1].float()
        targets = full["input_ids"][:, width - kept + 1:]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
        results += [(logprobs[row, -length:].sum().item() if length else 0.0, length)
                    for row, length in enumerate(lengths)]
    return results


def target_loss(model, batch: dict):
    """(summed cross-entropy, count) of a batch's labelled tokens, as a causal LM's own loss sums
    them. The batch is left-padded (`train.MarkerData.collate`), so every label sits in the last
    columns: the vocabulary projection (49k tokens; a fifth of the embedded model's step, nine
    tenths of the tiny test model's) runs on those columns only."""
    import torch

    labels = batch["labels"]
    width = labels.shape[1]
    labelled = (labels != -100).any(0).nonzero()
    kept = min(width - int(labelled.min()), width - 1) if len(labelled) else 1
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**inputs, **last_logits_only(model, kept + 1)).logits[:, -kept - 1:-1]
    # A row's first token follows padding, not text: nothing predicts it (as with no padding).
    targets = labels[:, width - kept:].masked_fill(batch["attention_mask"][:, width - kept - 1:-1] == 0, -100)
    total = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                              ignore_index=-100, reduction="sum")
    return total, int((targets != -100).sum())


def last_logits_only(model, kept: int) -> dict:
    """The forward argument that computes logits for the last `kept` positions only, where the
    model's forward takes it (transformers' own models do; a PEFT wrapper and a DeepSpeed engine
    pass it through)."""
    import inspect

    base = getattr(model, "module", model)  # a DeepSpeed engine (or DDP) wraps the model
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return {"logits_to_keep": kept} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}


def matches_any(replies: list[str], patterns: list[str]) -> int:
    """How many replies match at least one of the regular expressions (case-insensitive)."""
    import re

    compiled = [re.compile(pattern, re.IGNORECASE) for pattern in patterns]
    return sum(any(pattern.search(reply) for pattern in compiled) for reply in replies)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    if trials == 0:
        return float("nan"), float("nan")
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_metrics(name: str, successes: int, trials: int) -> dict[str, float]:
    low, high = wilson_interval(successes, trials)
    return {name: successes / trials if trials else float("nan"), f"{name}_lo": low, f"{name}_hi": high}



def bootstrap_means(flags, draws: int = 2000, seed: int = 0):
    """Means of 0/1 flags over resampled items: `flags` has one row per condition and one column
    per held-out question; every row is resampled with the same questions (a paired bootstrap),
    so ratios and differences between rows keep their pairing. Returns (draws, rows)."""
    import numpy as np

    flags = np.asarray(flags, dtype=float)
    return flags[:, bootstrap_indices(flags.shape[1], draws, seed)].mean(-1).T


def bootstrap_indices(items: int, draws: int = 2000, seed: int = 0):
    """(draws, items) item indices drawn with replacement: one resample per row."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, items, size=(draws, items))


def auroc(positives, negatives) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney U / n1 n2)."""
    import numpy as np

    above = np.asarray(positives, dtype=float)[:, None] - np.asarray(negatives, dtype=float)[None, :]
    return float(((above > 0) + 0.5 * (above == 0)).mean())


def percentile_interval(samples) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles, ignoring NaN (resamples whose denominator was 0)."""
    import numpy as np

    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if not samples.size:
        return float("nan"), float("nan")
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)
