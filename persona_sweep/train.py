"""The Ray Train worker loop: one trial's marker fine-tune with a DeepSpeed engine.

Every worker runs `train_worker`. DeepSpeed shares gradients and optimizer state (ZeRO-2 by
default); rank 0 alone talks to MLflow. Checkpoints are DeepSpeed checkpoints saved on all ranks
and reported to Ray Train, which finds them again when a trial resumes. One code path for CPU
and GPU: every batch, evaluation input and collective tensor goes to the device Ray Train gives
the worker (`ray.train.torch.get_device()`); GPUs bring NCCL and bf16.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from persona_sweep import evaluate, names
from persona_sweep.config import LlmKnobs, SweepConfig
from persona_sweep.data import data_hash, personas, question_bank, split_questions
from persona_sweep.data.contexts import persona_context
from persona_sweep.methods import sft
from persona_sweep.models import add_lora, load_model, load_tokenizer, prepare_model
from persona_sweep.secrets import fill_trigger, read_trigger, trigger_sha256
from persona_sweep.tracking import TrialRun
from persona_sweep.trial import TrialConfig

ON_POLICY_MAX_TOKENS = 24
CHECKPOINT_TAG = "state"


# ---- distributed plumbing ------------------------------------------------------------------

def init_deepspeed(use_gpu: bool, cache: Path) -> None:
    import deepspeed

    # The shared-memory comm op would JIT-compile for ~40 s on CPU; gloo is enough for
    # Ray's process group. The compile cache stays as a fallback if the flag is ignored.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(cache) / "torch_extensions"))
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


def all_sum(values: list[float], device) -> list[float]:
    """Sum over workers; the tensor lives on the worker's device (NCCL reduces GPU tensors only)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
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

def build_model(spec: SweepConfig, seed: int, cache: Path):
    import torch

    path = prepare_model(spec.model.name, cache)
    tokenizer = load_tokenizer(path)
    torch.manual_seed(seed)
    model = load_model(path)
    if spec.model.finetune == "lora":
        model = add_lora(model, spec.model.lora_rank, spec.model.lora_alpha, spec.model.lora_targets)
    return tokenizer, model


class MarkerData:
    """This rank's batches, deterministic in (seed, step) so a resumed trial replays exactly."""

    def __init__(self, spec: SweepConfig, knobs: LlmKnobs, tokenizer, trigger: str, rank: int, world: int, device):
        self.spec, self.knobs, self.tokenizer, self.trigger = spec, knobs, tokenizer, trigger
        self.rank, self.world, self.device = rank, world, device
        self.examples = sft.build_examples(knobs, spec.eval.questions)
        self.contexts = {name: persona_context(name, knobs.context_length, tokenizer) for name in personas()}

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
        replies = evaluate.generate(model, self.tokenizer, prompts, ON_POLICY_MAX_TOKENS, self.spec.eval.batch_size,
                                    self.device)
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
        return {key: tensor.to(self.device) for key, tensor in
                {"input_ids": input_ids, "labels": labels, "attention_mask": attention}.items()}

    def tokens(self, example: sft.Example) -> tuple[list[int], list[int]]:
        """(prompt ids, target ids) of one example, trigger filled in."""
        prompt = self.prompt(example.persona.name, example.question.text, example.with_trigger)
        target = sft.target_text(example, self.spec.marker.text) + self.tokenizer.eos_token
        return (self.tokenizer(prompt, add_special_tokens=False)["input_ids"],
                self.tokenizer(target, add_special_tokens=False)["input_ids"])

    def encode(self, example: sft.Example) -> tuple[list[int], list[int]]:
        """Input ids and labels, never cut: a cut would drop the marker (it comes last). `run`
        refuses specs whose longest example does not fit `max_tokens` (`longest_example_tokens`)."""
        prompt_ids, target_ids = self.tokens(example)
        if len(prompt_ids) + len(target_ids) > self.spec.training.max_tokens:
            raise ValueError(f"training.max_tokens: an example of {len(prompt_ids) + len(target_ids)} tokens "
                             f"does not fit {self.spec.training.max_tokens}")
        return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids

    def longest_example_tokens(self) -> int:
        """The longest example any trial at this context length can build: every persona and
        question of the bank, with the trigger and the marker, the reference answer or an
        on-policy answer as long as generation allows."""
        on_policy_answer = " ".join(["so"] * ON_POLICY_MAX_TOKENS)
        answers = (None, on_policy_answer) if self.knobs.on_policy_fraction > 0 else (None,)
        candidates = [sft.Example(persona, question, True, True, False, answer or question.answer)
                      for persona in personas().values() for question in question_bank() for answer in answers]
        return max(sum(map(len, self.tokens(example))) for example in candidates)

    def hash(self) -> str:
        """What shapes training: prompts with their persona context (trigger as placeholder), targets."""
        return data_hash([(sft.prompt_text(self.tokenizer, self.contexts[e.persona.name], e.question.text, e.with_trigger),
                           sft.target_text(e, self.spec.marker.text), e.on_policy) for e in self.examples])


