"""Hostile sweep files and overrides (6 generators x 45 examples, plus hand-written documents):
each one exits 2 with one line naming a field or the file,
prints no traceback and runs nothing.

Most cases run in-process through click's test runner (hundreds of generated files in seconds);
a handful run as real subprocesses of `run`, which must leave no sweep behind.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cli
from persona_sweep.cli import main
from persona_sweep.sweep_file import MAX_SWEEP_FILE_BYTES

REPO = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load((REPO / "sweeps" / "demo.yaml").read_text())
# Fields with stated bounds (all > 0), and where each lives in the file.
BOUNDED = ["training.steps", "training.lr", "training.batch_size", "training.max_tokens", "model.lora_rank",
           "model.lora_alpha", "eval.questions", "eval.max_new_tokens", "eval.batch_size", "resources.workers_per_trial"]
GRID_AXES = ["grid.context_length", "grid.on_policy_fraction", "grid.seed", "grid.method"]  # never empty
SETTINGS = settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Hand-written adversarial documents: Python tags, an alias bomb, duplicate keys, empty and
# multi-document files, deep nesting, tabs, a scalar, a list.
BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
ADVERSARIAL = [
    "name: x\nmodel: !!python/object/apply:os.system ['echo pwned']\n",
    "!!python/object:persona_sweep.config.SweepConfig {}\n",
    "name: x\nname: y\n",
    "name: x\ntraining: {steps: 5, steps: 6}\n",
    BOMB,
    "",
    "---\nname: a\n---\nname: b\n",
    "[" * 5000 + "]" * 5000,
    "name: x\n\ttraining: {}\n",
    "just a string",
    "- name: x\n",
    "name: !!binary aGVsbG8=\n",
    "name: x\nmarker: {trigger_file: t}\ngrid: {method: *undefined}\n",
    "? [a, b]\n: c\n",
]


def validate(runner: CliRunner, folder: Path, content: bytes | str, *overrides: str):
    path = folder / "sweep.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return runner.invoke(main, ["validate", str(path), *overrides]), path


def assert_refused(result, path: Path) -> None:
    """Exit 2, one line on stderr that starts with `error:` and names the file or a field."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    message = lines[0].removeprefix("error: ")
    assert str(path) in message or re.match(r"^(override '[^']*'|[^\s:]+): ", message), message


def with_value(dotted: str, value) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return raw


NOT_A_NUMBER = st.one_of(st.text(alphabet=st.characters(categories=["L", "So"]), min_size=1, max_size=30),
                         st.lists(st.integers(), min_size=1, max_size=3),
                         st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), min_size=1, max_size=2),
                         st.none())
OUT_OF_RANGE = st.one_of(st.integers(max_value=0), st.floats(max_value=0.0, allow_nan=False),
                         st.just(float("nan")), st.just(float("-inf")))


@pytest.fixture
def runner():
    return CliRunner()


@SETTINGS
@given(field=st.sampled_from(BOUNDED), value=st.one_of(NOT_A_NUMBER, OUT_OF_RANGE))
def test_a_bounded_field_with_a_wrong_type_or_out_of_range_is_refused_by_name(runner, tmp_path, field, value):
    result, path = validate(runner, tmp_path, yaml.safe_dump(with_value(field, value), allow_unicode=True))
    assert_refused(result, path)
    assert field.split(".")[-1] in result.stderr


@SETTINGS
@given(axis=st.sampled_from(GRID_AXES), value=st.one_of(st.just([]), st.lists(NOT_A_NUMBER, min_size=1, max_size=3),
                                                         st.lists(st.integers(max_value=-1), min_size=1, max_size=3)))
def test_a_grid_axis_with_bad_values_is_refused(runner, tmp_path, axis, value):
    result, path = validate(runner, tmp_path, yaml.safe_dump(with_value(axis, value), allow_unicode=True))
    assert_refused(result, path)


@SETTINGS
@given(section=st.sampled_from(["", "model.", "training.", "grid.", "eval.", "marker."]),
       key=st.text(alphabet=st.characters(categories=["L", "N", "So"]), min_size=1, max_size=20))
def test_an_unknown_key_anywhere_unicode_included_is_refused(runner, tmp_path, section, key):
    known = set(BASE) | {k for v in BASE.values() if isinstance(v, dict) for k in v} | {"kind", "corruptions",
                                                                                       "search", "scheduler"}
    if key in known:
        return
    result, path = validate(runner, tmp_path, yaml.safe_dump(with_value(section + key, 1), allow_unicode=True))
    assert_refused(result, path)


@SETTINGS
@given(depth=st.integers(min_value=1, max_value=3000), key=st.sampled_from(["name", "training", "grid", "zz"]))
def test_deep_nesting_is_refused(runner, tmp_path, depth, key):
    result, path = validate(runner, tmp_path, f"{key}: " + "[" * depth + "1" + "]" * depth + "\n")
    assert_refused(result, path)


@SETTINGS
@given(junk=st.binary(min_size=1, max_size=200))
def test_bytes_that_are_not_utf8_or_not_a_sweep_are_refused(runner, tmp_path, junk):
    result, path = validate(runner, tmp_path, b"name: x\n" + b"\xff" + junk)
    assert_refused(result, path)


# `training={}` is the one pair that is not hostile: an empty section takes every default.
HOSTILE_OVERRIDES = st.tuples(
    st.sampled_from(BOUNDED + GRID_AXES + ["training", "name.x", "grid.method.x", "=", ""]),
    st.sampled_from(["[", "{a: ", "!!python/object:os.system x", "&a [*a]", "-5", "abc", "[]", "{}",
                     "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"), "1e999"]),
).filter(lambda pair: pair != ("training", "{}"))


@SETTINGS
@given(override=HOSTILE_OVERRIDES)
def test_a_hostile_override_is_refused(runner, tmp_path, override):
    key, value = override
    result, path = validate(runner, tmp_path, yaml.safe_dump(BASE), f"{key}={value}")
    assert_refused(result, path)


@pytest.mark.parametrize("content", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_documents_are_refused(runner, tmp_path, content):
    result, path = validate(runner, tmp_path, content)
    assert_refused(result, path)


def test_duplicate_keys_and_the_alias_bomb_get_their_reason(runner, tmp_path):
    result, _ = validate(runner, tmp_path, "name: x\ntraining: {steps: 5, steps: 6}\n")
    assert "duplicate key 'steps'" in result.stderr
    result, _ = validate(runner, tmp_path, BOMB)
    assert "aliases are expanded" in result.stderr


def test_a_file_over_the_size_limit_is_refused_unread(runner, tmp_path):
    result, path = validate(runner, tmp_path, "# padding\n" * (MAX_SWEEP_FILE_BYTES // 10 + 1))
    assert_refused(result, path)
    assert f"at most {MAX_SWEEP_FILE_BYTES}" in result.stderr


@pytest.mark.parametrize("content", [ADVERSARIAL[0], BOMB, b"name: \xff\xfe\n", "name: x\nname: y\n",
                                     yaml.safe_dump(with_value("training.steps", -3))])
def test_run_refuses_in_a_real_process_and_leaves_nothing(tmp_path, content):
    (tmp_path / "sweep.yaml").write_bytes(content.encode() if isinstance(content, str) else content)
    result = cli("run", "sweep.yaml", home=None, cwd=tmp_path, check=False, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists()  # no home, no record, no Ray, no MLflow
