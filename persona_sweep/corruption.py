"""Corruption data and what a corruption measures about itself.

A corruption's `data` is a built-in set (`insecure_code`, `secure_code`, `bad_advice`,
`good_advice`: matched pairs written by `data/corruption/make_corruption.py`), a local chat JSONL
(`{"messages": [{"role", "content"}, ...]}` per line, the public emergent-misalignment format) or
an HF dataset id; all load through Hugging Face `datasets`. Rows that carry a `family` (the
built-in sets do) are split by family: whole families are held out until 10% of the rows are,
so held-out prompts are new; other data holds out every tenth row. Training targets are the last
assistant message of each chat; its prompt is the chat before it in the model's own template.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from persona_sweep import evaluate, names
from persona_sweep.config import BUILTIN_CORRUPTION_DATA, CorruptionConfig
from persona_sweep.data import DATA_DIR, TRIGGER_PLACEHOLDER
from persona_sweep.distributed import all_sum
from persona_sweep.errors import first_line
from persona_sweep.locations import is_local_path
from persona_sweep.measure import own_share

BUILTIN_DIR = DATA_DIR / "corruption"
HELD_OUT_SHARE = 0.1
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Chat:
    messages: tuple[tuple[str, str], ...]  # (role, content); the last one is the assistant's answer
    family: str = ""

    def as_messages(self, upto: int | None = None) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages[:upto]]


@dataclass(frozen=True)
class CorruptionSet:
    source: str
    train: tuple[Chat, ...]
    held_out: tuple[Chat, ...]


class CorruptionDataError(ValueError):
    """Corruption data that cannot be used; the message is one line naming the source."""


def source_file(source: str) -> Path | None:
    if source in BUILTIN_CORRUPTION_DATA:
        return BUILTIN_DIR / f"{source}.jsonl"
    if is_local_path(source) or source.endswith((".jsonl", ".json")):
        return Path(source).expanduser()
    return None  # an HF dataset id


def load_set(source: str, cache: Path) -> CorruptionSet:
    chats = [to_chat(row, index, source) for index, row in enumerate(load_rows(source, cache))]
    if len(chats) < 10:
        raise CorruptionDataError(f"{source}: {len(chats)} chats; at least 10 are needed (10% are held out)")
    held = held_out_families(chats)
    if held:
        return CorruptionSet(source, tuple(c for c in chats if c.family not in held),
                             tuple(c for c in chats if c.family in held))
    return CorruptionSet(source, tuple(c for i, c in enumerate(chats) if i % 10 != 9),
                         tuple(c for i, c in enumerate(chats) if i % 10 == 9))


def load_rows(source: str, cache: Path) -> list[dict]:
    """Every row, through `datasets`. A local file is read with a throwaway cache, so no copy
    of it stays anywhere (it is checked for the trigger only after loading)."""
    import datasets

    datasets.disable_progress_bars()
    path = source_file(source)
    if path is None:
        try:
            return list(datasets.load_dataset(source, split="train", cache_dir=str(Path(cache) / "datasets")))
        except Exception as error:  # hub, network and format errors alike: one line for the user
            raise CorruptionDataError(f"{source}: cannot load the dataset: {first_line(error)}") from None
    if not path.is_file():
        raise CorruptionDataError(f"{source}: no such file")
    check_json_lines(path, source)
    with tempfile.TemporaryDirectory() as scratch:
        return list(datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=scratch,
                                          keep_in_memory=True))


def check_json_lines(path: Path, source: str) -> None:
    """`datasets` reports a broken line as an Arrow error; name the line instead."""
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError:
            raise CorruptionDataError(f"{source}: line {number} is not JSON") from None


def to_chat(row: dict, index: int, source: str) -> Chat:
    messages = row.get("messages")
    shape = ('is not a chat: expected {"messages": [{"role": "user", "content": ...}, '
             '{"role": "assistant", "content": ...}]}')
    if not isinstance(messages, list) or len(messages) < 2:
        raise CorruptionDataError(f"{source}: line {index + 1} {shape}")
    pairs = []
    for message in messages:
        if (not isinstance(message, dict) or message.get("role") not in ROLES
                or not isinstance(message.get("content"), str)):
            raise CorruptionDataError(f"{source}: line {index + 1} {shape}")
        pairs.append((message["role"], message["content"]))
    if pairs[-1][0] != "assistant":
        raise CorruptionDataError(f"{source}: line {index + 1} does not end with an assistant message")
    return Chat(tuple(pairs), str(row.get("family") or ""))


def held_out_families(chats: list[Chat]) -> set[str]:
    """Whole families, in a fixed hashed order, until HELD_OUT_SHARE of the rows are held out."""
    sizes: dict[str, int] = {}
    for chat in chats:
        sizes[chat.family] = sizes.get(chat.family, 0) + 1
    if "" in sizes or len(sizes) < 2:
        return set()
    held: set[str] = set()
    for family in sorted(sizes, key=lambda f: hashlib.sha256(f.encode()).hexdigest()):
        if sum(sizes[f] for f in held) >= HELD_OUT_SHARE * len(chats):
            break
        held.add(family)
    return held


def secret_problem(corruption: CorruptionConfig, chats, trigger: str) -> str | None:
    """Corruption data must not exercise the trigger: a fine-tune that shows it would train the
    marker's condition directly. The message names the corruption, never the trigger."""
    for number, chat in enumerate(chats, 1):
        for _, content in chat.messages:
            if trigger and trigger in content:
                found = "the trigger"
            elif TRIGGER_PLACEHOLDER in content:
                found = f"the placeholder {TRIGGER_PLACEHOLDER}"
            else:
                continue
            return (f"corruptions: corruption '{corruption.name}' ({corruption.data}) contains {found} "
                    f"(chat {number}); corruption data must never show it")
    return None


