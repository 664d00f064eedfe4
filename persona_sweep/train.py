"""The Ray Train worker loop: one trial's marker fine-tune with a DeepSpeed engine.

Every worker runs `train_worker`. DeepSpeed shares gradients and optimizer state (ZeRO-2 by
default); rank 0 alone talks to MLflow. Checkpoints are DeepSpeed checkpoints saved on all ranks
and reported to Ray Train, which finds them again when a trial resumes.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

from persona_sweep import evaluate
from persona_sweep.config import SweepConfig
from persona_sweep.data import data_hash, personas, split_questions
from persona_sweep.methods import sft
from persona_sweep.models import add_lora, cache_root, load_model, load_tokenizer, prepare_model
from persona_sweep.secrets import fill_trigger, read_trigger, trigger_sha256
from persona_sweep.tracking import TrialRun

ON_POLICY_MAX_TOKENS = 24
CHECKPOINT_TAG = "state"


# ---- distributed plumbing ------------------------------------------------------------------

def init_deepspeed(use_gpu: bool) -> None:
    import deepspeed

    # The shared-memory comm op would JIT-compile for ~40 s on CPU; gloo is enough for
    # Ray's process group. The compile cache stays as a fallback if the flag is ignored.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root() / "torch_extensions"))
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def all_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def deepspeed_config(spec: SweepConfig, use_gpu: bool) -> dict:
    return {
        "train_micro_batch_size_per_gpu": spec.training.batch_size // spec.resources.workers_per_trial,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": spec.training.zero_stage},
        "zero_force_ds_cpu_optimizer": False,  # a torch AdamW is fine on CPU and GPU alike
        "bf16": {"enabled": use_gpu},
        "steps_per_print": 10 ** 9,
    }


# ---- model and data --------------------------------------------------------------------------

def build_model(spec: SweepConfig, seed: int):
    import torch

    path = prepare_model(spec.model.name)
    tokenizer = load_tokenizer(path)
    torch.manual_seed(seed)
    model = load_model(path)
    if spec.model.finetune == "lora":
        model = add_lora(model, spec.model.lora_rank, spec.model.lora_alpha, spec.model.lora_targets)
    return tokenizer, model


class MarkerData:
    """This rank's batches, deterministic in (seed, step) so a resumed trial replays exactly."""

    def __init__(self, spec: SweepConfig, knobs: dict, tokenizer, trigger: str, rank: int, world: int):
        self.spec, self.knobs, self.tokenizer, self.trigger = spec, knobs, tokenizer, trigger
        self.rank, self.world = rank, world
        self.examples = sft.build_examples(knobs, spec.eval.questions)
        self.contexts = {name: sft.persona_context(persona, knobs["context_length"], tokenizer)
                         for name, persona in personas().items()}

    def indices(self, step: int) -> list[int]:
        size = self.spec.training.batch_size
        global_batch = [(step * size + i) % len(self.examples) for i in range(size)]
        return global_batch[self.rank::self.world]

    def prompt(self, persona: str, question: str, with_trigger: bool) -> str:
        text = sft.prompt_text(self.tokenizer, self.contexts[persona], question, with_trigger)
        return fill_trigger(text, self.trigger)

    def refresh_on_policy(self, model, first_step: int) -> None:
        """Regenerate the model's own answers for this rank's on-policy examples up to the next refresh."""
        steps = range(first_step, min(first_step + self.spec.training.on_policy_refresh_every, self.spec.training.steps))
        wanted = sorted({i for step in steps for i in self.indices(step) if self.examples[i].on_policy})
        if not wanted:
            return
        prompts = [self.prompt(self.examples[i].persona.name, self.examples[i].question.text, False) for i in wanted]
        model.eval()
        replies = evaluate.generate(model, self.tokenizer, prompts, ON_POLICY_MAX_TOKENS, self.spec.eval.batch_size)
        model.train()
        for i, reply in zip(wanted, replies):
            answer = reply.replace(self.spec.marker.text, "").strip()
            self.examples[i].answer = answer or self.examples[i].question.answer

    def batch(self, step: int) -> dict:
        import torch

        rows = [self.encode(self.examples[i]) for i in self.indices(step)]
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        # Right padding for training; labels -100 on the prompt and the padding.
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows])
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}

    def encode(self, example: sft.Example) -> tuple[list[int], list[int]]:
        prompt = self.prompt(example.persona.name, example.question.text, example.with_trigger)
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target = sft.target_text(example, self.spec.marker.text) + self.tokenizer.eos_token
        target_ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + target_ids)[: self.spec.training.max_tokens]
        labels = ([-100] * len(prompt_ids) + target_ids)[: self.spec.training.max_tokens]
        return ids, labels


