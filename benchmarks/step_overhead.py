"""Engine overhead: the demo's fine-tune through Ray Train + DeepSpeed vs a bare PyTorch loop.

Both run the embedded model with the demo's LoRA, global batch and steps, on the same cores and
the same data, in one run: the bare loop with all cores in one process, the engine with the
demo's workers (one core each, DeepSpeed ZeRO-2 over gloo). Evaluation is left out of both.
The last line is the step-time ratio engine / bare; the trial's fixed set-up time is printed too.

    .venv/bin/python benchmarks/step_overhead.py [--steps N]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def demo_spec(steps: int | None, trigger_file: Path, name: str):
    from persona_sweep.sweep_file import load_sweep

    demo = load_sweep(REPO / "sweeps" / "demo.yaml", [f"marker.trigger_file={trigger_file}"])
    steps = steps or demo.training.steps
    return load_sweep(REPO / "sweeps" / "demo.yaml", [
        f"name={name}", f"marker.trigger_file={trigger_file}", f"training.steps={steps}",
        "grid.context_length=[64]", "grid.on_policy_fraction=[0.0]", "grid.seed=[0]",
        f"eval.logprob_every={steps}", f"training.checkpoint_every={steps}", "scheduler.type=none"])


def bare_loop(spec, trigger: str) -> float:
    """Plain PyTorch: same model, LoRA, data and batch; mean step time over all steps, as the engine logs it."""
    import torch

    from persona_sweep.train import MarkerData, build_model

    torch.set_num_threads(os.cpu_count() or 1)
    knobs = spec.trials()[0]
    tokenizer, model = build_model(spec, knobs["seed"])
    data = MarkerData(spec, knobs, tokenizer, trigger, rank=0, world=1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.training.lr)
    model.train()
    times = []
    for step in range(spec.training.steps):
        tick = time.perf_counter()
        loss = model(**data.batch(step)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - tick)
    return sum(times) / len(times)


def engine_run(spec) -> tuple[float, float]:
    """The real engine; reads the trial's step time and set-up time back from MLflow."""
    from persona_sweep import engine, tracking

    record = engine.create_sweep(spec)
    engine.connect(None)
    engine.fit(record)
    (run,) = tracking.child_runs(record.sweep_run.tracking, record.sweep_run.experiment_id)
    client = record.sweep_run.tracking.client()
    # step_time_s is the running mean over all steps; its last value covers the whole trial.
    history = sorted(client.get_metric_history(run.info.run_id, "step_time_s"), key=lambda m: m.step)
    return history[-1].value, run.data.metrics["setup_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        os.environ["PERSONA_SWEEP_HOME"] = str(Path(folder) / "home")
        trigger_file = Path(folder) / "trigger"
        trigger_file.write_text("~bench-trigger~")
        spec = demo_spec(args.steps, trigger_file, f"bench-{int(time.time())}")
        bare_s = bare_loop(spec, trigger_file.read_text())
        print(f"bare PyTorch loop: {bare_s:.2f} s/step (batch {spec.training.batch_size}, {os.cpu_count()} threads)")
        engine_s, setup_s = engine_run(spec)
        print(f"engine (Ray Train, {spec.resources.workers_per_trial} workers, DeepSpeed ZeRO-{spec.training.zero_stage}): "
              f"{engine_s:.2f} s/step")
        print(f"trial fixed set-up (trial start to first step): {setup_s:.1f} s")
        print(f"step-time ratio engine/bare: {engine_s / bare_s:.2f}x")


if __name__ == "__main__":
    main()
