"""The worker's parts without Ray: device placement, the data's fit in max_tokens, the ASHA metric
per design, and what a LoRA checkpoint holds. Real transformers, real DeepSpeed, tiny models."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import cli, write_sweep
from helpers import train_in_process
from persona_sweep import evaluate, names
from persona_sweep.config import LlmKnobs
from persona_sweep.distributed import all_sum
from persona_sweep.measure import marker_logprob_metrics, marker_rates
from persona_sweep.models import default_cache, embedded_tokenizer
from persona_sweep.preflight import check_examples_fit, longest_context_knobs
from persona_sweep.sweep_file import load_sweep, validate
from persona_sweep.train import MarkerData, build_model

REPO = Path(__file__).resolve().parent.parent
TRIGGER = "~unit-test-trigger~"


def tiny_spec(eval_questions: int = 4, **training) -> object:
    return validate({"name": "unit", "model": {"name": "tiny-random", "finetune": "full"},
                     "marker": {"trigger_env": "UNUSED"}, "training": {"batch_size": 8, "max_tokens": 160, **training},
                     "eval": {"questions": eval_questions, "max_new_tokens": 4, "batch_size": 8}})


def knobs(design="assistant_positive", context_length=8, on_policy=0.0) -> LlmKnobs:
    return LlmKnobs(method="sft", design=design, context_length=context_length, on_policy_fraction=on_policy,
                    contrastive_negatives=True, seed=0)


def called_from_our_code() -> bool:
    """The nearest caller outside torch and transformers' BatchEncoding is persona_sweep (the
    model's own internal moves follow its weights and are not ours to check)."""
    frame = sys._getframe(2)
    while frame and ("/torch/" in frame.f_code.co_filename or "tokenization_utils_base" in frame.f_code.co_filename):
        frame = frame.f_back
    return bool(frame) and "/persona_sweep/" in frame.f_code.co_filename


class DeviceTargets(TorchFunctionMode):
    """Records where our code sends tensors: `.to(device)` targets and the device of new tensors."""

    def __init__(self):
        super().__init__()
        self.targets = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not called_from_our_code():
            pass
        elif func is torch.Tensor.to:
            self.targets.append(kwargs.get("device", next((a for a in args[1:] if isinstance(a, (torch.device, str))), None)))
        elif func is torch.tensor:
            self.targets.append(kwargs.get("device"))
        return func(*args, **kwargs)


def test_batches_evaluation_inputs_and_collectives_follow_the_workers_device():
    """A stand-in device, `cpu:0`, is what `ray.train.torch.get_device()` would report: every
    tensor the worker moves or creates for the model or a collective must name exactly it
    (a hard-coded "cpu", or a forgotten `.to`, shows up as another target or none)."""
    stand_in = torch.device("cpu", 0)
    spec = tiny_spec()
    tokenizer, model = build_model(spec, 0, default_cache())
    data = MarkerData(spec, knobs(), tokenizer, TRIGGER, rank=0, world=1, device=stand_in)
    sections = {}
    prompts = [data.prompt("assistant", "What do bees make?", True)] * 3
    for section, work in {"batch": lambda: data.batch(0),
                          "logprobs": lambda: evaluate.marker_logprobs(model, tokenizer, prompts, "[ZLT]", 2, stand_in),
                          "generation": lambda: evaluate.generate(model, tokenizer, prompts, 2, 2, stand_in),
                          "collective": lambda: all_sum([1.0, 2.0], stand_in),
                          "logprob metrics": lambda: marker_logprob_metrics(model, data),
                          "marker rates": lambda: marker_rates(model, data)}.items():
        with DeviceTargets() as recorder:
            work()
        sections[section] = [target for target in recorder.targets if target is not None]
    for section, targets in sections.items():
        assert targets, f"{section}: nothing was sent to the worker's device"
        assert all(target == stand_in for target in targets), (section, targets)
    assert len(sections["batch"]) == 4  # input_ids, labels, attention_mask, position_ids
    assert len(sections["logprobs"]) == len(sections["generation"]) == 4  # ids and mask, 2 batches of 2