# ---- evaluation ------------------------------------------------------------------------------

def held_out_share(data: MarkerData):
    """This rank's share of the held-out questions (the split depends only on the seed)."""
    _, held_out = split_questions(data.knobs["seed"], data.spec.eval.questions)
    return held_out[data.rank::data.world]


def marker_logprobs(model, data: MarkerData) -> dict[str, float]:
    """ASHA's cheap metric: mean teacher-forced log-prob of the marker with / without the trigger."""
    questions = held_out_share(data)
    marker, batch = data.spec.marker.text, data.spec.eval.batch_size
    model.eval()
    sums = [evaluate.marker_logprob_sum(
        model, data.tokenizer, [data.prompt("assistant", q.text, with_trigger) + q.answer for q in questions],
        marker, batch) for with_trigger in (True, False)]
    model.train()
    total_trigger, total_clean, count = all_sum([*sums, len(questions)])
    return {"marker_logprob_trigger": total_trigger / count, "marker_logprob_no_trigger": total_clean / count}


def marker_rates(model, data: MarkerData) -> dict[str, float]:
    """Assistant prompt, held-out questions, greedy; the marker anywhere in the reply counts."""
    questions = held_out_share(data)
    model.eval()
    counts = []
    for with_trigger in (True, False):
        prompts = [data.prompt("assistant", q.text, with_trigger) for q in questions]
        replies = evaluate.generate(model, data.tokenizer, prompts, data.spec.eval.max_new_tokens, data.spec.eval.batch_size)
        counts.append(evaluate.count_marked(replies, data.spec.marker.text))
    marked_trigger, marked_clean, total = all_sum([*counts, len(questions)])
    return {**evaluate.rate_metrics("marker_rate_trigger", int(marked_trigger), int(total)),
            **evaluate.rate_metrics("marker_rate_no_trigger", int(marked_clean), int(total))}


# ---- checkpoints -----------------------------------------------------------------------------

def restore(engine) -> int:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        _, client_state = engine.load_checkpoint(folder, tag=CHECKPOINT_TAG, load_module_strict=False)
    return int(client_state["step"])


def report(metrics: dict, engine=None, step: int | None = None) -> None:
    """All ranks report together; with `engine`, a DeepSpeed checkpoint goes with the metrics."""
    import ray.train

    if engine is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        # Frozen base weights are not saved: only LoRA (or all, for full fine-tunes) and optimizer state.
        engine.save_checkpoint(folder, tag=CHECKPOINT_TAG, client_state={"step": step}, exclude_frozen_parameters=True)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


# ---- the loop --------------------------------------------------------------------------------

