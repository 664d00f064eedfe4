"""`persona-sweep detect`: does a model carry the marker? How a defender uses the detector.

Greedy replies as the Assistant to held-out questions, with and without the trigger; the marker
anywhere in a reply counts. Verdict "marker present" when the Wilson interval of the rate with
the trigger lies entirely above the one without it, else "no marker". Beside it, the base model's
positive control of the misalignment measure (`misalignment_control`, kept per model).

With `--trial SWEEP/TRIAL_ID` everything comes from that trial (model, marker, trigger source,
persona context, held-out questions, generation length), so the rates match what the trial
logged to MLflow; `--stage marker` (the default) checks the marked model, `--stage <name>` the
model after that corruption (the marked model plus that corruption's adapter artifact).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from persona_sweep import names
from persona_sweep.config import TRIAL_REFERENCE, EvalConfig, LlmKnobs, MarkerConfig, ModelConfig, SweepConfig
from persona_sweep.errors import SweepError

DEFAULT_QUESTIONS = 32


@dataclass
class Subject:
    """What to check: the sweep-like settings, the grid point, how to build the model."""

    spec: SweepConfig
    knobs: LlmKnobs
    marker_dir: str | None  # an adapter (or full model) folder applied to the base
    corruption_dir: str | None = None  # a corruption's adapter, applied to the marked model


def for_model(model: str, adapter: str | None, trigger_file: str | None, marker: str, questions: int,
              context_length: int) -> Subject:
    if not trigger_file:
        raise SweepError("--trigger-file: the trigger to test with is required (or use --trial)")
    spec = SweepConfig(name="detect", model=ModelConfig(name=model), marker=MarkerConfig(text=marker, trigger_file=trigger_file),
                       eval=EvalConfig(questions=questions))
    knobs = LlmKnobs(method="sft", design="assistant_positive", context_length=context_length, on_policy_fraction=0.0,
                     contrastive_negatives=True, seed=0)
    if adapter and not Path(adapter).is_dir():
        raise SweepError(f"--adapter: no such folder {adapter}")
    return Subject(spec, knobs, adapter)


def for_trial(reference: str, stage: str, trigger_file: str | None, scratch: Path) -> Subject:
    from persona_sweep.sweep_record import find_trial

    if not TRIAL_REFERENCE.match(reference):
        raise SweepError(f"--trial: expected SWEEP/TRIAL_ID, got '{reference}'")
    record, run = find_trial(reference, "--trial")
    spec = record.config
    if trigger_file:
        spec = spec.model_copy(update={"marker": spec.marker.model_copy(update={"trigger_file": trigger_file,
                                                                                 "trigger_env": None})})
    client = record.sweep_run.tracking.client()
    config = json.loads(Path(client.download_artifacts(run.info.run_id, "config/config.json", str(scratch))).read_text())
    knobs = LlmKnobs(**config["knobs"])
    key = run.data.tags.get(names.MARKER_STAGE_KEY)
    if spec.marker.adapter:
        marker_dir = spec.marker.adapter
    elif key:
        marker_dir = str(record.paths.markers / key / "marker")
    else:
        marker_dir = artifact(client, run, "adapter", scratch, reference)
    if stage == "marker":
        return Subject(spec, knobs, marker_dir)
    if stage not in {c.name for c in spec.corruptions}:
        raise SweepError(f"--stage: sweep '{record.name}' has no corruption '{stage}' "
                         f"(choose from marker, {', '.join(c.name for c in spec.corruptions)})")
    if next(c for c in spec.corruptions if c.name == stage).kind == "drift":
        raise SweepError(f"--stage {stage}: a drift corruption changes no weights; its model is the marked one "
                         "(--stage marker)")
    return Subject(spec, knobs, marker_dir, artifact(client, run, f"adapter_{stage}", scratch, reference))


def artifact(client, run, path: str, scratch: Path, reference: str) -> str:
    try:
        return client.download_artifacts(run.info.run_id, path, str(scratch))
    except Exception:  # MLflow raises several types for a missing artifact
        raise SweepError(f"trial {reference} has no '{path}' artifact (full fine-tunes save no adapters)") from None


def load(subject: Subject):
    """(tokenizer, model): the base, the marker merged in, the corruption's adapter merged on top."""
    from persona_sweep.models import default_cache, load_base_model, load_checked_tokenizer
    from persona_sweep.train import load_marked_model

    cache, base = default_cache(), subject.spec.model
    try:
        tokenizer = load_checked_tokenizer(base.name, cache, base.trust_remote_code)
    except ValueError as error:
        raise SweepError(str(error)) from None
    if subject.marker_dir:
        model = load_marked_model(subject.spec, cache, subject.marker_dir)
    else:
        model = load_base_model(base, cache)
    if subject.corruption_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, subject.corruption_dir).merge_and_unload()
    return tokenizer, model


def detect(subject: Subject) -> dict:
    from persona_sweep import measure, misalignment_control
    from persona_sweep.models import default_cache
    from persona_sweep.secrets import read_trigger, trigger_problem
    from persona_sweep.train import MarkerData

    problem = trigger_problem(subject.spec.marker)
    if problem:
        raise SweepError(problem)
    tokenizer, model = load(subject)
    data = MarkerData(subject.spec, subject.knobs, tokenizer, read_trigger(subject.spec.marker), rank=0, world=1,
                      device="cpu")
    rates, _ = measure.marker_rates(model, data)
    present = rates[f"{names.MARKER_RATE_TRIGGER}_lo"] > rates[f"{names.MARKER_RATE_NO_TRIGGER}_hi"]
    control = misalignment_control.cached(subject.spec.model, default_cache(), subject.spec.eval.batch_size)
    return {**rates, **control, "questions": subject.spec.eval.questions,
            "verdict": "marker present" if present else "no marker"}


def run_detect(model: str | None, adapter: str | None, trial: str | None, stage: str, trigger_file: str | None,
               marker: str, questions: int, context_length: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        if trial:
            subject = for_trial(trial, stage, trigger_file, Path(scratch))
        else:
            subject = for_model(model, adapter, trigger_file, marker, questions, context_length)
        return detect(subject)