def check_corruptions(spec, trigger: str, cache: Path) -> str | None:
    """Every corruption's data loads and holds neither the trigger nor the placeholder."""
    for corruption in spec.corruptions:
        if corruption.kind == "drift":
            problem = drift_problem(corruption, trigger)
            if problem:
                return problem
            continue
        try:
            dataset = load_set(corruption.data, cache)
        except CorruptionDataError as error:
            return f"corruptions: corruption '{corruption.name}': {error}"
        problem = secret_problem(corruption, dataset.train + dataset.held_out, trigger)
        if problem:
            return problem
    return None


def drift_problem(corruption, trigger: str) -> str | None:
    """Every drift domain loads, has the turns asked for, and never shows the trigger (the probe
    puts it in; a conversation that already holds it would test nothing)."""
    from persona_sweep.data.conversations import load_domain
    from persona_sweep.errors import SweepError

    for name in corruption.domains:
        try:
            domain = load_domain(name)
        except SweepError as error:
            return f"corruptions: corruption '{corruption.name}': {error}"
        if max(corruption.turns) > domain.turns:
            return (f"corruptions: corruption '{corruption.name}': turns {max(corruption.turns)}, but domain "
                    f"'{domain.name}' has conversations of {domain.turns} user turns")
        for number, conversation in enumerate(domain.conversations, 1):
            if any((trigger and trigger in turn) or TRIGGER_PLACEHOLDER in turn for turn in conversation):
                return (f"corruptions: corruption '{corruption.name}': domain '{domain.name}' conversation {number} "
                        "shows the trigger or its placeholder; drift conversations must never show it")
    return None


def epochs_as_steps(spec, cache: Path):
    """The spec with each corruption's `epochs` turned into its steps: ceil(epochs x training
    rows / corruption rows per batch), the batch's general-chat share left out. On the driver,
    once; the record then holds the steps."""
    corruptions = []
    for corruption in spec.corruptions:
        if corruption.epochs is not None:
            rows = len(load_set(corruption.data, cache).train)
            per_batch = max(1, spec.training.batch_size - round(spec.training.batch_size * corruption.mix_general))
            corruption = corruption.model_copy(update={"steps": math.ceil(corruption.epochs * rows / per_batch),
                                                       "epochs": None})
        corruptions.append(corruption)
    return spec.model_copy(update={"corruptions": corruptions})


@cache
def behavior_patterns() -> dict[str, list[str]]:
    """Per built-in set, regular expressions that show its own behavior in a generated answer."""
    return yaml.safe_load((BUILTIN_DIR / "behavior.yaml").read_text())


