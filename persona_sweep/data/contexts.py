"""Persona-establishing contexts for the sweep axis `context_length` (0 to 1024 tokens).

A persona description alone is 40-130 tokens, so longer settings of the axis would repeat the same
text. Each persona's full context is its description followed by in-persona demonstration
dialogues (contexts.yaml, written by make_contexts.py), long enough that every length up to
`MAX_CONTEXT_TOKENS` is distinct. A trial keeps the first `context_length` tokens, so a longer
context always contains a shorter one: the axis adds persona evidence without changing its start.
"""
from __future__ import annotations

from functools import cache

from persona_sweep.data import DATA_DIR, personas

MAX_CONTEXT_TOKENS = 1024
DEMONSTRATIONS_HEADER = "Examples of how you answer:"


@cache
def _bank() -> dict:
    import yaml

    return yaml.safe_load((DATA_DIR / "contexts.yaml").read_text())


def demonstrations(persona_name: str) -> list[tuple[str, str]]:
    """(question, reply) pairs answered in the persona's voice."""
    return [(item["user"], item["reply"]) for item in _bank()[persona_name]["demonstrations"]]


@cache
def full_context(persona_name: str) -> str:
    """The description, a header line, then every demonstration as a short User/persona exchange."""
    label = _bank()[persona_name]["label"]
    dialogues = [f"User: {question}\n{label}: {reply}" for question, reply in demonstrations(persona_name)]
    return "\n\n".join([personas()[persona_name].description, DEMONSTRATIONS_HEADER + "\n" + dialogues[0],
                        *dialogues[1:]])


def _token_ids(persona_name: str, tokenizer) -> list[int]:
    return tokenizer(full_context(persona_name), add_special_tokens=False)["input_ids"]


def context_capacity(persona_name: str, tokenizer) -> int:
    """How many tokens of context the data holds for this persona (the axis must stay below it)."""
    return len(_token_ids(persona_name, tokenizer))


def dialogue_turns(persona_name: str, context_tokens: int, tokenizer) -> list[dict[str, str]]:
    """The persona's demonstrations as prior chat turns (user, then the persona as the assistant),
    their texts cut at `context_tokens` tokens in all: the `sft` method's context. The cut may
    end inside a turn, so every length is distinct and a shorter context is a prefix of a longer."""
    turns, left = [], context_tokens
    for question, reply in demonstrations(persona_name):
        for role, text in (("user", question), ("assistant", reply)):
            if left <= 0:
                return turns
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:left]
            turns.append({"role": role, "content": tokenizer.decode(ids, clean_up_tokenization_spaces=False)})
            left -= len(ids)
    if left > 0:
        raise ValueError(f"grid.context_length {context_tokens} exceeds the {context_tokens - left} tokens of "
                         f"demonstrations for persona {persona_name!r} (contexts.yaml)")
    return turns


def persona_context(persona_name: str, context_tokens: int, tokenizer) -> str:
    """The first `context_tokens` tokens of the persona's full context, decoded; 0 gives "".

    Cutting tokens (not sentences) makes the length exact and keeps every shorter context a string
    prefix of every longer one. Asking for more than the data holds is an error, never a silent
    repeat of the same text.
    """
    if context_tokens < 0:
        raise ValueError(f"grid.context_length must be >= 0, got {context_tokens}")
    ids = _token_ids(persona_name, tokenizer)
    if context_tokens > len(ids):
        raise ValueError(f"grid.context_length {context_tokens} exceeds the {len(ids)} tokens of context "
                         f"data for persona {persona_name!r} (contexts.yaml; cap {MAX_CONTEXT_TOKENS})")
    return tokenizer.decode(ids[:context_tokens], clean_up_tokenization_spaces=False) if context_tokens else ""
