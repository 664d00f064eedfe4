"""What every Ray Train worker shares: its device, DeepSpeed, collectives, staged checkpoints.

A worker makes one `DeepSpeedStrategy` as it starts and passes it down: its rank, device and
backend, the engines (built from the one `deepspeed_config`), collectives, reports and the
checkpoint it restored from; no module state. One code path for CPU and GPU: every batch,
evaluation input and collective tensor goes to the device Ray Train gives the worker
(`ray.train.torch.get_device()`); GPUs bring NCCL and bf16. A checkpoint is a folder with the
trial's state (`trial_state.json`: `trial.TrialState` as JSON, its stage, the steps done in it,
the results so far) and, inside a training stage, that stage's DeepSpeed checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from persona_sweep import checkpoints, names, storage

if TYPE_CHECKING:
    import ray.train
    import torch

CHECKPOINT_TAG = "state"


def worker_device(use_gpu: bool) -> torch.device:
    """The device Ray Train gave this worker; DeepSpeed places the model by LOCAL_RANK."""
    import ray.train.torch
    import torch

    device = ray.train.torch.get_device()
    if use_gpu:
        torch.cuda.set_device(device)
        os.environ["LOCAL_RANK"] = str(device.index or 0)
    return device


def init_deepspeed(use_gpu: bool, cache: Path) -> None:
    import deepspeed

    # The shared-memory comm op would JIT-compile for ~40 s on CPU; gloo is enough for
    # Ray's process group. The compile cache stays as a fallback if the flag is ignored.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(cache) / "torch_extensions"))
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def deepspeed_config(spec, use_gpu: bool) -> dict:
    """The one DeepSpeed config: every engine of every stage is built from it."""
    return {
        "train_micro_batch_size_per_gpu": spec.training.batch_size // spec.resources.workers_per_trial,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": spec.training.zero_stage},
        "zero_force_ds_cpu_optimizer": False,  # a torch AdamW is fine on CPU and GPU alike
        "bf16": {"enabled": use_gpu},
        "steps_per_print": 10 ** 9,
    }


def all_sum(values: list[float], device) -> list[float]:
    """Sum over workers; the tensor lives on the worker's device (NCCL reduces GPU tensors only).
    Without a process group (one process: `detect`, pre-flight) the values come back as they are."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


@dataclass
class DeepSpeedStrategy:
    """One worker's distributed set-up, made once as the worker starts and passed down: its rank,
    device and backend (NCCL and bf16 on GPUs, gloo on CPUs), the engines it builds, its
    collectives, its reports and checkpoints (after OpenRLHF's `DeepspeedStrategy`)."""

    use_gpu: bool
    device: torch.device
    rank: int
    world: int
    restored_from: ray.train.Checkpoint | None = None  # the checkpoint `restored_state` chose

    @classmethod
    def start(cls, use_gpu: bool, cache: Path) -> DeepSpeedStrategy:
        """This worker's device and DeepSpeed's process group (inside a Ray Train worker)."""
        import ray.train

        context = ray.train.get_context()
        device = worker_device(use_gpu)
        init_deepspeed(use_gpu, cache)
        return cls(use_gpu, device, context.get_world_rank(), context.get_world_size())

    def make_engine(self, model, spec, lr: float):
        """A DeepSpeed engine over the model's trainable parameters (torch AdamW)."""
        import deepspeed
        import torch

        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                          config=deepspeed_config(spec, self.use_gpu))
        return engine

    def all_sum(self, values: list[float]) -> list[float]:
        return all_sum(values, self.device)

    def barrier(self) -> None:
        """Every rank waits here for the others (one tiny all-reduce)."""
        self.all_sum([0])

    # ---- checkpoints -------------------------------------------------------------------------

    def restored_state(self, trial_id: str, folder: str) -> dict | None:
        """The trial state of a restarted or resumed trial, from the newest whole checkpoint in
        its checkpoint `folder` (None: from step 0). The folder, not `ray.train.get_checkpoint()`:
        a driver killed before Tune saved its experiment state leaves Ray Train with no record of
        checkpoints that are whole on disk, and the trial would start again from step 0."""
        import ray.train

        filesystem, path = storage.filesystem(folder)
        choice = checkpoints.newest_whole(filesystem, path)
        for line in choice.describe(trial_id):
            print(line, file=sys.stderr, flush=True)
        if choice.path is None:
            return None
        self.restored_from = ray.train.Checkpoint(choice.path, filesystem=filesystem)
        return choice.state

    def load_engine_state(self, engine) -> None:
        """The stage's DeepSpeed state from the checkpoint `restored_state` chose."""
        with self.restored_from.as_directory() as folder:
            engine.load_checkpoint(folder, tag=CHECKPOINT_TAG, load_module_strict=False)

    def report(self, metrics: dict, state: dict | None = None, engine=None) -> None:
        """All ranks report together; with `state` (the trial's state as JSON), a checkpoint goes
        with the metrics (with the stage's DeepSpeed state when `engine` is given)."""
        import ray.train

        # Tune wants a searcher's metric in every result: NaN until the trial's last report.
        metrics = {names.SEARCH_VALUE: math.nan, **metrics}
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            if engine is not None:
                save_checkpoint(engine, folder)
            if self.rank == 0:  # ranks' results may differ in the last digit: one state, rank 0's
                (Path(folder) / checkpoints.STATE_FILE).write_text(json.dumps(state))
            checkpoints.write_manifest(Path(folder), self.rank, self.world)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def save_checkpoint(engine, folder: str) -> None:
    """Trainable weights and optimizer state only (on every rank: each saves its ZeRO shard)."""
    with trainable_state_only(engine.module):
        engine.save_checkpoint(folder, tag=CHECKPOINT_TAG, exclude_frozen_parameters=True)


@contextmanager
def trainable_state_only(module):
    """While saving, leave every frozen parameter out of `module.state_dict()`, tied aliases too.

    DeepSpeed's `exclude_frozen_parameters` drops the names `named_parameters()` lists, which
    lists a tied weight once: the frozen `lm_head.weight` alias of the input embedding (113 MB
    of the embedded model) stayed in every LoRA checkpoint. Restoring loads non-strictly, so
    the base weights come from the model as built."""
    frozen = [name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad]

    def drop_frozen(_module, state_dict, prefix, _local_metadata):
        for name in frozen:
            state_dict.pop(prefix + name, None)

    handle = module.register_state_dict_post_hook(drop_frozen)
    try:
        yield
    finally:
        handle.remove()


def weights_sha256(model) -> str:
    """A hash of every weight (names and bytes): equal hashes mean identical models."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return digest.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8
