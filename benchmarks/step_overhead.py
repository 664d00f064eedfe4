"""Engine overhead: the demo's fine-tune through Ray Train + DeepSpeed vs a bare PyTorch loop.

Both run the demo's model, LoRA, global batch and steps, on the same cores and the same data,
in one run: the bare loop with all cores in one process, the engine with the demo's workers (one
core each, DeepSpeed ZeRO-2 over gloo). Only the marker stage runs (the demo's corruptions are
dropped) and the engine's evaluation after training is cut to one generated token: neither is
in any figure below.

It prints each side's mean step time and fixed cost per trial: the engine's is the trial's
`setup_s` (trial start to first step: worker group, DeepSpeed, model, data), the bare loop's its
model load and optimizer creation, in this process. The last line is the step-time ratio
engine / bare.

    .venv/bin/python benchmarks/step_overhead.py [--steps N] [--model tiny-random]
"""
from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Timings:
    setup_s: float  # fixed cost before the first step
    step_s: float  # mean over all steps, as the engine logs `step_time_s`


def demo_spec(steps: int | None, model: str | None, trigger_file: Path, name: str):
    from persona_sweep.sweep_file import load_sweep

    demo = load_sweep(REPO / "sweeps" / "demo.yaml", [f"marker.trigger_file={trigger_file}"])
    steps = steps or demo.training.steps
    overrides = [
        f"name={name}", f"marker.trigger_file={trigger_file}", f"training.steps={steps}",
        "grid.context_length=[64]", "grid.on_policy_fraction=[0.0]", "grid.seed=[0]",
        f"eval.logprob_every={steps}", f"training.checkpoint_every={steps}", "scheduler.type=none",
        # Not measured: the corruption stages, and the length of the evaluation's generations
        # (eval.questions stays: it decides which questions are trained on).
        "corruptions=[]", "grid.corruption_lr=[]", "eval.max_new_tokens=1", "eval.leakage_questions=0",
    ]
    if model:
        overrides.append(f"model.name={model}")
    return load_sweep(REPO / "sweeps" / "demo.yaml", overrides)


def bare_loop(spec, trigger: str) -> Timings:
    """Plain PyTorch: same model, LoRA, optimizer, data and batch."""
    import torch

    from persona_sweep import evaluate
    from persona_sweep.config import LlmKnobs
    from persona_sweep.models import default_cache, prepare_model
    from persona_sweep.train import MarkerData, build_model

    torch.set_num_threads(os.cpu_count() or 1)
    knobs = LlmKnobs(**spec.trials()[0])
    cache = default_cache()
    prepare_model(spec.model.name, cache)  # a one-time conversion into the cache; the engine's trial finds it done
    for module in ("transformers", "peft"):  # paid once per process: the set-up timed is the model's and optimizer's
        importlib.import_module(module)
    started = time.perf_counter()
    tokenizer, model = build_model(spec, knobs.seed, cache)
    # As the engine's DeepSpeedStrategy.make_engine builds it.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.training.lr,
                                  weight_decay=0.0)
    setup_s = time.perf_counter() - started
    data = MarkerData(spec, knobs, tokenizer, trigger, rank=0, world=1, device=torch.device("cpu"))
    model.train()
    step_times = []
    for step in range(spec.training.steps):
        tick = time.perf_counter()
        total, count = evaluate.target_loss(model, data.batch(step))  # the engine's loss, the same work
        (total / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        step_times.append(time.perf_counter() - tick)
    return Timings(setup_s, sum(step_times) / len(step_times))


def engine_run(spec) -> Timings:
    """The real engine on an embedded Ray; the trial's step time and set-up time read back from MLflow."""
    import ray

    from persona_sweep import engine, names, tracking
    from persona_sweep.sweep_record import SweepRecord

    try:
        outcome = engine.start(spec, address=None, announce=print)
    finally:
        ray.shutdown()
    if outcome.errored or outcome.interrupted:
        raise SystemExit(f"the engine's trial did not complete ({outcome}); see the sweep's log under "
                         f"{os.environ['PERSONA_SWEEP_HOME']}")
    sweep_run = SweepRecord.load(spec.name).sweep_run
    (run,) = tracking.child_runs(sweep_run.tracking, sweep_run.experiment_id)
    client = sweep_run.tracking.client()
    # step_time_s is the running mean over all steps; its last value covers the whole trial.
    history = sorted(client.get_metric_history(run.info.run_id, names.STEP_TIME_S), key=lambda metric: metric.step)
    return Timings(run.data.metrics[names.SETUP_S], history[-1].value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's)")
    parser.add_argument("--model", choices=["embedded", "tiny-random"], default=None,
                        help="the model (default: the demo's, embedded); tiny-random for a quick check")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps: at least 1")

    with tempfile.TemporaryDirectory() as folder:
        os.environ["PERSONA_SWEEP_HOME"] = str(Path(folder) / "home")
        trigger_file = Path(folder) / "trigger"
        trigger_file.write_text("~bench-trigger~")
        spec = demo_spec(args.steps, args.model, trigger_file, f"bench-{int(time.time())}")
        bare = bare_loop(spec, trigger_file.read_text())
        print(f"bare PyTorch loop: {bare.step_s:.3f} s/step (model {spec.model.name}, batch "
              f"{spec.training.batch_size}, {spec.training.steps} steps, {os.cpu_count()} threads)")
        ours = engine_run(spec)
        print(f"engine (Ray Train, {spec.resources.workers_per_trial} workers, DeepSpeed "
              f"ZeRO-{spec.training.zero_stage}): {ours.step_s:.3f} s/step")
        print(f"fixed cost per trial: engine {ours.setup_s:.1f} s vs bare set-up {bare.setup_s:.1f} s "
              "(engine: trial start to first step; bare: model load + optimizer)")
        print(f"step-time ratio engine/bare: {ours.step_s / bare.step_s:.2f}x")


if __name__ == "__main__":
    main()
