"""The Assistant axis (seed 002): the direction from the mean of many roles to the default
Assistant, per layer, and where a conversation moves the model along it.

Building: the model answers a few questions (the first `AXIS_QUESTIONS` extraction questions
of the `assistant` trait) under the Assistant's system prompts (its deployment prompt and its
long description) and under every system prompt of every role in the role bank
(`data/roles.yaml`: 44 roles near and far, three prompts each); per layer, the axis is the
Assistant's mean response-token activation minus the mean over roles (each role weighs the
same). The file keeps the model id, the role bank's sha256 and the projections of the
Assistant's own replies on the unit axis, from which capping takes its floor.

Projecting: a conversation's user turns, the model writing its own reply to each in turn
(batched across conversations); each reply's mean activation at the axis layer projected on
the unit axis. Higher is nearer the Assistant; a drift lowers it.

Capping (`capped`): during generation, on chosen layers, the projection on the unit axis is
raised to a floor (by default the 25th percentile of the Assistant's own projections on that
layer), moving along the axis only (`steering.capped_at`).

Layer L is the output of decoder layer L (0-based), as for persona vectors.
"""
from __future__ import annotations

import hashlib
import pickle
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from persona_sweep import evaluate
from persona_sweep.data import DATA_DIR, personas
from persona_sweep.data.traits import load_trait
from persona_sweep.errors import SweepError
from persona_sweep.measure import evaluating
from persona_sweep.methods.sft import prompt_text
from persona_sweep.steering import capped_at, decoder_layers
from persona_sweep.vectors import activations

ROLES_FILE = DATA_DIR / "roles.yaml"
AXIS_QUESTIONS = 3
REPLY_TOKENS = 24
FLOOR_PERCENTILE = 25.0


