"""Reading a sweep file: YAML with unique keys and bounded size, dotted overrides, and the
kind's config class it is validated into. Errors are `SweepError`s of one line naming the file
or the field (`grid.method: unknown method 'x' ...`).

A sweep file is YAML with the top-level keys of its kind's config class (`SweepConfig` for
`kind: llm`, the default; `SfpSweepConfig` for `kind: sfp`). Unknown keys anywhere are errors.
"""
from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from persona_sweep.config import SweepConfig
from persona_sweep.errors import SweepError
from persona_sweep.sections import GridSweep
from persona_sweep.sfp.config import SfpSweepConfig

# What a file's `kind` may say, and the class it is read into. The runtime side of each kind
# (trial runner, checks, after-sweep hook) is `kinds.KINDS`, which this module never imports.
SWEEP_CLASSES: dict[str, type[GridSweep]] = {"llm": SweepConfig, "sfp": SfpSweepConfig}


def load_sweep(path: str | Path, overrides: list[str] = (), name: str | None = None) -> GridSweep:
    """The validated sweep; `name` (from --name) is set as text, never parsed as YAML."""
    raw = read_yaml(path)
    for override in overrides:
        apply_override(raw, override)
    if name is not None:
        raw["name"] = name
    return validate(raw)


MAX_SWEEP_FILE_BYTES = 1_000_000  # a sweep file is a page of settings; larger is a mistake
MAX_YAML_NODES = 100_000  # after aliases are expanded: a few anchors may not grow into a bomb


class UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML (no Python tags) that refuses a key written twice in one mapping, which plain
    YAML lets the last one win silently."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the SafeLoader refuses it below
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    if path.stat().st_size > MAX_SWEEP_FILE_BYTES:
        raise SweepError(f"{path}: {path.stat().st_size} bytes; a sweep file may have at most {MAX_SWEEP_FILE_BYTES}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SweepError(f"{path}: not UTF-8 text (byte {error.start})") from None
    raw = parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping of sections (name, marker, grid, ...)")
    return raw


def parse_yaml(text: str, where: str) -> Any:
    """Safe, duplicate-free YAML of bounded size; errors are one line naming `where`."""
    try:
        value = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None)
        detail = f": {problem}" if problem and "duplicate key" in problem else ""
        raise SweepError(f"{where}: not valid YAML{f' (line {mark.line + 1})' if mark else ''}{detail}") from None
    except RecursionError:
        raise SweepError(f"{where}: nested too deeply") from None
    if count_nodes(value, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise SweepError(f"{where}: more than {MAX_YAML_NODES} values once its aliases are expanded")
    return value


def count_nodes(value: Any, limit: int) -> int:
    """Values in `value` with shared (aliased) parts counted each time they appear; stops past
    `limit`, so an alias bomb is never walked in full."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def apply_override(raw: dict[str, Any], override: str) -> None:
    """`training.steps=50` or `grid.method=[sft]`: values are parsed as YAML."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise SweepError(f"override '{override}': expected key=value, e.g. training.steps=50")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SweepError(f"{key}: '{part}' is not a section")
    node[leaf] = parse_yaml(text, f"override '{key}'")


def validate(raw: dict[str, Any]) -> GridSweep:
    kind = raw.get("kind", "llm")
    if not isinstance(kind, str) or kind not in SWEEP_CLASSES:
        raise SweepError(f"kind: unknown kind {str(kind)[:40]!r} (choose from {', '.join(SWEEP_CLASSES)})")
    model = SWEEP_CLASSES[kind]
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise SweepError(first_error(error)) from None


def first_error(error: ValidationError) -> str:
    detail = error.errors()[0]
    field = ".".join(str(part) for part in detail["loc"] if not isinstance(part, int))
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        message = "unknown key"
    elif detail["type"] == "missing":
        message = "required"
    # Checks across sections have no location of their own: their message names the fields.
    return f"{field}: {message}" if field else message