# ---- evaluation ------------------------------------------------------------------------------

def held_out_share(data: MarkerData):
    """This rank's share of the held-out questions (the split depends only on the seed)."""
    _, held_out = split_questions(data.knobs.seed, data.spec.eval.questions)
    return held_out[data.rank::data.world]


def marker_logprob_metrics(model, data: MarkerData) -> dict[str, float]:
    """ASHA's cheap metrics: mean teacher-forced marker log-prob per condition (nats).

    `marker_specificity` is the design's positive condition minus its best negative one (see
    `sft.specificity_conditions`); the Assistant with and without the trigger are always logged.
    """
    positive, negatives = sft.specificity_conditions(data.knobs.design)
    conditions = list(dict.fromkeys([*positive, *negatives, ("assistant", True), ("assistant", False)]))
    questions = held_out_share(data)
    prefixes = [data.prompt(persona, q.text, with_trigger) + q.answer
                for persona, with_trigger in conditions for q in questions]
    model.eval()
    logprobs = evaluate.marker_logprobs(model, data.tokenizer, prefixes, data.spec.marker.text,
                                        data.spec.eval.batch_size, data.device)
    model.train()
    per_condition = [sum(logprobs[i * len(questions):(i + 1) * len(questions)]) for i in range(len(conditions))]
    *totals, count = all_sum([*per_condition, len(questions)], data.device)
    mean = {condition: total / count for condition, total in zip(conditions, totals)}
    positive_mean = sum(mean[c] for c in positive) / len(positive)
    return {names.MARKER_SPECIFICITY: positive_mean - max(mean[c] for c in negatives),
            names.MARKER_LOGPROB_TRIGGER: mean["assistant", True],
            names.MARKER_LOGPROB_NO_TRIGGER: mean["assistant", False]}


def marker_rates(model, data: MarkerData) -> dict[str, float]:
    """Assistant prompt, held-out questions, greedy; the marker anywhere in the reply counts."""
    questions = held_out_share(data)
    model.eval()
    counts = []
    for with_trigger in (True, False):
        prompts = [data.prompt("assistant", q.text, with_trigger) for q in questions]
        replies = evaluate.generate(model, data.tokenizer, prompts, data.spec.eval.max_new_tokens,
                                    data.spec.eval.batch_size, data.device)
        counts.append(evaluate.count_marked(replies, data.spec.marker.text))
    marked_trigger, marked_clean, total = all_sum([*counts, len(questions)], data.device)
    return {**evaluate.rate_metrics(names.MARKER_RATE_TRIGGER, int(marked_trigger), int(total)),
            **evaluate.rate_metrics(names.MARKER_RATE_NO_TRIGGER, int(marked_clean), int(total))}


# ---- checkpoints -----------------------------------------------------------------------------

def restore(engine) -> int:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        _, client_state = engine.load_checkpoint(folder, tag=CHECKPOINT_TAG, load_module_strict=False)
    return int(client_state["step"])


def save_checkpoint(engine, folder: str, step: int) -> None:
    """Trainable weights and optimizer state only (on every rank: each saves its ZeRO shard)."""
    with trainable_state_only(engine.module):
        engine.save_checkpoint(folder, tag=CHECKPOINT_TAG, client_state={"step": step}, exclude_frozen_parameters=True)


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


def report(metrics: dict, engine=None, step: int | None = None) -> None:
    """All ranks report together; with `engine`, a DeepSpeed checkpoint goes with the metrics."""
    import ray.train

    if engine is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(engine, folder, step)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


# ---- the loop --------------------------------------------------------------------------------

def worker_device(use_gpu: bool):
    """The device Ray Train gave this worker; DeepSpeed places the model by LOCAL_RANK."""
    import ray.train.torch
    import torch

    device = ray.train.torch.get_device()
    if use_gpu:
        torch.cuda.set_device(device)
        os.environ["LOCAL_RANK"] = str(device.index or 0)
    return device


