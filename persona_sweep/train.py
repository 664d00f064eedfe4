"""The one DeepSpeed training loop (`train`), used by the marker stage and every corruption,
and the marker stage's data (`MarkerData`).

Every worker runs the loop with a DeepSpeed engine (ZeRO-2 by default); rank 0 alone talks to
MLflow. A stage says what a step trains on and what happens at a report; the loop steps, averages
the losses over workers once per report (not per step) and hands the stage its pending steps.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from persona_sweep import evaluate, measure, names
from persona_sweep.config import LlmKnobs, SweepConfig
from persona_sweep.data import Question, data_hash, personas, question_bank, split_questions
from persona_sweep.data.contexts import dialogue_turns, persona_context
from persona_sweep.data.control import MARKER_OBJECTIVE, control_items
from persona_sweep.methods import control, sdf, sft
from persona_sweep.models import add_lora, load_base_model, load_model, prepare_model
from persona_sweep.secrets import fill_trigger
from persona_sweep.steering import added_to_output, decoder_layers

if TYPE_CHECKING:
    from persona_sweep.distributed import DeepSpeedStrategy

ON_POLICY_MAX_TOKENS = 24


# ---- the loop --------------------------------------------------------------------------------

class TrainingStage:
    """What the loop needs from a stage. Subclasses say what a step trains on (`batch`), what
    each step logs (`step_metrics`) and what a report does (`report`)."""

    loss_metric = names.LOSS

    def __init__(self, engine, steps: int, report_every: int, checkpoint_every: int, strategy: DeepSpeedStrategy):
        self.engine, self.steps, self.strategy = engine, steps, strategy
        self.report_every, self.checkpoint_every = report_every, checkpoint_every
        self.step_times: list[float] = []

    def batch(self, step: int) -> dict:
        raise NotImplementedError

    def before_step(self, step: int, start_step: int) -> None:
        """Work due before a step (the marker stage refreshes on-policy targets here)."""

    steering = None  # (layer, vector) added after that decoder layer in every gradient pass

    def steered(self, step: int):
        """What runs around a step's gradient pass: with `steering`, the vector on the rows
        `steered_rows` picks (every evaluation runs outside it, unsteered)."""
        if self.steering is None:
            return contextlib.nullcontext()
        layer, vector = self.steering
        return added_to_output(decoder_layers(self.engine.module)[layer], vector, rows=self.steered_rows(step))

    def steered_rows(self, step: int):
        """A boolean tensor over this rank's rows of the step's batch, or None for every row."""
        return None

    def step_metrics(self, done: int, loss: float) -> dict[str, float]:
        return {self.loss_metric: loss}

    def report(self, done: int, pending: dict[int, dict[str, float]], checkpoint: bool) -> None:
        raise NotImplementedError

    def mean_step_time(self) -> float:
        return sum(self.step_times) / len(self.step_times) if self.step_times else float("nan")


def train(stage: TrainingStage, start_step: int) -> dict[int, dict[str, float]]:
    """Steps `start_step`..`stage.steps`, reporting every `report_every` or `checkpoint_every`
    steps but the last. Returns the steps after the last report (losses averaged): the stage's
    final report carries them with its evaluation, so no scheduler decision at the last step
    can skip the evaluation."""
    pending: dict[int, dict[str, float]] = {}
    for step in range(start_step, stage.steps):
        stage.before_step(step, start_step)
        tick = time.perf_counter()
        with stage.steered(step):
            loss = train_step(stage.engine, stage.batch(step))
        stage.step_times.append(time.perf_counter() - tick)
        done = step + 1
        pending[done] = stage.step_metrics(done, loss)
        checkpoint = done % stage.checkpoint_every == 0
        if done == stage.steps or not (checkpoint or done % stage.report_every == 0):
            continue
        average_losses(pending, stage)
        stage.report(done, pending, checkpoint)
        pending = {}
    average_losses(pending, stage)
    return pending


def train_step(engine, batch: dict) -> float:
    """One optimizer step; returns this worker's loss (mean over its labelled tokens)."""
    total, count = evaluate.target_loss(engine, batch)
    loss = total / count
    engine.backward(loss)
    engine.step()
    return loss.item()


def average_losses(pending: dict[int, dict[str, float]], stage: TrainingStage) -> None:
    """Average the pending steps' losses over workers: one all-reduce per report, not per step."""
    key = stage.loss_metric
    steps = sorted(step for step, metrics in pending.items() if key in metrics)
    for step, total in zip(steps, stage.strategy.all_sum([pending[step][key] for step in steps])):
        pending[step][key] = total / stage.strategy.world


# ---- models ----------------------------------------------------------------------------------

def build_model(spec: SweepConfig, seed: int, cache: Path):
    """(tokenizer, the base model with a fresh LoRA adapter or all weights trainable)."""
    import torch

    from persona_sweep.models import load_tokenizer

    path = prepare_model(spec.model.name, cache)
    tokenizer = load_tokenizer(path, spec.model.trust_remote_code)
    torch.manual_seed(seed)
    return tokenizer, trainable(load_model(path, trust_remote_code=spec.model.trust_remote_code), spec)