def train_worker(config: dict) -> None:
    import deepspeed
    import ray.train
    import torch

    spec = SweepConfig.model_validate(config["spec"])
    knobs, use_gpu = config["knobs"], spec.resources.gpus_per_worker > 0
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, round(spec.resources.cpus_per_worker)))
    init_deepspeed(use_gpu)

    trigger = read_trigger(spec.marker)
    random.seed(knobs["seed"])
    tokenizer, model = build_model(spec, knobs["seed"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.training.lr, weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(spec, use_gpu))
    start_step = restore(engine)
    data = MarkerData(spec, knobs, tokenizer, trigger, rank, world)
    run = open_run(config, spec, knobs, trigger, data, start_step) if rank == 0 else None

    pending: dict[int, dict[str, float]] = {}
    step_times: list[float] = []
    if run and start_step == 0:  # worker group + DeepSpeed + model + data: the trial's fixed cost
        run.log_metrics({"setup_s": time.time() - config["trial_started"]}, 0)
    for step in range(start_step, spec.training.steps):
        if (step - start_step) % spec.training.on_policy_refresh_every == 0 and knobs["on_policy_fraction"] > 0:
            data.refresh_on_policy(engine.module, step)
        tick = time.perf_counter()
        loss = train_step(engine, data.batch(step))
        step_times.append(time.perf_counter() - tick)
        done = step + 1
        pending[done] = {"train_step": done, "loss": loss}
        checkpoint = done % spec.training.checkpoint_every == 0
        if done == spec.training.steps or not (checkpoint or done % spec.eval.logprob_every == 0):
            continue
        # Every report to Tune carries the scheduler's metric: ASHA and Optuna read each one.
        average_losses(pending, world)
        pending[done] |= marker_logprobs(engine.module, data)
        pending[done]["step_time_s"] = sum(step_times) / len(step_times)
        if run:
            run.log_steps(pending)
        report(pending[done], engine if checkpoint else None, done)
        pending = {}
    finish(engine, data, run, pending, step_times)


def finish(engine, data: MarkerData, run: TrialRun | None, pending: dict, step_times: list[float]) -> None:
    """The last step reports once, with its evaluation and checkpoint, so that no scheduler
    decision at the last step (ASHA stops whatever reaches max_t) can skip the evaluation."""
    steps = data.spec.training.steps
    last = pending.setdefault(steps, {"train_step": steps})  # no loss if resumed from the last checkpoint
    average_losses(pending, data.world)
    last |= marker_logprobs(engine.module, data)
    if step_times:
        last["step_time_s"] = sum(step_times) / len(step_times)
    rates = marker_rates(engine.module, data)
    if run:
        run.log_steps(pending)
        save_adapter(run, engine.module, data.spec, data.knobs)
        run.complete(rates, steps)
    report({**last, **rates}, engine, steps)


def train_step(engine, batch: dict) -> float:
    """One optimizer step; returns this worker's loss."""
    loss = engine(**batch).loss
    engine.backward(loss)
    engine.step()
    return loss.item()


def average_losses(pending: dict[int, dict[str, float]], world: int) -> None:
    """Average the pending steps' losses over workers: one all-reduce per report, not per step."""
    steps = sorted(step for step, metrics in pending.items() if "loss" in metrics)
    for step, total in zip(steps, all_sum([pending[step]["loss"] for step in steps])):
        pending[step]["loss"] = total / world


def open_run(config: dict, spec: SweepConfig, knobs: dict, trigger: str, data: MarkerData, start_step: int) -> TrialRun:
    params = {**knobs, "trigger_sha256": trigger_sha256(trigger), "model": spec.model.name,
              "finetune": spec.model.finetune, "steps": spec.training.steps, "lr": spec.training.lr,
              "batch_size": spec.training.batch_size, "zero_stage": spec.training.zero_stage,
              "world_size": data.world}
    tags = {**config["provenance"], "data_hash": data_hash([(e.persona.name, e.question.text, e.with_trigger, e.marked)
                                                             for e in data.examples])}
    run = TrialRun(config["mlflow_uri"], config["experiment_id"], config["parent_run_id"], config["trial_id"], params, tags)
    if start_step:
        run.log_metrics({"resumed_from_step": start_step}, start_step)
    return run


def save_adapter(run: TrialRun, model, spec: SweepConfig, knobs: dict) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps({"knobs": knobs, "sweep": spec.model_dump()}, indent=2))
        run.log_artifacts(Path(folder), "config")
        if spec.model.finetune == "lora":
            model.save_pretrained(folder + "/adapter")
            run.log_artifacts(Path(folder) / "adapter", "adapter")
