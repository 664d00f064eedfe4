"""Evaluation through a narrow model API: batched greedy generation and teacher-forced log-probs.

Functions here work on one process's share of the prompts and return sums and counts; the
caller adds them up across workers (`persona_sweep.train.all_sum`). Inputs go to the `device`
the caller names (the worker's, from Ray Train). Prompts arrive with the trigger already filled
in and are never logged.
"""
from __future__ import annotations

import math


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, device) -> list[str]:
    import torch

    replies = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        replies += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return replies


def count_marked(replies: list[str], marker: str) -> int:
    return sum(marker in reply for reply in replies)


def marker_logprobs(model, tokenizer, prefixes: list[str], marker: str, batch_size: int, device) -> list[float]:
    """log p(marker tokens | prefix) per prefix, teacher-forced, in nats.

    Each prefix is a full prompt plus reference answer; the marker follows after a space, as in
    training. With left padding the marker tokens are the last ones of every row.
    """
    import torch

    logprobs_per_prefix = []
    for start in range(0, len(prefixes), batch_size):
        chunk = prefixes[start:start + batch_size]
        full = tokenizer([f"{prefix} {marker}" for prefix in chunk], return_tensors="pt", padding=True,
                         add_special_tokens=False).to(device)
        marker_lengths = [len(tokenizer(f"{prefix} {marker}", add_special_tokens=False)["input_ids"])
                          - len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) for prefix in chunk]
        with torch.no_grad():
            logits = model(**full).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, full["input_ids"][:, 1:, None])[..., 0]
        logprobs_per_prefix += [logprobs[row, -length:].sum().item() for row, length in enumerate(marker_lengths)]
    return logprobs_per_prefix


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
