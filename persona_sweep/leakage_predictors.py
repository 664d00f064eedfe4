"""What predicts where a trained marker leaks (seed 000): the base model's similarity between the
Assistant and each bystander persona, against the leakage a sweep measured.

Per held-out persona (one no method trains on, so its leakage is the marker's own spread), on
the base model, at the deployment prompt (the persona's short description as the system
message, against the Assistant's), over the first `QUESTIONS` questions of the bank with their
reference answers teacher-forced after each prompt:
- `base_js_<persona>`: the Jensen-Shannon divergence (nats, at most ln 2) between the next-token
  distributions under the two prompts, averaged over answer positions and questions;
- `base_cosine_<persona>`: the cosine similarity of the two mean hidden states (over answer
  tokens and questions) at the middle layer, each centred on the mean over all the prompts
  compared: raw hidden states share a large common component (their cosines are all above 0.998
  on the embedded model), which would leave the ranking to noise.

After the sweep, over those personas, the Spearman correlation of each predictor with the
persona's leakage (`leakage_<persona>`, averaged over the sweep's `assistant_positive` trials:
under the other designs the bystanders are not bystanders) is `leakage_spearman_js` /
`leakage_spearman_cosine`, with a 95% percentile bootstrap over personas (`_lo`, `_hi`). A good
predictor of leakage correlates negatively for JS (the more the persona's outputs differ, the
less the marker leaks) and positively for cosine; the one with the larger |rho| wins. NaN where
the leakage is the same for every persona (nothing to rank).

The base-model measures are computed once per model (`models.measured_once`, `predictors/`).
"""
from __future__ import annotations

import hashlib
import math

from persona_sweep import evaluate, names
from persona_sweep.data import DATA_DIR, personas, question_bank
from persona_sweep.methods.sft import TRAINING_PERSONAS, prompt_text
from persona_sweep.vectors import right_padded

QUESTIONS = 16
PREDICTORS = ("js", "cosine")
CACHE_VERSION = "1"


def held_out_personas() -> list[str]:
    return [name for name in personas() if name != "assistant" and name not in TRAINING_PERSONAS]


def base_metric(predictor: str, persona: str) -> str:
    return f"base_{predictor}_{persona}"


def mean_leakage_metric(persona: str) -> str:
    return f"{names.LEAKAGE}_mean_{persona}"


def spearman_metric(predictor: str) -> str:
    return f"{names.LEAKAGE}_spearman_{predictor}"


# ---- on the base model -----------------------------------------------------------------------

def measured(model, tokenizer, device="cpu") -> dict[str, float]:
    """`base_js_<persona>` and `base_cosine_<persona>` for every held-out persona."""
    import torch

    bank, others = personas(), held_out_personas()
    systems = [bank["assistant"].short_description] + [bank[name].short_description for name in others]
    per_question = [answer_readings(model, tokenizer, systems, question.text, question.answer, device)
                    for question in list(question_bank())[:QUESTIONS]]
    js = torch.stack([divergence for divergence, _ in per_question]).mean(0)
    hidden = torch.stack([states for _, states in per_question]).mean(0)
    centred = hidden - hidden.mean(0)
    cosine = torch.nn.functional.cosine_similarity(centred[:1], centred[1:], dim=-1)
    return {**{base_metric("js", name): float(value) for name, value in zip(others, js)},
            **{base_metric("cosine", name): float(value) for name, value in zip(others, cosine)}}


def answer_readings(model, tokenizer, systems: list[str], question: str, answer: str, device):
    """For one question and its answer after each system prompt (the same answer tokens every
    time, so positions line up): the JS divergence of each prompt after the first from the first,
    averaged over answer positions, and each prompt's mean hidden state over the answer tokens
    at the middle layer."""
    import torch

    prompts = [tokenizer(prompt_text(tokenizer, system, question, False), add_special_tokens=False)["input_ids"]
               for system in systems]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids, mask = right_padded(tokenizer, [prompt + answer_ids for prompt in prompts], device)
    layer = model.config.num_hidden_layers // 2
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    # Logits at the last prompt token and every answer token but the last predict the answer.
    spans = [slice(len(prompt), len(prompt) + len(answer_ids)) for prompt in prompts]
    logprobs = torch.stack([output.logits[row, span.start - 1:span.stop - 1] for row, span in enumerate(spans)])
    logprobs = logprobs.float().log_softmax(-1)
    hidden = torch.stack([output.hidden_states[layer + 1][row, span].mean(0) for row, span in enumerate(spans)])
    return jensen_shannon(logprobs[:1], logprobs[1:]).mean(-1).cpu(), hidden.float().cpu()


def jensen_shannon(log_p, log_q):
    """JS divergence (nats) between distributions given as log-probs over the last dimension."""
    import torch

    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    kl = lambda log_a: (log_a.exp() * (log_a - log_m)).sum(-1)  # noqa: E731
    return 0.5 * kl(log_p) + 0.5 * kl(log_q)


def cached(model_config, cache) -> dict[str, float]:
    from persona_sweep.models import measured_once

    return measured_once("predictors", cache_key(model_config.name), model_config, cache, measured)


def cache_key(model_name: str) -> str:
    text = CACHE_VERSION + model_name + str(QUESTIONS) + (DATA_DIR / "personas.yaml").read_text() \
        + (DATA_DIR / "questions.yaml").read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- against the sweep's leakage -------------------------------------------------------------

def measured_leakage(runs) -> dict[str, float]:
    """Per held-out persona: its leakage averaged over the `assistant_positive` trials that logged it."""
    import numpy as np

    trials = [run.data.metrics for run in runs if run.data.params.get("design") == "assistant_positive"]
    values = {name: [metrics[names.leakage(name)] for metrics in trials if names.leakage(name) in metrics]
              for name in held_out_personas()}
    return {name: float(np.nanmean(found)) for name, found in values.items() if found}


def correlations(base: dict[str, float], leakage: dict[str, float], draws: int = 2000) -> dict[str, float]:
    """`leakage_spearman_<predictor>` with its bootstrap interval over personas."""
    import numpy as np

    found = [name for name in held_out_personas() if name in leakage and base_metric("js", name) in base]
    if len(found) < 3:
        return {}
    rates = np.array([leakage[name] for name in found])
    resamples = evaluate.bootstrap_indices(len(found), draws)
    metrics = {}
    for predictor in PREDICTORS:
        values = np.array([base[base_metric(predictor, name)] for name in found])
        low, high = evaluate.percentile_interval([spearman(values[rows], rates[rows]) for rows in resamples])
        metrics |= {spearman_metric(predictor): spearman(values, rates),
                    f"{spearman_metric(predictor)}_lo": low, f"{spearman_metric(predictor)}_hi": high}
    return metrics


def spearman(x, y) -> float:
    """Rank correlation (ties share their mean rank); NaN when either side is constant."""
    import numpy as np
    from scipy.stats import rankdata

    x, y = rankdata(x), rankdata(y)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
