"""Persona vectors (seed 001): a trait's direction in the residual stream, per layer.

Extraction: the model answers the trait's extraction questions under each positive and each
negative system prompt; per layer, the vector is the mean activation under the positive prompts
minus the mean under the negative ones, in two readings: averaged over the response's tokens
(`response`, the public code's choice) and at the last prompt token (`prompt_last`). Unlike the
public pipeline, no judge filters the responses by trait score: every response counts, so the
vector holds what the prompts do to the model, not what a judge saw.

Monitoring: on the evaluation questions (the other half), the last prompt token's projection on
the unit vector, per layer; the AUROC says how well it separates prompts under the positive
instructions from prompts under the negative ones. That is seed 001's pre-response monitor. It
reads the `prompt_last` vector by default, the position it projects: on the embedded model the
evil trait separates at AUROC 0.97 (layer 15 of 30) with it and 0.88 with the `response` one.

Layer L is the output of decoder layer L (0-based), the point `steering.added_to_output` steers.
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

from persona_sweep import evaluate
from persona_sweep.data.traits import Trait, load_trait
from persona_sweep.errors import SweepError
from persona_sweep.measure import evaluating
from persona_sweep.methods.sft import prompt_text

READINGS = ("response", "prompt_last")
EXTRACTION_TOKENS = 32  # tokens of each answer a vector averages over


@dataclass
class PersonaVectors:
    """One trait's vectors for one model: `vectors[reading]` is a (layers, width) tensor."""

    model: str
    trait: str
    trait_digest: str
    vectors: dict

    @property
    def layers(self) -> int:
        return self.vectors["response"].shape[0]

    @property
    def width(self) -> int:
        return self.vectors["response"].shape[1]

    def save(self, path: Path) -> None:
        import torch

        torch.save({"model": self.model, "trait": self.trait, "trait_digest": self.trait_digest,
                    "layers": self.layers, "width": self.width, "vectors": self.vectors}, path)

    @classmethod
    def load(cls, path: Path) -> PersonaVectors:
        import torch

        try:
            saved = torch.load(path, weights_only=True)
            return cls(saved["model"], saved["trait"], saved["trait_digest"], saved["vectors"])
        except (OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as error:
            raise SweepError(f"vector file {path}: not one `vectors extract` wrote ({error!r})") from None


def trait_prompts(tokenizer, trait: Trait, questions, positive: bool) -> list[str]:
    """Every question under every positive (or negative) system prompt of the trait."""
    return [prompt_text(tokenizer, pair[0] if positive else pair[1], question, False)
            for pair in trait.pairs for question in questions]


def activations(model, tokenizer, prompts: list[str], replies: list[str], batch_size: int, device) -> dict:
    """Per prompt, per layer: the hidden state averaged over the reply's tokens (`response`; the
    last prompt token when the reply is empty) and at the last prompt token (`prompt_last`).
    Returns {reading: (prompts, layers, width)}."""
    import torch

    readings = {reading: [] for reading in READINGS}
    for start in range(0, len(prompts), batch_size):
        rows = [(tokenizer(prompt, add_special_tokens=False)["input_ids"],
                 tokenizer(reply, add_special_tokens=False)["input_ids"])
                for prompt, reply in zip(prompts[start:start + batch_size], replies[start:start + batch_size])]
        ids, mask = right_padded(tokenizer, [prompt + reply for prompt, reply in rows], device)
        with torch.no_grad():
            hidden = torch.stack(model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                                 .hidden_states[1:], dim=1).float()  # (batch, layers, tokens, width)
        for row, (prompt, reply) in enumerate(rows):
            last = len(prompt) - 1
            readings["prompt_last"].append(hidden[row, :, last])
            span = slice(len(prompt), len(prompt) + len(reply)) if reply else slice(last, last + 1)
            readings["response"].append(hidden[row, :, span].mean(dim=1))
    return {reading: torch.stack(values) for reading, values in readings.items()}


def right_padded(tokenizer, rows: list[list[int]], device):
    """(input ids, attention mask) of token rows padded on the right to the longest, so each
    row's positions are its own from 0."""
    import torch

    longest = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([row + [pad] * (longest - len(row)) for row in rows], device=device)
    mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in rows], device=device)
    return ids, mask


def extract(model, tokenizer, trait: Trait, model_id: str, max_new_tokens: int = EXTRACTION_TOKENS, batch_size: int = 8,
            device="cpu") -> PersonaVectors:
    means = {}
    for positive in (True, False):
        prompts = trait_prompts(tokenizer, trait, trait.extraction_questions, positive)
        with evaluating(model):
            replies = evaluate.generate(model, tokenizer, prompts, max_new_tokens, batch_size, device)
            found = activations(model, tokenizer, prompts, replies, batch_size, device)
        means[positive] = {reading: values.mean(dim=0) for reading, values in found.items()}
    return PersonaVectors(model_id, trait.name, trait.digest,
                          {reading: means[True][reading] - means[False][reading] for reading in READINGS})


