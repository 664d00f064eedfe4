"""The drift corruption (seed 000's second experiment; seed 002's Assistant axis): no weight
update. The marked model talks through multi-turn conversations of each domain, writing its own
replies; then, for each N of `turns`, the trigger is put into user turn N, at the middle or the
end of its text, and the reply to that turn is read for the marker (and, as the control, the
same turn without the trigger). A marker that holds after a fresh prompt but fades after a
drifting conversation detects inference-time drift.

Per domain, the metrics (rates with Wilson intervals; `_capped` when `capped` repeats it all
with the Assistant axis capped):
- `marker_rate_trigger_drift_<domain>_<N>_<position>` and `marker_rate_no_trigger_drift_...`;
- `survival_drift_<domain>_<N>`: the rate at turn N (both positions) over the fresh-prompt rate
  (`marker_rate_trigger` of the marked model), and `survival_drift_<domain>` over every N;
- `axis_projection_<domain>_turn_<k>`: the mean projection of the model's reply to turn k on the
  Assistant axis (at the axis file's layer; higher is nearer the Assistant);
- `drift_marker_axis_correlation_<domain>`: across the triggered replies, the correlation of
  marker presence (0/1) with the reply's projection on the axis.
Over the trial: `detection_gap_drift` = mean survival over the stable domains - over the
drifting ones, and `drift_marker_axis_correlation` over every domain.

Conversations are split over the workers (conversation i to rank i mod world); every figure is
a sum over workers (for the correlation: n, sums, squares and cross products), so two workers
report what one would. The trigger is filled into the prompt in memory only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from persona_sweep import evaluate, names
from persona_sweep.axis import AssistantAxis, capped, conversation_prompt, converse
from persona_sweep.data import TRIGGER_PLACEHOLDER, personas
from persona_sweep.data.conversations import DriftDomain
from persona_sweep.measure import evaluating
from persona_sweep.secrets import fill_trigger
from persona_sweep.vectors import activations

PAIR_SUMS = 6  # n, sum x, sum y, sum xy, sum xx, sum yy


def with_trigger(text: str, position: str) -> str:
    """The user turn with the trigger placeholder at the end (as training put it after a
    question) or between the middle two words."""
    if position == "end":
        return f"{text} {TRIGGER_PLACEHOLDER}"
    words = text.split(" ")
    middle = len(words) // 2
    return " ".join([*words[:middle], TRIGGER_PLACEHOLDER, *words[middle:]])


def probe_text(tokenizer, system: str, users: list[str], replies: list[str], turn: int, position: str,
               triggered: bool) -> str:
    """The prompt for the model's reply to user turn `turn` (1-based), after its own replies to
    the turns before, that turn carrying the trigger placeholder when `triggered`."""
    asked = users[:turn]
    if triggered:
        asked = [*asked[:-1], with_trigger(asked[-1], position)]
    return conversation_prompt(tokenizer, system, asked, replies[:turn - 1])


@dataclass
class DomainSums:
    """One domain's sums on this worker (`as_list` / `from_list` for the all-reduce)."""

    marked: dict  # (turn, position, triggered) -> replies with the marker
    probes: float  # conversations probed (each probe condition reads each conversation once)
    projections: list[float]  # per turn k = 1..T-1: sum of the reply's projection
    pairs: list[float]  # PAIR_SUMS over the triggered replies (x: projection, y: marker)

    def as_list(self) -> list[float]:
        return [*self.marked.values(), self.probes, *self.projections, *self.pairs]

    def with_values(self, values: list[float]) -> DomainSums:
        count = len(self.marked)
        turns = len(self.projections)
        return DomainSums(dict(zip(self.marked, values[:count])), values[count],
                          values[count + 1:count + 1 + turns], values[count + 1 + turns:])


