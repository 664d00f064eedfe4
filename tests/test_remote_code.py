"""Python shipped with a model runs only when the sweep file says `model.trust_remote_code: true`:
a local model folder whose config names its own code (transformers' `auto_map`) is refused in
one line by default, and its code runs only with the flag (a sentinel file shows it ran)."""
from __future__ import annotations

import json
import shutil

import pytest

from persona_sweep.config import ModelConfig
from persona_sweep.models import build_tiny_random, default_cache, load_checked_tokenizer

CUSTOM_CONFIG = '''
import os
from pathlib import Path

from transformers import LlamaConfig

Path(os.environ["REMOTE_CODE_SENTINEL"]).write_text("the model's own code ran")


class CustomConfig(LlamaConfig):
    model_type = "custom-llama"
'''


@pytest.fixture
def custom_code_model(tmp_path, monkeypatch):
    folder = tmp_path / "custom-model"
    shutil.copytree(build_tiny_random(default_cache()), folder)
    config = json.loads((folder / "config.json").read_text())
    # A model type transformers does not know: only the folder's own code can read it.
    config.update(model_type="custom-llama", auto_map={"AutoConfig": "custom_config.CustomConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom_config.py").write_text(CUSTOM_CONFIG)
    sentinel = tmp_path / "ran"
    monkeypatch.setenv("REMOTE_CODE_SENTINEL", str(sentinel))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    return folder, sentinel


def test_remote_code_is_off_unless_the_sweep_file_turns_it_on(custom_code_model, tmp_path):
    folder, sentinel = custom_code_model
    assert ModelConfig().trust_remote_code is False
    with pytest.raises(ValueError, match=r"^model.name: cannot load .*`model.trust_remote_code: true` runs") as refused:
        load_checked_tokenizer(str(folder), tmp_path, ModelConfig(name=str(folder)).trust_remote_code)
    assert "\n" not in str(refused.value) and not sentinel.exists()

    load_checked_tokenizer(str(folder), tmp_path, ModelConfig(name=str(folder), trust_remote_code=True).trust_remote_code)
    assert sentinel.read_text() == "the model's own code ran"