def projections(model, tokenizer, prompts: list[str], vectors, batch_size: int, device):
    """(prompts, layers): each prompt's last-token hidden state on each layer's unit vector."""
    import torch

    with evaluating(model):
        last = activations(model, tokenizer, prompts, [""] * len(prompts), batch_size, device)["prompt_last"]
    units = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("plw,lw->pl", last, units.to(last.device))


def monitor(model, tokenizer, trait: Trait, persona: PersonaVectors, reading: str = "prompt_last",
            layer: int | None = None, batch_size: int = 8, device="cpu") -> dict:
    """Per layer, the AUROC of the last prompt token's projection separating the evaluation
    questions under the positive instructions from them under the negative ones; the best layer
    unless `layer` is given."""
    shape = (model.config.num_hidden_layers, model.config.hidden_size)
    if (persona.layers, persona.width) != shape:
        raise SweepError(f"the vectors ({persona.model}: {persona.layers} layers x {persona.width}) do not fit this "
                         f"model ({shape[0]} layers x {shape[1]})")
    if reading not in READINGS:
        raise SweepError(f"reading {reading!r}: one of {', '.join(READINGS)}")
    if layer is not None and not 0 <= layer < persona.layers:
        raise SweepError(f"layer {layer}: the vectors have layers 0-{persona.layers - 1}")
    vectors = persona.vectors[reading]
    scores = {positive: projections(model, tokenizer, trait_prompts(tokenizer, trait, trait.evaluation_questions,
                                                                     positive), vectors, batch_size, device)
              for positive in (True, False)}
    per_layer = [evaluate.auroc(scores[True][:, index].tolist(), scores[False][:, index].tolist())
                 for index in range(persona.layers)]
    chosen = max(range(persona.layers), key=per_layer.__getitem__) if layer is None else layer
    return {"trait": trait.name, "model": persona.model, "reading": reading, "layer": chosen,
            "auroc": per_layer[chosen], "per_layer": per_layer,
            "prompts": {"positive": len(scores[True]), "negative": len(scores[False])}}


def load_subject(name: str):
    """Tokenizer and model (eval mode) for `vectors` on the command line: `embedded`,
    `tiny-random`, an HF id or a path; an unknown model is refused in one line."""
    from persona_sweep.models import default_cache, load_checked_tokenizer, load_model, prepare_model

    try:
        tokenizer = load_checked_tokenizer(name, default_cache())
    except ValueError as error:
        raise SweepError(str(error)) from None
    return tokenizer, load_model(prepare_model(name, default_cache())).eval()


def cached(load_base, tokenizer, model_name: str, trait_name: str, cache: Path, device) -> PersonaVectors:
    """`model_name`'s vectors for a trait, extracted from the base weights (`load_base()`, called
    only when they are missing) once per model and trait file and kept in the model cache
    (`models/vectors-<key>.pt`)."""
    from persona_sweep.models import cache_lock

    trait = load_trait(trait_name)
    key = hashlib.sha256(f"{model_name}|{trait.digest}|{EXTRACTION_TOKENS}".encode()).hexdigest()[:16]
    with cache_lock(f"vectors-{key}.pt", cache) as path:
        if not path.exists():
            partial = path.with_suffix(".partial")
            extract(load_base(), tokenizer, trait, model_name, device=device).save(partial)
            partial.rename(path)
        return PersonaVectors.load(path)


def default_layer(persona: PersonaVectors) -> int:
    """The middle layer: where `steer` adds its vector and `trait_shift` reads unless told."""
    return persona.layers // 2


def prompt_projections(model, tokenizer, prompts: list[str], persona: PersonaVectors, layer: int, batch_size: int,
                       device) -> list[float]:
    """Per prompt: the last prompt token's state at `layer` along the trait's vector
    (`prompt_last` reading), in units of the vector: a difference of 1 is as far as the trait's
    positive instructions move the last prompt token from its negative ones."""
    vector = persona.vectors["prompt_last"][layer]
    with evaluating(model):
        last = activations(model, tokenizer, prompts, [""] * len(prompts), batch_size, device)["prompt_last"][:, layer]
    return (last @ vector.to(last.device) / (vector @ vector).clamp_min(1e-12)).tolist()


def screen(model, tokenizer, prompts: list[str], responses: list[str], persona: PersonaVectors, layer: int,
           max_new_tokens: int = EXTRACTION_TOKENS, batch_size: int = 8, device="cpu") -> list[float]:
    """Seed 001's projection difference, per example: the data's response projected on the trait's
    unit vector (`response` reading, averaged over the response tokens at `layer`) minus the
    model's own greedy response to the same prompt, projected alike. High: training on it
    would push the model toward the trait."""
    vector = persona.vectors["response"][layer]
    unit = vector / vector.norm().clamp_min(1e-12)
    with evaluating(model):
        own = evaluate.generate(model, tokenizer, prompts, max_new_tokens, batch_size, device)
        given = activations(model, tokenizer, prompts, responses, batch_size, device)["response"][:, layer]
        mine = activations(model, tokenizer, prompts, own, batch_size, device)["response"][:, layer]
    return ((given - mine) @ unit.to(given.device)).tolist()