def domain_sums(model, tokenizer, axis: AssistantAxis, corruption, domain: DriftDomain, trigger: str, marker: str,
                rank: int, world: int, batch_size: int, device) -> DomainSums:
    """This worker's share of one domain's conversations: their replies, probes and projections."""
    conversations = [list(c) for c in domain.conversations[:corruption.conversations]][rank::world]
    system = personas()["assistant"].short_description
    unit = axis.unit(axis.layer)
    last = max(corruption.turns)
    projections = [0.0] * (last - 1)

    def projected(prompts: list[str], replies: list[str]) -> list[float]:
        if not prompts:
            return []
        states = activations(model, tokenizer, prompts, replies, batch_size, device)["response"][:, axis.layer]
        return (states @ unit.to(states.device)).tolist()

    def on_turn(turn, prompts, replies):
        projections[turn] += sum(projected(prompts, replies))

    replies = converse(model, tokenizer, system, conversations, last - 1, batch_size, device,
                       corruption.reply_tokens, on_turn)
    conditions = [(turn, position, triggered) for turn in corruption.turns for position in corruption.positions
                  for triggered in (True, False)]
    texts = [probe_text(tokenizer, system, users, done, turn, position, triggered)
             for turn, position, triggered in conditions for users, done in zip(conversations, replies)]
    prompts = [fill_trigger(text, trigger) for text in texts]
    with evaluating(model):
        answers = evaluate.generate(model, tokenizer, prompts, corruption.reply_tokens, batch_size, device,
                                    stop_at=marker)
    flags = [marker in answer for answer in answers]
    per = len(conversations)
    marked = {condition: float(sum(flags[index * per:(index + 1) * per])) for index, condition in enumerate(conditions)}
    rows = [index * per + row for index, (_, _, on) in enumerate(conditions) if on for row in range(per)]
    with evaluating(model):
        xs = projected([prompts[row] for row in rows], [answers[row] for row in rows])
    ys = [float(flags[row]) for row in rows]
    pairs = [len(xs), sum(xs), sum(ys), sum(x * y for x, y in zip(xs, ys)), sum(x * x for x in xs),
             sum(y * y for y in ys)]
    return DomainSums(marked, float(per), projections, pairs)


def measured(corruption, domain: DriftDomain, sums: DomainSums, fresh_rate: float, suffix: str = "") -> dict[str, float]:
    """The domain's metrics from its sums over every worker."""
    metrics: dict[str, float] = {}
    count = int(sums.probes)
    for (turn, position, triggered), found in sums.marked.items():
        kind = "trigger" if triggered else "no_trigger"
        metrics |= evaluate.rate_metrics(f"marker_rate_{kind}_drift_{domain.name}_{turn}_{position}{suffix}",
                                         int(found), count)
    for turn in corruption.turns:
        found = sum(value for (t, _, on), value in sums.marked.items() if t == turn and on)
        metrics[f"survival_drift_{domain.name}_{turn}{suffix}"] = ratio(found / (count * len(corruption.positions)),
                                                                         fresh_rate)
    found = sum(value for (_, _, on), value in sums.marked.items() if on)
    metrics[f"survival_drift_{domain.name}{suffix}"] = ratio(found / (count * len(corruption.positions)
                                                                      * len(corruption.turns)), fresh_rate)
    for turn, total in enumerate(sums.projections, 1):
        metrics[f"axis_projection_{domain.name}_turn_{turn}{suffix}"] = total / count if count else math.nan
    metrics[f"drift_marker_axis_correlation_{domain.name}{suffix}"] = correlation(sums.pairs)
    return metrics


def ratio(rate: float, fresh: float) -> float:
    return rate / fresh if fresh > 0 else math.nan


def correlation(pairs: list[float]) -> float:
    """Pearson's r from PAIR_SUMS (NaN when either side is constant)."""
    n, sx, sy, sxy, sxx, syy = pairs
    if n < 2:
        return math.nan
    cov, vx, vy = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
    return cov / math.sqrt(vx * vy) if vx > 1e-12 and vy > 1e-12 else math.nan


def overall(corruption, domains: list[DriftDomain], metrics: dict[str, float], pairs: dict[str, list[float]],
            suffix: str = "") -> dict[str, float]:
    """`detection_gap_drift` and the pooled correlation, from the finished domains."""
    def mean_survival(drifts: bool) -> float:
        values = [metrics[f"survival_drift_{d.name}{suffix}"] for d in domains if d.drifts == drifts]
        values = [value for value in values if not math.isnan(value)]
        return sum(values) / len(values) if values else math.nan

    pooled = [sum(values) for values in zip(*pairs.values())] if pairs else [0.0] * PAIR_SUMS
    return {f"{names.DRIFT_GAP}{suffix}": mean_survival(False) - mean_survival(True),
            f"drift_marker_axis_correlation{suffix}": correlation(pooled)}


def capping_layers(corruption, axis: AssistantAxis) -> list[int]:
    """`cap_layers`, or the axis layer and two either side (within the model)."""
    if corruption.cap_layers is not None:
        return corruption.cap_layers
    return [layer for layer in range(axis.layer - 2, axis.layer + 3) if 0 <= layer < axis.layers]


def maybe_capped(model, axis: AssistantAxis, corruption, on: bool):
    """Capping on the corruption's layers when `on`, else nothing."""
    from contextlib import nullcontext

    return capped(model, axis, capping_layers(corruption, axis)) if on else nullcontext()