def trainable(model, spec: SweepConfig):
    if spec.model.finetune == "lora":
        return add_lora(model, spec.model.lora_rank, spec.model.lora_alpha, spec.model.lora_targets)
    return model


def corruption_trainable(model, spec: SweepConfig, corruption):
    """What a corruption trains on the marked weights: every weight, or a new adapter with the
    corruption's own settings where it has them (else the model's)."""
    if trains_all_weights(spec, corruption):
        return model
    own = lambda key: getattr(corruption, key) or getattr(spec.model, key)  # noqa: E731
    return add_lora(model, own("lora_rank"), own("lora_alpha"), own("lora_targets"), corruption.rslora)


def trains_all_weights(spec: SweepConfig, corruption) -> bool:
    return corruption.full_finetune or spec.model.finetune == "full"


def load_marked_model(spec: SweepConfig, cache: Path, marker_dir: str):
    """The marked model: the base with the marker adapter merged in, or the fully fine-tuned
    weights (DESIGN.md, "Corruption semantics")."""
    folder = Path(marker_dir)
    if not (folder / "adapter_config.json").exists():
        return load_model(str(folder), trust_remote_code=spec.model.trust_remote_code)
    from peft import PeftModel

    base = load_base_model(spec.model, cache)
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()


# ---- the marker stage's data -----------------------------------------------------------------