@dataclass
class AssistantAxis:
    model: str
    roles_digest: str
    vectors: object  # (layers, width): the Assistant's mean minus the roles' mean
    assistant: object  # (replies, layers): the Assistant's own replies on the unit axis
    layer: int  # the layer `project` reads unless told

    @property
    def layers(self) -> int:
        return self.vectors.shape[0]

    def unit(self, layer: int):
        vector = self.vectors[layer]
        return vector / vector.norm().clamp_min(1e-12)

    def floor(self, layer: int, percentile: float = FLOOR_PERCENTILE) -> float:
        import numpy as np

        return float(np.percentile(self.assistant[:, layer].numpy(), percentile))

    def save(self, path: Path) -> None:
        import torch

        torch.save({"model": self.model, "roles_digest": self.roles_digest, "layers": self.layers,
                    "vectors": self.vectors, "assistant": self.assistant, "layer": self.layer}, path)

    @classmethod
    def load(cls, path: Path) -> AssistantAxis:
        import torch

        try:
            saved = torch.load(path, weights_only=True)
            return cls(saved["model"], saved["roles_digest"], saved["vectors"], saved["assistant"], saved["layer"])
        except (OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as error:
            raise SweepError(f"axis file {path}: not one `axis build` wrote ({error!r})") from None

    def check_fits(self, model) -> None:
        found = len(decoder_layers(model))
        if found != self.layers or model.config.hidden_size != self.vectors.shape[1]:
            raise SweepError(f"the axis was built on {self.model} ({self.layers} layers, width {self.vectors.shape[1]}); "
                             f"this model has {found} layers, width {model.config.hidden_size}")


def role_bank() -> dict[str, dict]:
    return yaml.safe_load(ROLES_FILE.read_text())


def roles_digest() -> str:
    return hashlib.sha256(ROLES_FILE.read_bytes()).hexdigest()


def assistant_systems() -> list[str]:
    assistant = personas()["assistant"]
    return [assistant.short_description, assistant.description]


def build(model, tokenizer, model_id: str, layer: int | None = None, batch_size: int = 16, device="cpu",
          questions: int = AXIS_QUESTIONS, reply_tokens: int = REPLY_TOKENS) -> AssistantAxis:
    import torch

    questions = load_trait("assistant").extraction_questions[:questions]

    def replies_activations(systems: list[str]):
        prompts = [prompt_text(tokenizer, system, question, False) for system in systems for question in questions]
        with evaluating(model):
            replies = evaluate.generate(model, tokenizer, prompts, reply_tokens, batch_size, device)
            return activations(model, tokenizer, prompts, replies, batch_size, device)["response"]

    assistant = replies_activations(assistant_systems())
    roles = torch.stack([replies_activations(role["system_prompts"]).mean(0) for role in role_bank().values()])
    vectors = assistant.mean(0) - roles.mean(0)
    units = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    projections = torch.einsum("nlw,lw->nl", assistant, units)
    layers = vectors.shape[0]
    return AssistantAxis(model_id, roles_digest(), vectors, projections, layers // 2 if layer is None else layer)


def cached(load_base, tokenizer, model_name: str, cache: Path, device) -> AssistantAxis:
    """`model_name`'s axis, built from the base weights (`load_base()`, called only when it is
    missing) once per model and role bank and kept in the model cache (`models/axis-<key>.pt`)."""
    from persona_sweep.models import cache_lock

    key = hashlib.sha256(f"{model_name}|{roles_digest()}|{AXIS_QUESTIONS}|{REPLY_TOKENS}".encode()).hexdigest()[:16]
    with cache_lock(f"axis-{key}.pt", cache) as path:
        if not path.exists():
            partial = path.with_suffix(".partial")
            build(load_base(), tokenizer, model_name, device=device).save(partial)
            partial.rename(path)
        return AssistantAxis.load(path)


# ---- conversations ---------------------------------------------------------------------------

def conversation_prompt(tokenizer, system: str, users: list[str], replies: list[str]) -> str:
    """The chat prompt for the model's reply to the last of `users`, after its own earlier `replies`."""
    turns = [message for user, reply in zip(users, replies)
             for message in ({"role": "user", "content": user}, {"role": "assistant", "content": reply})]
    return prompt_text(tokenizer, system, users[len(replies)], False, turns)


def converse(model, tokenizer, system: str, conversations: list[list[str]], turns: int, batch_size: int, device,
             reply_tokens: int = REPLY_TOKENS, on_turn=None) -> list[list[str]]:
    """The model's own reply to each of the first `turns` user turns of every conversation, turn
    by turn, batched across conversations. `on_turn(turn, prompts, replies)` sees each turn's
    prompts and replies (to measure them while they are at hand)."""
    replies: list[list[str]] = [[] for _ in conversations]
    with evaluating(model):
        for turn in range(turns):
            prompts = [conversation_prompt(tokenizer, system, users, done) for users, done in zip(conversations, replies)]
            answers = evaluate.generate(model, tokenizer, prompts, reply_tokens, batch_size, device)
            for done, answer in zip(replies, answers):
                done.append(answer)
            if on_turn is not None:
                on_turn(turn, prompts, answers)
    return replies


def project(model, tokenizer, axis: AssistantAxis, conversations: list[list[str]], turns: int, layer: int | None = None,
            batch_size: int = 8, device="cpu", reply_tokens: int = REPLY_TOKENS, system: str | None = None):
    """(replies, projections): per conversation, the model's reply to each of its first `turns`
    user turns and that reply's mean activation at `layer` on the unit axis."""
    layer = axis.layer if layer is None else layer
    unit = axis.unit(layer)
    projections: list[list[float]] = [[] for _ in conversations]

    def measure(_turn, prompts, answers):
        states = activations(model, tokenizer, prompts, answers, batch_size, device)["response"][:, layer]
        for found, value in zip(projections, (states @ unit.to(states.device)).tolist()):
            found.append(value)

    system = personas()["assistant"].short_description if system is None else system
    replies = converse(model, tokenizer, system, conversations, turns, batch_size, device, reply_tokens, measure)
    return replies, projections


def drift_curve(projections: list[list[float]]) -> list[dict]:
    """Per turn: the mean projection over conversations with a 95% bootstrap interval."""
    import numpy as np

    curve = []
    for turn, values in enumerate(np.asarray(projections, dtype=float).T, 1):
        low, high = evaluate.percentile_interval(evaluate.bootstrap_means([values])[:, 0])
        curve.append({"turn": turn, "mean": float(values.mean()), "lo": low, "hi": high})
    return curve


@contextmanager
def capped(model, axis: AssistantAxis, layers: list[int], percentile: float = FLOOR_PERCENTILE):
    """Seed 002's activation capping on `layers` while the block runs: each layer's projection
    on the unit axis held at or above the Assistant's `percentile` on that layer."""
    blocks = decoder_layers(model)
    with ExitStack() as stack:
        for layer in layers:
            unit = axis.unit(layer).to(next(model.parameters()).device)
            stack.enter_context(capped_at(blocks[layer], unit, axis.floor(layer, percentile)))
        yield