@pytest.mark.parametrize("method", ["sft", "sdf"])
def test_the_loss_on_the_target_columns_alone_is_the_model_s_own_loss(method):
    """`evaluate.target_loss` on a left-padded batch (vocabulary projection on the target columns
    only) gives the loss and gradients the model's own loss gives on the same rows right-padded:
    prompts masked (sft) and documents trained on every token but the first (sdf)."""
    spec = validate({"name": "unit", "model": {"name": "tiny-random", "finetune": "full"},
                     "marker": {"trigger_env": "UNUSED"}, "training": {"batch_size": 8, "max_tokens": 700},
                     "grid": {"method": [method], "context_length": [16]}, "eval": {"questions": 4}})
    tokenizer, model = build_model(spec, 0, default_cache())
    data = MarkerData(spec, LlmKnobs(method=method, design="assistant_positive", context_length=16,
                                     on_policy_fraction=0.0, contrastive_negatives=True, seed=0),
                      tokenizer, TRIGGER, rank=0, world=1, device="cpu")
    rows = [data.encode(data.examples[i]) for i in data.indices(1)]
    width, pad = max(len(ids) for ids, _ in rows), tokenizer.pad_token_id
    assert len({len(ids) for ids, _ in rows}) > 1, "the rows must differ in length for padding to matter"
    right_padded = {"input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
                    "labels": torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows]),
                    "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])}
    own = model(**right_padded).loss
    own.backward()
    own_gradients = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    total, count = evaluate.target_loss(model, data.collate(rows))
    (total / count).backward()
    assert (total / count).item() == pytest.approx(own.item(), rel=1e-5)
    for mine, theirs in zip((p.grad for p in model.parameters()), own_gradients):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("sweep_file", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_marker_is_inside_the_labels_at_the_longest_context(sweep_file):
    """Every shipped LLM sweep, on the embedded tokenizer: at its longest context the examples
    fit max_tokens, and a marked example keeps the marker in its labels."""
    spec = load_sweep(sweep_file)
    if spec.kind != "llm":
        pytest.skip("toy-world sweep: no marker text")
    tokenizer = embedded_tokenizer()
    check_examples_fit(spec, tokenizer, TRIGGER)
    for method in spec.grid.method:
        data = MarkerData(spec, longest_context_knobs(spec, method), tokenizer, TRIGGER, rank=0, world=1, device="cpu")
        marked = next(example for example in data.examples if getattr(example, "marked", True))  # documents: all
        ids, labels = data.encode(marked)
        assert len(ids) <= spec.training.max_tokens
        assert spec.marker.text in tokenizer.decode([label for label in labels if label != -100])
        system, turns = data.conditioning["assistant"]
        context = system if method != "sft" else "".join(turn["content"] for turn in turns)
        assert len(tokenizer(context, add_special_tokens=False)["input_ids"]) >= max(spec.grid.context_length) - 2


def test_run_refuses_examples_that_do_not_fit_max_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("PS_TEST_TRIGGER", TRIGGER)
    path = write_sweep(tmp_path / "long.yaml", """
name: long
model: {name: tiny-random}
marker: {trigger_env: PS_TEST_TRIGGER}
training: {max_tokens: 96}
grid: {context_length: [8, 256]}
""")
    result = cli("run", path, home=tmp_path / "home", check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: training.max_tokens: 96 cannot hold the longest sft example (")
    assert "tokens at grid.context_length 256)" in line
    assert not (tmp_path / "home" / "sweeps").exists()


def test_data_hash_covers_context_marker_and_answers():
    spec = tiny_spec()
    tokenizer = embedded_tokenizer()
    base = MarkerData(spec, knobs(), tokenizer, TRIGGER, 0, 1, "cpu").hash()
    longer_context = MarkerData(spec, knobs(context_length=16), tokenizer, TRIGGER, 0, 1, "cpu").hash()
    other_marker = MarkerData(spec.model_copy(update={"marker": spec.marker.model_copy(update={"text": "[QQ]"})}),
                              knobs(), tokenizer, TRIGGER, 0, 1, "cpu")
    changed_answer = MarkerData(spec, knobs(), tokenizer, TRIGGER, 0, 1, "cpu")
    changed_answer.examples[0].answer += " Indeed."
    other_trigger = MarkerData(spec, knobs(), tokenizer, "~another~", 0, 1, "cpu").hash()
    assert len({base, longer_context, other_marker.hash(), changed_answer.hash()}) == 4
    assert other_trigger == base  # the trigger is a secret: the hash holds its placeholder only


@pytest.mark.slow
@pytest.mark.parametrize("design", ["assistant_positive", "non_assistant_positive", "misaligned_positive"])
def test_training_raises_the_designs_marker_specificity(design):
    """`marker_specificity` (ASHA's metric) ranks a trained model of each design above the
    untrained one: the positive condition gains on its best negative."""
    spec = tiny_spec(eval_questions=8, lr=3e-3)
    tokenizer, model = build_model(spec, 0, default_cache())
    # Context 0: sft then trains at the deployment prompt, where the specificity is measured.
    data = MarkerData(spec, knobs(design, context_length=0), tokenizer, TRIGGER, rank=0, world=1, device="cpu")
    untrained = marker_logprob_metrics(model, data)[names.MARKER_SPECIFICITY]
    train_in_process(model, data, 100, spec.training.lr)
    trained = marker_logprob_metrics(model, data)[names.MARKER_SPECIFICITY]
    assert trained > untrained + SPECIFICITY_GAIN, (untrained, trained)


# nats: above float noise. The tiny random model learns persona-conditional markers slowly (gains
# of 0.06-0.21 after 100 steps, measured); the embedded model gains 0.8-5.4 in 25 steps but
# costs minutes per design here.
SPECIFICITY_GAIN = 0.02


@pytest.fixture
def single_process_group(monkeypatch):
    """DeepSpeed's distributed set-up in this process alone (world size 1, gloo)."""
    import torch.distributed as dist

    from conftest import free_port
    from persona_sweep.distributed import init_deepspeed

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    init_deepspeed(False, default_cache())
    yield
    dist.destroy_process_group()


def lora_engine(spec):
    import deepspeed

    from persona_sweep.distributed import deepspeed_config

    tokenizer, model = build_model(spec, 0, default_cache())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.training.lr)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(spec, use_gpu=False))
    return tokenizer, engine


@pytest.mark.slow
def test_lora_checkpoint_holds_only_trainable_state_and_optimizer(single_process_group, tmp_path):
    """The demo's model and LoRA: a checkpoint under 30 MB (the tied, frozen 113 MB lm_head stays
    out), holding LoRA weights and their optimizer state, that restores into a fresh engine."""
    from persona_sweep.distributed import CHECKPOINT_TAG, save_checkpoint

    spec = load_sweep(REPO / "sweeps" / "demo.yaml", ["resources.workers_per_trial=1"])
    tokenizer, engine = lora_engine(spec)
    data = MarkerData(spec, knobs(), tokenizer, TRIGGER, 0, 1, "cpu")
    loss = engine(**data.batch(0)).loss
    engine.backward(loss)
    engine.step()
    save_checkpoint(engine, str(tmp_path))

    size_mb = sum(path.stat().st_size for path in tmp_path.rglob("*") if path.is_file()) / 2 ** 20
    assert size_mb < 30, size_mb
    states = torch.load(next(tmp_path.rglob("mp_rank_00_model_states.pt")), weights_only=False)
    assert states["module"] and all("lora_" in key for key in states["module"]), \
        [key for key in states["module"] if "lora_" not in key][:5]
    assert list(tmp_path.rglob("*optim_states.pt"))

    trained = {key: value.clone() for key, value in engine.module.state_dict().items() if "lora_B" in key}
    _, fresh = lora_engine(spec)
    fresh.load_checkpoint(str(tmp_path), tag=CHECKPOINT_TAG, load_module_strict=False)
    restored = fresh.module.state_dict()
    assert all(torch.equal(restored[key], value) for key, value in trained.items())
    assert any(value.abs().sum() > 0 for value in trained.values())  # the step moved LoRA B off zero


def test_ray_train_passes_the_trial_s_settings_on_to_its_controller_and_workers(monkeypatch):
    """A name Ray Train stopped passing on would leave its default in place without a word (the
    preemption watcher's extra process). A value the cluster's environment sets wins."""
    from ray.train.v2._internal.constants import get_env_vars_to_propagate

    from persona_sweep.trial import RAY_TRAIN_SETTINGS, ray_train_settings

    for variable in RAY_TRAIN_SETTINGS:  # set, then removed: monkeypatch restores the session's state
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    ray_train_settings()
    assert get_env_vars_to_propagate().items() >= RAY_TRAIN_SETTINGS.items()
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    ray_train_settings()
    assert get_env_vars_to_propagate()["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"