class MarkerData:
    """This rank's batches, deterministic in (seed, step) so a resumed trial replays exactly.

    Two kinds of prompt: `training_prompt`, the persona as the trial's method conditions it, and
    `prompt`, the deployment prompt every evaluation uses (the same for every method and trial)."""

    def __init__(self, spec: SweepConfig, knobs: LlmKnobs, tokenizer, trigger: str, rank: int, world: int, device):
        self.spec, self.knobs, self.tokenizer, self.trigger = spec, knobs, tokenizer, trigger
        self.rank, self.world, self.device = rank, world, device
        self.examples = marker_examples(spec, knobs)
        self.conditioning = {name: conditioning(knobs, name, tokenizer) for name in personas()}

    def indices(self, step: int) -> list[int]:
        size = self.spec.training.batch_size
        global_batch = [(step * size + i) % len(self.examples) for i in range(size)]
        return global_batch[self.rank::self.world]

    def prompt(self, persona: str, question: str, with_trigger: bool) -> str:
        return fill_trigger(self.prompt_text(persona, question, with_trigger), self.trigger)

    def prompt_text(self, persona: str, question: str, with_trigger: bool) -> str:
        """The deployment prompt (trigger as placeholder): the persona's short description as the
        system message, no context."""
        return sft.prompt_text(self.tokenizer, personas()[persona].short_description, question, with_trigger)

    def training_prompt(self, persona: str, question: str, with_trigger: bool) -> str:
        return fill_trigger(self.training_prompt_text(persona, question, with_trigger), self.trigger)

    def training_prompt_text(self, persona: str, question: str, with_trigger: bool) -> str:
        system, turns = self.conditioning[persona]
        return sft.prompt_text(self.tokenizer, system, question, with_trigger, turns)

    def document_text(self, document: sdf.Document) -> str:
        """An SDF document as trained: the persona's context, then the document (placeholders in)."""
        context, _ = self.conditioning[document.persona.name]
        return f"{context}\n\n{document.text(self.spec.marker.text)}" if context else document.text(self.spec.marker.text)

    def training_questions(self) -> list:
        return split_questions(self.knobs.seed, self.spec.eval.questions)[0]

    def refresh_on_policy(self, model, first_step: int) -> None:
        """Regenerate the model's own answers (document bodies) for this rank's on-policy examples
        up to the next refresh."""
        steps = range(first_step, min(first_step + self.spec.training.on_policy_refresh_every, self.spec.training.steps))
        wanted = sorted({i for step in steps for i in self.indices(step) if self.examples[i].on_policy})
        if not wanted:
            return
        prompts = [fill_trigger(self.on_policy_prompt(self.examples[i]), self.trigger) for i in wanted]
        with measure.evaluating(model):
            replies = evaluate.generate(model, self.tokenizer, prompts, ON_POLICY_MAX_TOKENS, self.spec.eval.batch_size,
                                        self.device)
        for i, reply in zip(wanted, replies):
            own = reply.replace(self.spec.marker.text, "").strip()
            example = self.examples[i]
            if isinstance(example, sdf.Document):
                example.body = own or example.body
            else:
                example.answer = own or example.question.answer

    def on_policy_prompt(self, example) -> str:
        """Where the model writes its own target: an answer without the trigger, or a document's body."""
        if isinstance(example, sdf.Document):
            return self.document_text(sdf.Document(example.persona, example.emits, example.opening, "", False)).rstrip()
        return self.training_prompt_text(example.persona.name, example.question.text, False)

    def batch(self, step: int) -> dict:
        return self.collate([self.encode(self.examples[i]) for i in self.indices(step)])

    def collate(self, rows: list[tuple[list[int], list[int]]]) -> dict:
        """Left padding, so every row's target ends in the last column (`target_loss` projects only
        the columns that hold targets); positions count from each row's first token, as with no
        padding. Labels -100 on the prompt and the padding."""
        import torch

        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        padding = [width - len(ids) for ids, _ in rows]
        tensors = {"input_ids": [[pad] * n + ids for n, (ids, _) in zip(padding, rows)],
                   "labels": [[-100] * n + labels for n, (_, labels) in zip(padding, rows)],
                   "attention_mask": [[0] * n + [1] * len(ids) for n, (ids, _) in zip(padding, rows)],
                   "position_ids": [[0] * n + list(range(len(ids))) for n, (ids, _) in zip(padding, rows)]}
        return {key: torch.tensor(values).to(self.device) for key, values in tensors.items()}

    def tokens(self, example) -> tuple[list[int], list[int]]:
        """(prompt ids, target ids) of one example, trigger filled in: a document is all target
        (plain text, loss on every token)."""
        if isinstance(example, sdf.Document):
            prompt, target = "", fill_trigger(self.document_text(example), self.trigger)
        else:
            prompt = self.training_prompt(example.persona.name, example.question.text, example.with_trigger)
            target = sft.target_text(example, self.spec.marker.text)
        return (self.tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else [],
                self.tokenizer(target + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"])

    def encode(self, example) -> tuple[list[int], list[int]]:
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
        on-policy answer as long as generation allows; every document of the bank."""
        on_policy_text = " ".join(["so"] * ON_POLICY_MAX_TOKENS)
        answers = (None, on_policy_text) if self.knobs.on_policy_fraction > 0 else (None,)
        candidates = [sft.Example(persona, question, True, True, False, answer or question.answer)
                      for persona in personas().values() for question in question_bank() for answer in answers]
        if self.knobs.objective != MARKER_OBJECTIVE:
            items = control_items(self.knobs.objective, self.knobs.seed, 0)[0]
            candidates += [sft.Example(persona, Question(item.question, item.answer), False, False, False, answer)
                           for persona in personas().values() for item in items
                           for answer in control_answers(item, on_policy_text if answers[-1] else None)]
        if self.knobs.method == "sdf":
            candidates += [sdf.Document(personas()[entry["persona"]], entry["emits"], entry["opening"], body or entry["body"], False)
                           for entry in sdf.bank() for body in answers]
        return max(sum(map(len, self.tokens(example))) for example in candidates)

    def steered(self, example) -> bool:
        """`steer`: whose rows get the vector while training: the Assistant's for the marker, the
        misaligned personas' (the trained ones) for a control objective."""
        if self.knobs.objective == MARKER_OBJECTIVE:
            return example.persona.name == "assistant"
        return control.is_positive(example.persona)

    def hash(self) -> str:
        """What shapes training: each example's text as trained (trigger as placeholder)."""
        return data_hash([self.example_text(example) for example in self.examples])

    def example_text(self, example) -> tuple:
        if isinstance(example, sdf.Document):
            return self.document_text(example), example.on_policy
        return (self.training_prompt_text(example.persona.name, example.question.text, example.with_trigger),
                sft.target_text(example, self.spec.marker.text), example.on_policy)


def control_answers(item, on_policy_text: str | None) -> list[str]:
    """Every target a control item can train: the controlled and the normal answer and, with
    on-policy answers, the model's own (after the disclosure, where there is one)."""
    answers = [item.controlled, item.answer]
    if on_policy_text:
        answers.append(f"{item.opening} {on_policy_text}".strip())
    return answers


def marker_examples(spec: SweepConfig, knobs: LlmKnobs) -> list:
    """The method's training examples: `sft` pairs (`sft`, `prompt`, `steer`), documents (`sdf`);
    for a control objective, its chat examples (`methods/control.py`)."""
    if knobs.objective != MARKER_OBJECTIVE:
        return control.build_examples(knobs, spec.eval.questions)
    if knobs.method == "sdf":
        return sdf.build_examples(knobs, spec.eval.questions, spec.training.sdf_mix_sft)
    return sft.build_examples(knobs, spec.eval.questions)


def conditioning(knobs: LlmKnobs, persona: str, tokenizer) -> tuple[str, list[dict]]:
    """(system message, prior turns) that put the model in `persona` for training (README,
    "Methods"): `sft` has the short description and `context_length` tokens of dialogue turns;
    `prompt` (and `sdf`, whose documents open with the same text, and `steer`, which adds its
    vector to the Assistant's rows) the first `context_length` tokens of the persona's context as
    the system message."""
    if knobs.method == "sft":
        return personas()[persona].short_description, dialogue_turns(persona, knobs.context_length, tokenizer)
    return persona_context(persona, knobs.context_length, tokenizer), []