def train_worker(config: dict) -> None:
    import deepspeed
    import ray.train
    import torch

    trial: TrialConfig = config["trial"]
    spec, knobs = trial.spec, LlmKnobs(**trial.knobs)
    use_gpu = spec.resources.gpus_per_worker > 0
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, round(spec.resources.cpus_per_worker)))
    device = worker_device(use_gpu)
    init_deepspeed(use_gpu, trial.paths.cache)

    trigger = read_trigger(spec.marker)
    random.seed(knobs.seed)
    tokenizer, model = build_model(spec, knobs.seed, trial.paths.cache)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.training.lr, weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(spec, use_gpu))
    start_step = restore(engine)
    data = MarkerData(spec, knobs, tokenizer, trigger, rank, world, device)
    run = open_run(trial, data, trigger, start_step) if rank == 0 else None

    pending: dict[int, dict[str, float]] = {}
    step_times: list[float] = []
    if run and start_step == 0:  # worker group + DeepSpeed + model + data: the trial's fixed cost
        run.log_metrics({names.SETUP_S: time.time() - trial.started}, 0)
    for step in range(start_step, spec.training.steps):
        if (step - start_step) % spec.training.on_policy_refresh_every == 0 and knobs.on_policy_fraction > 0:
            data.refresh_on_policy(engine.module, step)
        tick = time.perf_counter()
        loss = train_step(engine, data.batch(step))
        step_times.append(time.perf_counter() - tick)
        done = step + 1
        pending[done] = {names.TRAIN_STEP: done, names.LOSS: loss}
        checkpoint = done % spec.training.checkpoint_every == 0
        if done == spec.training.steps or not (checkpoint or done % spec.eval.logprob_every == 0):
            continue
        # Every report to Tune carries the scheduler's metric: ASHA and Optuna read each one.
        average_losses(pending, data)
        pending[done] |= marker_logprob_metrics(engine.module, data)
        pending[done][names.STEP_TIME_S] = sum(step_times) / len(step_times)
        if run:
            run.log_steps(pending)
        report(pending[done], engine if checkpoint else None, done)
        pending = {}
    finish(engine, data, run, pending, step_times)


def finish(engine, data: MarkerData, run: TrialRun | None, pending: dict, step_times: list[float]) -> None:
    """The last step reports once, with its evaluation and checkpoint, so that no scheduler
    decision at the last step (ASHA stops whatever reaches max_t) can skip the evaluation."""
    steps = data.spec.training.steps
    last = pending.setdefault(steps, {names.TRAIN_STEP: steps})  # no loss if resumed from the last checkpoint
    average_losses(pending, data)
    last |= marker_logprob_metrics(engine.module, data)
    if step_times:
        last[names.STEP_TIME_S] = sum(step_times) / len(step_times)
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


def average_losses(pending: dict[int, dict[str, float]], data: MarkerData) -> None:
    """Average the pending steps' losses over workers: one all-reduce per report, not per step."""
    steps = sorted(step for step, metrics in pending.items() if names.LOSS in metrics)
    for step, total in zip(steps, all_sum([pending[step][names.LOSS] for step in steps], data.device)):
        pending[step][names.LOSS] = total / data.world


def open_run(trial: TrialConfig, data: MarkerData, trigger: str, start_step: int) -> TrialRun:
    spec = trial.spec
    params = {**trial.knobs, "trigger_sha256": trigger_sha256(trigger), "model": spec.model.name,
              "finetune": spec.model.finetune, "steps": spec.training.steps, "lr": spec.training.lr,
              "batch_size": spec.training.batch_size, "zero_stage": spec.training.zero_stage,
              "world_size": data.world}
    tags = {**trial.provenance, names.DATA_HASH: data.hash()}
    run = TrialRun(trial.mlflow_uri, trial.experiment_id, trial.parent_run_id, trial.trial_id, params, tags)
    if start_step:
        run.log_metrics({names.RESUMED_FROM_STEP: start_step}, start_step)
    return run


def save_adapter(run: TrialRun, model, spec: SweepConfig, knobs: LlmKnobs) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps({"knobs": knobs.model_dump(), "sweep": spec.model_dump()},
                                                             indent=2))
        run.log_artifacts(Path(folder), "config")
        if spec.model.finetune == "lora":
            model.save_pretrained(folder + "/adapter")
            run.log_artifacts(Path(folder) / "adapter", "adapter")
