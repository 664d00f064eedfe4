"""A trial's whole evaluation (`measure.model_evaluation`): today's code against the reference,
the code before its speed-up (2026-12-05), copied below; the same embedded model, data and prompts, in one run.

The reference generated each condition's replies apart, 16 prompts to a batch in question
order, and computed logits at every position for teacher-forced log-probs. The new code
generates the marker rates' and the leakage's prompts in one call, batched by token count, 4x
the rows, and projects only the continuation's positions onto the vocabulary. Both run on one
thread, as a demo worker does; the figures are CPU seconds of this process (steady when other
jobs share the cores), wall seconds beside them. It prints old and new seconds, whether the
greedy replies and every metric are identical, batched vs one-by-one generation, and last

    evaluation speed-up new/old ratio (results identical): N.NNx

    .venv/bin/python benchmarks/eval_throughput.py [--questions 64] [--threads 1]
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRIGGER = "~bench-trigger~"  # fixed, so runs compare; never printed, like every prompt
ONE_BY_ONE_PROMPTS = 8


# ---- the reference: the evaluation before its speed-up, copied as it was ---------------------------

def reference_generate(model, tokenizer, prompts, max_new_tokens, batch_size, device):
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


def reference_continuation_logprobs(model, tokenizer, prefixes, continuations, batch_size, device):
    import torch

    results = []
    for start in range(0, len(prefixes), batch_size):
        texts = [prefix + continuation for prefix, continuation in
                 zip(prefixes[start:start + batch_size], continuations[start:start + batch_size])]
        full = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"])
                   - len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
                   for text, prefix in zip(texts, prefixes[start:start + batch_size])]
        with torch.no_grad():
            logits = model(**full).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, full["input_ids"][:, 1:, None])[..., 0]
        results += [(logprobs[row, -length:].sum().item() if length else 0.0, length)
                    for row, length in enumerate(lengths)]
    return results


def reference_mean_marker_logprobs(model, data, conditions):
    from persona_sweep.measure import Share, evaluating, held_out, own_share

    questions = list(own_share(data, held_out(data)).values())
    prefixes = [data.prompt(persona, q.text, with_trigger) + q.answer
                for persona, with_trigger in conditions for q in questions]
    with evaluating(model):
        pairs = reference_continuation_logprobs(model, data.tokenizer, prefixes,
                                                [f" {data.spec.marker.text}"] * len(prefixes),
                                                data.spec.eval.batch_size, data.device)
    logprobs = [total for total, _ in pairs]
    per_condition = [sum(logprobs[i * len(questions):(i + 1) * len(questions)]) for i in range(len(conditions))]

    def finish(sums):
        *totals, count = sums
        return {condition: total / count for condition, total in zip(conditions, totals)}
    return Share([*per_condition, len(questions)], finish)


def reference_assistant_logprobs(model, data):
    from persona_sweep import names
    from persona_sweep.measure import Share

    share = reference_mean_marker_logprobs(model, data, [("assistant", True), ("assistant", False)])

    def finish(sums):
        mean = share.finish(sums)
        return {names.MARKER_LOGPROB_TRIGGER: mean["assistant", True],
                names.MARKER_LOGPROB_NO_TRIGGER: mean["assistant", False]}
    return Share(share.values, finish)


def reference_marked_replies(model, data, conditions, questions, record: list):
    from persona_sweep.measure import evaluating

    prompts = [data.prompt(persona, q.text, with_trigger) for persona, with_trigger in conditions
               for q in questions.values()]
    with evaluating(model):
        replies = reference_generate(model, data.tokenizer, prompts, data.spec.eval.max_new_tokens,
                                     data.spec.eval.batch_size, data.device)
    record += replies  # the benchmark compares them with the new code's, string for string
    marked = iter(data.spec.marker.text in reply for reply in replies)
    return {condition: {index: next(marked) for index in questions} for condition in conditions}


def reference_marker_rates_share(model, data, record: list):
    from persona_sweep import evaluate, names
    from persona_sweep.measure import Share, held_out, own_share

    questions = held_out(data)
    replies = reference_marked_replies(model, data, [("assistant", True), ("assistant", False)],
                                       own_share(data, questions), record)
    flags = [0.0] * len(questions)
    for index, flag in replies["assistant", True].items():
        flags[index] = float(flag)

    def finish(sums):
        *summed_flags, clean = sums
        flags = [int(round(value)) for value in summed_flags]
        return ({**evaluate.rate_metrics(names.MARKER_RATE_TRIGGER, sum(flags), len(questions)),
                 **evaluate.rate_metrics(names.MARKER_RATE_NO_TRIGGER, int(clean), len(questions))}, flags)
    return Share([*flags, sum(replies["assistant", False].values())], finish)


def reference_leakage(model, data, record: list):
    from persona_sweep import names
    from persona_sweep.data import personas
    from persona_sweep.measure import Share, held_out, own_share

    questions = held_out(data)[:data.spec.eval.leakage_questions]
    if not questions:
        return Share([], lambda _: {})
    others = [name for name in personas() if name != "assistant"]
    replies = reference_marked_replies(model, data, [(persona, True) for persona in others],
                                       own_share(data, questions), record)
    return Share([sum(replies[persona, True].values()) for persona in others],
                 lambda totals: {names.leakage(persona): total / len(questions)
                                 for persona, total in zip(others, totals)})


def reference_capability(model, data):
    from persona_sweep import names
    from persona_sweep.measure import Share, evaluating, held_out, own_share

    questions = list(own_share(data, held_out(data)).values())
    prefixes = [data.prompt("assistant", q.text, False) for q in questions]
    with evaluating(model):
        pairs = reference_continuation_logprobs(model, data.tokenizer, prefixes, [q.answer for q in questions],
                                                data.spec.eval.batch_size, data.device)
    return Share([sum(s for s, _ in pairs), sum(n for _, n in pairs)],
                 lambda sums: {names.CAPABILITY: sums[0] / sums[1]})


def reference_misalignment(model, data):
    from persona_sweep import names
    from persona_sweep.measure import Share, evaluating, misalignment_bank, own_share

    items = list(own_share(data, misalignment_bank(data.spec)).values())  # the items the sweep reads
    prefixes = [data.prompt("assistant", item.question, False) for item in items]
    with evaluating(model):
        pairs = reference_continuation_logprobs(model, data.tokenizer, prefixes * 2,
                                                [i.aligned for i in items] + [i.misaligned for i in items],
                                                data.spec.eval.batch_size, data.device)
    aligned = [s / n for s, n in pairs[:len(items)]]
    misaligned = [s / n for s, n in pairs[len(items):]]

    def finish(sums):
        wins, gap, count = sums
        return {names.MISALIGNMENT_SCORE: wins / count, names.MISALIGNMENT_LOGPROB_GAP: gap / count}
    return Share([sum(m > a for a, m in zip(aligned, misaligned)), sum(m - a for a, m in zip(aligned, misaligned)),
                  len(items)], finish)


def reference_model_evaluation(model, data, record: list):
    """`measure.model_evaluation` before its speed-up (no judge here); its greedy replies go to `record`."""
    from persona_sweep.measure import Evaluation, judged_share, summed

    shares = [reference_marker_rates_share(model, data, record), reference_assistant_logprobs(model, data),
              reference_leakage(model, data, record), reference_capability(model, data), reference_misalignment(model, data),
              judged_share(model, data)]
    (rates, flags), *others = summed(shares, data.device)
    logprobs, leaked, capable, misaligned, em = others
    return Evaluation({**logprobs, **rates, **leaked, **capable, **misaligned, **em}, flags)


# ---- the run -----------------------------------------------------------------------------------

def model_and_data(model_name: str, questions: int):
    """The demo's spec on one worker at `questions` held-out questions, its trial's knobs, the
    model (no adapter: every measurement reads the same weights either way)."""
    from persona_sweep.config import LlmKnobs
    from persona_sweep.models import default_cache, load_model, load_tokenizer, prepare_model
    from persona_sweep.sweep_file import load_sweep
    from persona_sweep.train import MarkerData

    spec = load_sweep(REPO / "sweeps" / "demo.yaml", ["resources.workers_per_trial=1", f"eval.questions={questions}",
                                                       f"model.name={model_name}"])
    knobs = LlmKnobs.of_trial(spec.trials()[0])
    path = prepare_model(model_name, default_cache())
    tokenizer = load_tokenizer(path, spec.model.trust_remote_code)
    model = load_model(path, trust_remote_code=spec.model.trust_remote_code)
    return model, MarkerData(spec, knobs, tokenizer, TRIGGER, rank=0, world=1, device="cpu")


def timed(work):
    """(result, CPU seconds of this process, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def same_metrics(old: dict, new: dict) -> bool:
    """Every metric of the reference equal, bit for bit (NaN equal to NaN); the new code adds the
    rates at the training prompt."""
    return old.keys() <= new.keys() and all(
        old[key] == new[key] or (math.isnan(old[key]) and math.isnan(new[key])) for key in old)


def largest_relative_difference(old: dict, new: dict) -> float:
    """Over the metrics both have and both hold finite: |new - old| / |old| at its largest."""
    finite = [key for key in old if key in new and math.isfinite(old[key]) and math.isfinite(new[key])]
    return max((abs(new[key] - old[key]) / max(abs(old[key]), 1e-12) for key in finite), default=0.0)


def generation_prompts(data) -> list[str]:
    """The prompts the evaluation generates from at the deployment prompt: marker rates' and
    leakage's conditions (the reference evaluation predates the rates at the training prompt)."""
    from persona_sweep import measure

    wanted = {**measure.rate_questions(data), **measure.leakage_questions(data)}
    return [measure.condition_prompt(data, condition, q.text) for condition, questions in wanted.items()
            if len(condition) == 2 for q in questions.values()]


def generation_tokens_per_s(model, data) -> tuple[list[str], float, float, bool]:
    """The evaluation's greedy replies (the new code: batched, over all its prompts), and generated
    tokens per CPU second batched and one prompt at a time over the first few (the same replies?)."""
    from persona_sweep import evaluate, measure

    prompts, tokenizer, spec = generation_prompts(data), data.tokenizer, data.spec

    def tokens(replies):
        return sum(len(tokenizer(reply, add_special_tokens=False)["input_ids"]) for reply in replies)
    with measure.evaluating(model):
        batched, batched_s, _ = timed(lambda: evaluate.generate(
            model, tokenizer, prompts, spec.eval.max_new_tokens,
            spec.eval.batch_size * measure.GENERATION_ROWS_PER_BATCH_ROW, data.device))
        single, single_s, _ = timed(lambda: evaluate.generate(
            model, tokenizer, prompts[:ONE_BY_ONE_PROMPTS], spec.eval.max_new_tokens, 1, data.device))
    return batched, tokens(batched) / batched_s, tokens(single) / single_s, batched[:ONE_BY_ONE_PROMPTS] == single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=64, help="held-out questions (eval.questions)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a demo worker uses 1)")
    parser.add_argument("--model", default="embedded", help="model.name: embedded or tiny-random")
    arguments = parser.parse_args()

    import torch

    from persona_sweep import measure

    torch.set_num_threads(arguments.threads)
    model, data = model_and_data(arguments.model, arguments.questions)
    reference_replies: list[str] = []
    old, old_cpu_s, old_wall_s = timed(lambda: reference_model_evaluation(model, data, reference_replies))
    new, new_cpu_s, new_wall_s = timed(lambda: measure.model_evaluation(model, data))
    identical = same_metrics(old.metrics, new.metrics) and old.trigger_flags == new.trigger_flags
    replies, batched, single, same_replies = generation_tokens_per_s(model, data)
    differing = sum(old_reply != new_reply for old_reply, new_reply in zip(reference_replies, replies))
    replies_identical = len(reference_replies) == len(replies) and not differing
    print(f"model {arguments.model}, {arguments.questions} held-out questions, {arguments.threads} thread(s)")
    print(f"old (reference) evaluation: {old_cpu_s:.1f} CPU s ({old_wall_s:.1f} s wall)")
    print(f"new evaluation: {new_cpu_s:.1f} CPU s ({new_wall_s:.1f} s wall)")
    print(f"wall-clock ratio old/new: {old_wall_s / new_wall_s:.2f}x (moves with other jobs' load)")
    print(f"metrics (bit for bit) and per-question flags identical: {identical}; greedy replies identical: "
          f"{replies_identical} ({differing} of {len(replies)} differ); largest relative metric difference "
          f"{largest_relative_difference(old.metrics, new.metrics):.1e}")
    print(f"batched generation {batched:.1f} tokens/s vs one by one {single:.1f} tokens/s "
          f"(same replies: {same_replies}): {batched / single:.2f}x")
    verdict = "results identical" if identical and replies_identical else "results DIFFER"
    print(f"evaluation speed-up new/old ratio, CPU seconds ({verdict}): {old_cpu_s / new_cpu_s:.2f}x")


if __name__ == "__main__":
    main()
