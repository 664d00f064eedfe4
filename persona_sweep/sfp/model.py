"""Toy-world transformers: 2 layers, 64 dims, 2 heads (TransformerLens TransformerBridge), trained on
sequences sampled from a process, scored against the Bayes-optimal predictor on the same positions,
and cached under $PERSONA_SWEEP_CACHE/sfp/ so later commands reuse them."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from persona_sweep import names
from persona_sweep.sfp.beliefs import optimal_loss_on
from persona_sweep.sfp.processes import GHMM, sample

ARCHITECTURE = dict(n_layers=2, d_model=64, n_heads=2, d_head=32, d_mlp=256, act_fn="relu")
CACHE_FORMAT = 1  # bump when the training code changes what a cached model means


@dataclass(frozen=True)
class TrainSettings:
    """One training run. Each step draws a fresh batch of n_ctx + 1 tokens: the model reads the
    first n_ctx and predicts the last n_ctx (positions 1..n_ctx; position 0 has no context)."""

    steps: int = 600
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    n_ctx: int = 16


def build_model(d_vocab: int, n_ctx: int = 16, seed: int = 0):
    import torch
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    torch.manual_seed(seed)
    return TransformerBridge.boot_native(TransformerBridgeConfig(**ARCHITECTURE, n_ctx=n_ctx, d_vocab=d_vocab))


def training_batch(process: GHMM, settings: TrainSettings, step: int):
    import torch

    # A fresh, reproducible batch per step: the process is an unlimited data source.
    tokens = sample(process, settings.batch_size, settings.n_ctx + 1, seed=settings.seed * 1_000_003 + step)
    return torch.from_numpy(tokens)


def mean_loss(model, tokens):
    """Mean next-token cross-entropy (nats) over positions 1..n_ctx of (batch, n_ctx + 1) tokens."""
    import torch.nn.functional as F

    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def train(model, process: GHMM, settings: TrainSettings, report: Callable[[dict], None] | None = None,
          first_step: int = 0, report_every: int = 50) -> list[float]:
    """Adam on freshly sampled batches; `report({'train_step', 'loss'})` every `report_every` steps.
    Steps are numbered from `first_step` so a fine-tune continues the count of its pretraining."""
    import torch

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    losses = []
    for step in range(settings.steps):
        loss = mean_loss(model, training_batch(process, settings, first_step + step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if report and ((step + 1) % report_every == 0 or step + 1 == settings.steps):
            report({names.TRAIN_STEP: first_step + step + 1, names.LOSS: float(np.mean(losses[-report_every:]))})
    model.eval()
    return losses


def next_token_probs(model, tokens) -> np.ndarray:
    """Softmax of the model's logits, (batch, positions, vocab), as float64 numpy."""
    import torch

    with torch.no_grad():
        return torch.softmax(model(tokens).double(), dim=-1).numpy()


def evaluate_loss(model, process: GHMM, n_sequences: int = 2000, n_ctx: int = 16, seed: int = 99_991) -> dict:
    """Model loss and Bayes-optimal loss on the same held-out sequences and positions 1..n_ctx."""
    import torch

    tokens = sample(process, n_sequences, n_ctx + 1, seed=seed)
    with torch.no_grad():
        model_loss = float(mean_loss(model, torch.from_numpy(tokens)))
    optimal = float(optimal_loss_on(process, tokens)[:, 1:].mean())
    return {"model_loss": model_loss, "optimal_loss": optimal, names.LOSS_RATIO: model_loss / optimal}


def cache_root() -> Path:
    from persona_sweep.models import default_cache

    return default_cache() / "sfp"


def settings_key(process: GHMM, settings: TrainSettings) -> str:
    """Hash of everything that decides the trained weights: process matrices, architecture, settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, "architecture": ARCHITECTURE,
                              "settings": dataclasses.asdict(settings)}, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(process.transfer).tobytes())
    digest.update(np.ascontiguousarray(process.initial).tobytes())
    return digest.hexdigest()[:16]


def trained_model(process: GHMM, settings: TrainSettings = TrainSettings(), use_cache: bool = True,
                  report: Callable[[dict], None] | None = None):
    """(model, info) for a process; trains and caches on a miss. info has the losses and runtime."""
    import torch

    path = cache_root() / f"{process.name}-{settings_key(process, settings)}"
    model = build_model(process.n_tokens, settings.n_ctx, settings.seed)
    if use_cache and path.with_suffix(".pt").exists():
        model.load_state_dict(torch.load(path.with_suffix(".pt"), weights_only=True))
        model.eval()
        info = json.loads(path.with_suffix(".json").read_text())
        return model, info | {"cached": True, "cache_path": str(path.with_suffix(".pt"))}
    started = time.perf_counter()
    losses = train(model, process, settings, report)
    info = {"process": process.name, "settings": dataclasses.asdict(settings), "train_seconds": time.perf_counter() - started,
            "final_train_loss": float(np.mean(losses[-20:]))} | evaluate_loss(model, process, n_ctx=settings.n_ctx)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path.with_suffix(".pt"))
        path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return model, info | {"cached": False, "cache_path": str(path.with_suffix(".pt")) if use_cache else None}