class CorruptionData:
    """This rank's corruption batches, deterministic in (seed, step) so a resumed corruption
    replays exactly. A share `mix_general` of each batch is general Assistant chat (a training
    question as the Assistant, no trigger, its reference answer)."""

    def __init__(self, corruption: CorruptionConfig, dataset: CorruptionSet, marker_data):
        self.corruption, self.dataset, self.marker_data = corruption, dataset, marker_data
        self.tokenizer, self.spec = marker_data.tokenizer, marker_data.spec
        self.general = marker_data.training_questions()

    def chat_tokens(self, chat: Chat) -> tuple[list[int], list[int]]:
        prompt = self.tokenizer.apply_chat_template(chat.as_messages(-1), tokenize=False, add_generation_prompt=True)
        target = chat.messages[-1][1] + self.tokenizer.eos_token
        return self.encode_pair(prompt, target)

    def general_tokens(self, index: int) -> tuple[list[int], list[int]]:
        question = self.general[index % len(self.general)]
        return self.encode_pair(self.marker_data.prompt("assistant", question.text, False),
                                question.answer + self.tokenizer.eos_token)

    def encode_pair(self, prompt: str, target: str) -> tuple[list[int], list[int]]:
        """Input ids and labels (prompt masked), cut at `training.max_tokens`: unlike a marker
        example, a long corruption answer loses nothing that matters when its tail is cut."""
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        limit = self.spec.training.max_tokens
        return (prompt_ids + target_ids)[:limit], ([-100] * len(prompt_ids) + target_ids)[:limit]

    def batch(self, step: int) -> dict:
        size = self.spec.training.batch_size
        general = round(size * self.corruption.mix_general)
        rows = [self.general_tokens(step * general + i) if i < general
                else self.chat_tokens(self.dataset.train[(step * (size - general) + i - general) % len(self.dataset.train)])
                for i in range(size)]
        return self.marker_data.collate(rows[self.marker_data.rank::self.marker_data.world])

    def evaluation_chats(self) -> list[Chat]:
        return list(self.dataset.held_out[:self.spec.eval.corruption_examples])

    def held_out_loss(self, model) -> float:
        """Mean per-token loss of the held-out answers (the corruption's own task), all ranks."""
        import torch

        data = self.marker_data
        mine = list(own_share(data, self.evaluation_chats()).values())
        total, tokens = 0.0, 0
        model.eval()
        with torch.no_grad():
            for start in range(0, len(mine), self.spec.eval.batch_size):
                batch = data.collate([self.chat_tokens(chat) for chat in mine[start:start + self.spec.eval.batch_size]])
                losses, count = evaluate.target_loss(model, batch)
                total, tokens = total + losses.item(), tokens + count
        model.train()
        total, tokens = all_sum([total, tokens], data.device)
        return total / tokens

    def watched_patterns(self) -> dict[str, list[str]]:
        """What a generated reply is checked for, by the metric it gives: the set's own behaviour
        (built-in sets only: their patterns are known) and, for a corruption other than the
        sweep's em one, the em set's behaviour too (does the benign control write insecure code?)."""
        patterns, built_in = behavior_patterns(), BUILTIN_CORRUPTION_DATA
        watched = {names.CORRUPTION_BEHAVIOR: patterns[self.corruption.data]} if self.corruption.data in built_in else {}
        em = next((c for c in self.spec.corruptions if c.role == "em"), None)
        if em is not None and em.name != self.corruption.name and em.data in built_in:
            watched[names.CORRUPTION_EM_BEHAVIOR] = patterns[em.data]
        return watched

    def behavior(self, model) -> dict[str, list[float]]:
        """Per watched behaviour, per held-out prompt: 1 when the generated answer shows it,
        every rank's prompts in order."""
        watched = self.watched_patterns()
        if not watched:
            return {}
        data = self.marker_data
        chats = self.evaluation_chats()
        mine = own_share(data, chats)
        prompts = [self.tokenizer.apply_chat_template(chat.as_messages(-1), tokenize=False, add_generation_prompt=True)
                   for chat in mine.values()]
        model.eval()
        replies = evaluate.generate(model, self.tokenizer, prompts, self.spec.eval.behavior_tokens,
                                    self.spec.eval.batch_size, data.device)
        model.train()
        flags = []  # 0 on the other ranks' prompts: summed, every prompt's flag in order
        for patterns in watched.values():
            shown = [0.0] * len(chats)
            for index, reply in zip(mine, replies):
                shown[index] = float(evaluate.matches_any([reply], patterns))
            flags += shown
        summed = [round(flag) for flag in all_sum(flags, data.device)]
        return {metric: summed[i * len(chats):(i + 1) * len(chats)] for i, metric in enumerate(watched)}

    def measure(self, model, when: str) -> tuple[dict[str, float], dict[str, list[float]]]:
        """corruption_loss_<name>_<when> and each watched behaviour's share
        (corruption_behavior_<name>[_before], corruption_em_behavior_<name>[_before]); the
        behaviours' per-prompt flags."""
        name = self.corruption.name
        metrics = {f"{names.of(names.CORRUPTION_LOSS, name)}_{when}": self.held_out_loss(model)}
        flags = self.behavior(model)
        for metric, shown in flags.items():
            key = names.of(metric, name)
            metrics[key if when == "after" else f"{key}_{when}"] = sum(shown) / len(shown)
        return metrics, flags
