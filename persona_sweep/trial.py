"""One trial: what the driver hands it (`TrialConfig`), its Ray Train job, and its stages.

A trial of `kind: llm` is a Ray Train `TorchTrainer` started from inside a Tune function
trainable. Its workers run `trial_worker`, one recipe of plainly named stages:

    set-up -> marker stage (training, evaluation) -> for each corruption, from the same marked
    model: merge the marker adapter, train a fresh adapter on the corruption data, evaluation
    -> summary (with the last stage's report)

Every stage trains with the one DeepSpeed loop of `train.py`, through the worker's
`distributed.DeepSpeedStrategy`. A checkpoint carries the trial's `TrialState` (stage, steps
done in it, results so far, the marked model), so a resumed trial continues inside the stage it
was in and never trains a finished stage again. The marker stage is shared by trials that
differ only in corruption knobs (`marker_store`).

ASHA decides on the marker stage only: its reports carry `train_step` and the scheduler's
metric. Every later report repeats the marker stage's last ones, which ASHA has already
recorded at every rung (and `stop_last_trials=False` keeps max_t from stopping the trial), so a
trial ASHA let through runs all its corruptions, and a stopped trial runs none.
"""
from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_sweep import axis as assistant_axis
from persona_sweep import distributed, drift, measure, names, storage, vectors
from persona_sweep.config import LlmKnobs
from persona_sweep.corruption import CorruptionData, load_set, secret_problem
from persona_sweep.data import data_hash
from persona_sweep.data.control import MARKER_OBJECTIVE
from persona_sweep.data.conversations import load_domain
from persona_sweep.marker_store import MarkerStore, marker_key
from persona_sweep.measure import Evaluation
from persona_sweep.models import load_base_model, load_tokenizer, prepare_model
from persona_sweep.secrets import read_trigger, trigger_sha256
from persona_sweep.sections import GridSweep
from persona_sweep.tracking import SweepRun, TrialRun
from persona_sweep.train import (
    MarkerData,
    TrainingStage,
    build_model,
    corruption_trainable,
    load_marked_model,
    train,
    trains_all_weights,
)

if TYPE_CHECKING:
    import torch

MARKER = "marker"  # the stage names of a trial's state: "marker", each corruption's name, "done"
DONE = names.DONE_STAGE
# What a reusing trial replays from the stage that trained its marker.
MARKER_HISTORY = (names.TRAIN_STEP, names.LOSS, names.STEP_TIME_S, names.MARKER_SPECIFICITY,
                  names.MARKER_LOGPROB_TRIGGER, names.MARKER_LOGPROB_NO_TRIGGER, names.CONTROL_MARGIN,
                  names.CONTROL_MARGIN_MISALIGNED)


@dataclass(frozen=True)
class SweepPaths:
    """Every path a trial needs, fixed on the driver: trials run in Tune's trial folder and
    workers do not inherit the driver's environment, so neither may resolve one itself."""

    home: str  # $PERSONA_SWEEP_HOME
    cache: str  # $PERSONA_SWEEP_CACHE: converted models, tokenizers, compiled ops
    storage: str  # Tune's experiment folder (a path or an s3:// / gs:// URI); Train runs under <storage>/_train
    state: str  # the sweep's own folder in the home: stored marker stages, worker ids

    @property
    def train_storage(self) -> str:
        return storage.join(self.storage, "_train")

    def trial_checkpoints(self, trial_id: str) -> str:
        """The folder of a trial's checkpoints: its Ray Train run's."""
        return storage.join(self.train_storage, train_run_name(trial_id))

    @property
    def markers(self) -> Path:
        """Marked models that trials of this sweep share (`marker_store`)."""
        return Path(self.state) / "_markers"

    @property
    def baselines(self) -> Path:
        """Uncontrolled baselines that control trials of this sweep share (`baseline_stage`)."""
        return Path(self.state) / "_baselines"

    def placement_group_file(self, trial_id: str) -> Path:
        """The worker group's placement group, written by rank 0 (see `remove_lost_placement_group`)."""
        return Path(self.state) / "_pids" / f"{trial_id}.placement_group"

    @property
    def drivers_file(self) -> Path:
        """"RAY_SESSION JOB_ID" of each driver of the sweep (`engine.remove_placement_groups_left_by_earlier_drivers`)."""
        return Path(self.state) / "_pids" / "ray_jobs"

    def pid_file(self, trial_id: str, rank: int) -> Path:
        """Each worker writes its PID here as it starts (a restarted worker overwrites it), so an
        operator or a test can signal exactly that worker, not whatever a process title matches."""
        return Path(self.state) / "_pids" / f"{trial_id}.rank{rank}.pid"


@dataclass(frozen=True)
class TrialConfig:
    """What a trial gets from the driver: the same record for every rank of its workers."""

    trial_id: str
    knobs: dict[str, Any]  # this trial's point in the grid
    spec: GridSweep  # the sweep's validated config (SweepConfig / SfpSweepConfig)
    paths: SweepPaths
    sweep_run: SweepRun  # where the sweep is tracked (URI, retry deadline), its experiment and parent run
    provenance: dict[str, str]
    started: float  # wall-clock time the trial started (for its fixed set-up cost)


def train_run_name(trial_id: str) -> str:
    """The trial's Ray Train run, under `SweepPaths.train_storage`."""
    return f"train-{trial_id}"


def remove_lost_placement_group(path: Path) -> None:
    """A trial Tune retries after its node was lost: Ray reschedules the lost attempt's worker
    placement group onto the nodes left, where it holds their CPUs while the job lives (Ray
    Train's cleaner did not remove it, in our two-node test), and the retry's worker group waits
    for them forever. Rank 0 wrote its id: remove it first (already removed: nothing to do)."""
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    if not path.exists():
        return
    group = PlacementGroup(ray.PlacementGroupID.from_hex(path.read_text().strip()))
    if placement_group_table(group).get("state") not in (None, "REMOVED"):
        remove_placement_group(group)


# Ray Train settings a trial's `TorchTrainer` passes on to its controller and workers (Ray Train
# propagates these variables from the process that calls `fit`: `ray_train_settings`).
RAY_TRAIN_SETTINGS = {
    # Its preemption watcher (one more actor process per trial, polling for draining nodes) only
    # feeds `ray.train.get_preemption_info`, which trials never read: a lost node's trial
    # continues from its checkpoint either way.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # Its controller takes a report off a worker's one-slot queue when it polls the workers, every
    # 2 s by default, and the worker's next report waits for that: a tiny 40-step trial reporting
    # every 5 steps waited 12 of its 37 s (benchmarks/README.md). A poll is one small remote call
    # per worker.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
}


def ray_train_settings() -> None:
    """`RAY_TRAIN_SETTINGS` into this process's environment, where a cluster's own value wins."""
    for variable, value in RAY_TRAIN_SETTINGS.items():
        os.environ.setdefault(variable, value)


def run_llm_trial(trial: TrialConfig) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = trial.spec
    gpus = spec.resources.gpus_per_worker
    ray_train_settings()
    remove_lost_placement_group(trial.paths.placement_group_file(trial.trial_id))
    trainer = TorchTrainer(
        trial_worker,
        train_loop_config={"trial": trial},
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.resources.workers_per_trial, use_gpu=gpus > 0,
            resources_per_worker={"CPU": spec.resources.cpus_per_worker, **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(
            name=train_run_name(trial.trial_id), storage_path=trial.paths.train_storage,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=spec.training.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=spec.training.checkpoints_to_keep)),
    )
    trainer.fit()


# ---- a trial's state: what its checkpoints store and a restarted trial restores ---------------

@dataclass
class Results:
    """What a trial has measured so far; the checkpoint carries it from stage to stage."""

    report: dict[str, float] = field(default_factory=dict)  # the marker stage's last report: later ones repeat it
    pre: Evaluation | None = None  # the marked model's evaluation, before any corruption
    post: dict[str, Evaluation] = field(default_factory=dict)  # after each corruption, by its name
    metrics: dict[str, float] = field(default_factory=dict)  # every metric the run logged at its last step
    # Per corruption, its watched behaviours per held-out prompt on the marked model (the verdict's
    # "before"), by behaviour metric (`CorruptionData.measure`).
    domain_before: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # Per drift domain finished (`_capped` for the capped pass): its correlation sums (`drift.py`).
    drift: dict[str, list[float]] = field(default_factory=dict)
    # Control objectives, per corruption: the uncontrolled baseline's measurement (`baseline_stage`).
    baseline: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, saved: dict) -> Results:
        """From `to_json` (a marker-stage checkpoint of older versions stored `{}`; older
        corruption checkpoints kept one list of the set's own flags per corruption)."""
        domain_before = {name: flags if isinstance(flags, dict) else {names.CORRUPTION_BEHAVIOR: flags}
                         for name, flags in saved.get("domain_before", {}).items()}
        return cls(saved.get("report", {}), Evaluation(**saved["pre"]) if saved.get("pre") else None,
                   {name: Evaluation(**post) for name, post in saved.get("post", {}).items()},
                   saved.get("metrics", {}), domain_before, saved.get("drift", {}), saved.get("baseline", {}))


@dataclass
class TrialState:
    """Where a trial is: its stage (MARKER, a corruption's name, DONE), the steps done in it, its
    results and the marked model every corruption starts from. A checkpoint's STATE_FILE holds it."""

    stage: str = MARKER
    step: int = 0
    results: Results = field(default_factory=Results)
    marker: str | None = None  # the marked model's folder, once the marker stage is done

    def to_json(self) -> dict:
        return {"stage": self.stage, "step": self.step, "results": self.results.to_json(), "marker": self.marker}

    @classmethod
    def from_json(cls, saved: dict) -> TrialState:
        return cls(saved["stage"], saved["step"], Results.from_json(saved["results"]), saved.get("marker"))


# ---- one worker of a trial -------------------------------------------------------------------

@dataclass
class Worker:
    """What every stage of a trial uses on one worker."""

    trial: TrialConfig
    knobs: LlmKnobs
    strategy: distributed.DeepSpeedStrategy  # rank, device, DeepSpeed, collectives, reports
    trigger: str
    data: MarkerData
    run: TrialRun | None  # rank 0 only

    @property
    def spec(self):
        return self.trial.spec

    @property
    def cache(self) -> Path:
        return Path(self.trial.paths.cache)

    @property
    def rank(self) -> int:
        return self.strategy.rank

    @property
    def world(self) -> int:
        return self.strategy.world

    @property
    def device(self) -> torch.device:
        return self.strategy.device


def start_worker(trial: TrialConfig) -> Worker:
    """Set-up: this worker's PID file, its strategy (device, DeepSpeed's process group), its data
    and, on rank 0, its MLflow run."""
    import ray.train
    import torch

    spec, knobs = trial.spec, LlmKnobs.of_trial(trial.knobs)
    rank = ray.train.get_context().get_world_rank()
    pid_file = trial.paths.pid_file(trial.trial_id, rank)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))
    if rank == 0:
        trial.paths.placement_group_file(trial.trial_id).write_text(ray.get_runtime_context().get_placement_group_id())
    torch.set_num_threads(max(1, round(spec.resources.cpus_per_worker)))
    strategy = distributed.DeepSpeedStrategy.start(spec.resources.gpus_per_worker > 0, Path(trial.paths.cache))
    trigger = read_trigger(spec.marker)
    tokenizer = load_tokenizer(prepare_model(spec.model.name, Path(trial.paths.cache)), spec.model.trust_remote_code)
    data = MarkerData(spec, knobs, tokenizer, trigger, strategy.rank, strategy.world, strategy.device)
    worker = Worker(trial, knobs, strategy, trigger, data, None)
    if rank == 0:
        worker.run = open_run(worker)
        log_evaluated_prompts(worker)
    return worker


def log_evaluated_prompts(worker: Worker) -> None:
    """The deployment prompts every evaluation of the trial generates from, trigger as
    placeholder: an artifact, its hash a tag (equal for every method and context length)."""
    prompts = measure.evaluated_prompts(worker.data)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / names.EVAL_PROMPTS_ARTIFACT).write_text(json.dumps(prompts, indent=1))
        worker.run.log_artifacts(Path(folder))
    worker.run.set_tags({names.EVAL_PROMPT_HASH: data_hash(prompts)})


def corruption_training(spec, corruption) -> str:
    """What the corruption trains, as its params say it: `all weights` or `lora r=.. alpha=.. [rslora]`."""
    if trains_all_weights(spec, corruption):
        return "all-weights"
    rank, alpha = corruption.lora_rank or spec.model.lora_rank, corruption.lora_alpha or spec.model.lora_alpha
    return f"lora-r{rank}-alpha{alpha}" + ("-rslora" if corruption.rslora else "")


def open_run(worker: Worker):
    trial, spec = worker.trial, worker.spec
    params = {**trial.knobs, "trigger_sha256": trigger_sha256(worker.trigger), "model": spec.model.name,
              "finetune": spec.model.finetune, "steps": spec.training.steps, "lr": spec.training.lr,
              "batch_size": spec.training.batch_size, "zero_stage": spec.training.zero_stage,
              "world_size": worker.world}
    for corruption in spec.corruptions:
        if corruption.kind == "drift":
            params[f"corruption.{corruption.name}"] = (
                f"kind=drift domains={','.join(corruption.domains)} turns={corruption.turns} "
                f"positions={','.join(corruption.positions)} conversations={corruption.conversations} "
                f"capped={corruption.capped}")
            continue
        params[f"corruption.{corruption.name}"] = (
            f"role={corruption.role} data={corruption.data} steps={spec.corruption_steps(corruption, worker.knobs)} "
            f"lr={spec.corruption_lr(corruption, worker.knobs)} mix_general={corruption.mix_general} "
            f"trains={corruption_training(spec, corruption)}")
    tags = {**trial.provenance, names.DATA_HASH: worker.data.hash()}
    return TrialRun(trial.sweep_run, trial.trial_id, params, tags)


def trial_worker(config: dict) -> None:
    """Every worker of a trial, as one recipe: set-up -> marker stage -> each corruption stage ->
    summary (with the last stage's report), from wherever the last checkpoint left off."""
    worker = start_worker(config["trial"])
    state = resume(worker)
    if state.stage == DONE:  # killed after its last report: say so again, for Tune
        report_stage(worker, state, DONE)
    if state.stage == MARKER:
        state = marker_stage(worker, state.step)
        report_stage(worker, state, MARKER)
    for corruption in remaining_corruptions(worker.spec, state.stage):
        state = (drift_stage if corruption.kind == "drift" else corruption_stage)(worker, corruption, state)
        report_stage(worker, state, corruption.name)


def resume(worker: Worker) -> TrialState:
    """The state of the newest whole checkpoint (a fresh one without); the run says where it resumed."""
    saved = worker.strategy.restored_state(worker.trial.trial_id, worker.trial.paths.trial_checkpoints(worker.trial.trial_id))
    state = TrialState.from_json(saved) if saved else TrialState()
    if worker.run and state.stage != MARKER:
        worker.run.set_tags({names.RESUMED_STAGE: state.stage})
    return state


def remaining_corruptions(spec, stage: str) -> list:
    names_in_order = [c.name for c in spec.corruptions]
    if stage not in names_in_order:
        return []
    return spec.corruptions[names_in_order.index(stage):]


def next_stage(spec, after: str | None) -> str:
    """The stage after `after` (None: after the marker stage)."""
    order = [c.name for c in spec.corruptions]
    index = 0 if after is None else order.index(after) + 1
    return order[index] if index < len(order) else DONE


def report_stage(worker: Worker, state: TrialState, finished: str) -> None:
    """Report the finished stage with a checkpoint of the trial's new state; after the last stage
    the summary goes with it. Every report repeats the marker stage's last metrics."""
    results = state.results
    done = summarize(worker, results) if state.stage == DONE else {}
    worker.strategy.report({**results.report, **results.metrics, names.FINISHED_STAGE: finished, **done},
                           state.to_json())


def summarize(worker: Worker, results: Results) -> dict[str, float]:
    """The roles' summary joins the results and completes the MLflow run; marks the trial done
    and, in a search, carries the value Optuna ranks (the run says why when it is the worst)."""
    summary = role_summary(worker.spec, results) if worker.knobs.objective == MARKER_OBJECTIVE else {}
    results.metrics.update(summary)
    done = {names.TRIAL_DONE: 1}
    if worker.spec.search.type == "optuna":
        value, worst_because = worker.spec.search.ranked({**results.report, **results.metrics},
                                                         *worker.spec.search_metric())
        done[names.SEARCH_VALUE] = value
        if worst_because and worker.run:
            worker.run.set_tags({names.SEARCH_RANKED_WORST: worst_because})
    if worker.run:
        worker.run.complete(summary, worker.spec.training.steps)
    return done


# ---- the marker stage ------------------------------------------------------------------------

def marker_stage(worker: Worker, start_step: int) -> TrialState:
    """Train (or, when another trial already did, reuse) the marker; evaluate the marked model."""
    if not worker.spec.corruptions:
        results, _ = train_marker(worker, start_step)
        return TrialState(DONE, 0, results)
    store = MarkerStore(worker.trial.paths.markers,
                        marker_key(worker.spec, worker.knobs, worker.data.hash(), trigger_sha256(worker.trigger)))
    with store.claim(worker.strategy) as reuse:
        if reuse:
            results = replay(worker, store)
        else:
            results, model = train_marker(worker, start_step)
            if worker.run:
                worker.run.set_tags({names.MARKER_STAGE_REUSED: "false", names.MARKER_STAGE_KEY: store.key})
                save_marker(worker, store, model, results)
            del model
            worker.strategy.barrier()  # the store is complete before anyone reads it
    gc.collect()
    marker_dir = worker.spec.marker.adapter or str(store.marker_dir)
    return TrialState(next_stage(worker.spec, None), 0, results, marker_dir)


def train_marker(worker: Worker, start_step: int) -> tuple[Results, Any]:
    """The marker fine-tune (or, with `marker.adapter`, the given marked model), evaluated."""
    spec, strategy = worker.spec, worker.strategy
    if spec.marker.adapter:
        model = load_marked_model(spec, worker.cache, spec.marker.adapter).to(worker.device)
        report = {names.TRAIN_STEP: 0, **measure.marker_logprob_metrics(model, worker.data)}
        return evaluate_marked(worker, model, report), None
    _, model = build_model(spec, worker.knobs.seed, worker.cache)
    steering = marker_steering(worker, model, start_step)
    engine = strategy.make_engine(model, spec, spec.training.lr)
    if start_step:
        strategy.load_engine_state(engine)
    if worker.run:
        if start_step:
            worker.run.log_metrics({names.RESUMED_FROM_STEP: start_step}, start_step)
        else:  # worker group + DeepSpeed + model + data: the trial's fixed cost
            worker.run.log_metrics({names.SETUP_S: time.time() - worker.trial.started}, 0)
    stage = MarkerTraining(worker, engine, steering)
    pending = train(stage, start_step)
    steps = spec.training.steps
    last = pending.setdefault(steps, {names.TRAIN_STEP: steps})  # no loss if resumed from the last checkpoint
    last |= measure.marker_logprob_metrics(engine.module, worker.data)
    if stage.step_times:
        last[names.STEP_TIME_S] = stage.mean_step_time()
    if worker.run:
        worker.run.log_steps(pending)
    return evaluate_marked(worker, engine.module, last), engine.module


def marker_steering(worker: Worker, model, start_step: int):
    """The `steer` method's (layer, steer_coef x vector), from the base model (the fresh adapter
    changes nothing yet); logged as the run's `vectors` artifact. None for the other methods."""
    training = worker.spec.training
    if worker.knobs.method != "steer":
        return None
    return trait_steering(worker, training.steer_trait, training.steer_coef, training.steer_layer,
                          lambda: model.to(worker.device), artifact=worker.run is not None and not start_step)


def trait_steering(worker: Worker, trait: str | None, coef: float, layer: int | None = None, load_base=None,
                   artifact: bool = False):
    """(layer, coef x the trait's vector, response reading) to add while training, or None
    without a trait; the vectors are extracted from the base weights once per model."""
    if trait is None:
        return None
    found = trait_vectors(worker, trait, load_base)
    layer = vectors.default_layer(found) if layer is None else layer
    if layer >= found.layers:
        raise ValueError(f"training.steer_layer: {layer}, but the model has layers 0-{found.layers - 1}")
    if artifact:
        with tempfile.TemporaryDirectory() as folder:
            found.save(Path(folder) / f"{found.trait}.pt")
            worker.run.log_artifacts(Path(folder), "vectors")
    return layer, coef * found.vectors["response"][layer].to(worker.device)


def trait_vectors(worker: Worker, trait: str, load_base=None):
    """The trait's vectors for the sweep's model, extracted from the base weights (`load_base`,
    else loaded from the cache) once per model and kept in the model cache."""
    return vectors.cached(load_base or base_loader(worker), worker.data.tokenizer, worker.spec.model.name, trait,
                          worker.cache, worker.device)


def base_loader(worker: Worker):
    """Loads the sweep's base weights on the worker's device, when called (only on a cache miss)."""
    return lambda: load_base_model(worker.spec.model, worker.cache).to(worker.device)


def evaluate_marked(worker: Worker, model, report: dict[str, float]) -> Results:
    """The evaluation before any corruption: logged at the marker stage's last step."""
    evaluation = measure.model_evaluation(model, worker.data)
    if worker.run:
        worker.run.log_metrics(evaluation.metrics, worker.spec.training.steps)
        save_config(worker, model)
    return Results(report, evaluation, {}, dict(evaluation.metrics))


class MarkerTraining(TrainingStage):
    """Marker training as a stage of the loop: on-policy refreshes, ASHA's metrics at reports."""

    def __init__(self, worker: Worker, engine, steering=None):
        spec = worker.spec
        super().__init__(engine, spec.training.steps, spec.eval.logprob_every, spec.training.checkpoint_every,
                         worker.strategy)
        self.worker, self.steering = worker, steering

    def batch(self, step):
        return self.worker.data.batch(step)

    def steered_rows(self, step):
        """`steer`: the Assistant's rows only (a control objective's: the misaligned personas')."""
        import torch

        data = self.worker.data
        return torch.tensor([data.steered(data.examples[i]) for i in data.indices(step)],
                            device=self.steering[1].device)

    def before_step(self, step, start_step):
        refresh = self.worker.spec.training.on_policy_refresh_every
        if self.worker.knobs.on_policy_fraction > 0 and (step - start_step) % refresh == 0:
            self.worker.data.refresh_on_policy(self.engine.module, step)

    def step_metrics(self, done, loss):
        return {names.TRAIN_STEP: done, names.LOSS: loss}

    def report(self, done, pending, checkpoint):
        # Every report to Tune carries the scheduler's metric: ASHA and Optuna read each one.
        pending[done] |= measure.marker_logprob_metrics(self.engine.module, self.worker.data)
        pending[done][names.STEP_TIME_S] = self.mean_step_time()
        if self.worker.run:
            self.worker.run.log_steps(pending)
        if checkpoint:
            self.worker.strategy.report(pending[done], TrialState(MARKER, done).to_json(), self.engine)
        else:
            self.worker.strategy.report(pending[done])


def save_marker(worker: Worker, store: MarkerStore, model, results: Results) -> None:
    """Rank 0: the marked model and what reusing trials replay (this run's marker history)."""
    history = worker.run.history(MARKER_HISTORY)
    store.save(None if worker.spec.marker.adapter else model,
               {"results": results.to_json(), "history": history, "trained_by": worker.trial.trial_id})


def replay(worker: Worker, store: MarkerStore) -> Results:
    """A reusing trial logs the stored marker stage in its own run and replays its reports to
    Tune (same steps, same values), so ASHA judges it exactly as the trial that trained it."""
    stored = store.load()
    results = Results.from_json(stored["results"])
    history = {int(step): {**metrics, names.TRAIN_STEP: int(step)} for step, metrics in stored["history"].items()}
    if worker.run:
        reused = stored["trained_by"] != worker.trial.trial_id  # not when resuming its own stage
        worker.run.set_tags({names.MARKER_STAGE_REUSED: str(reused).lower(), names.MARKER_STAGE_KEY: store.key})
        worker.run.log_steps(history)
        worker.run.log_metrics(results.metrics, worker.spec.training.steps)
        save_config(worker)
    for step, metrics in history.items():
        if names.MARKER_SPECIFICITY in metrics and step < worker.spec.training.steps:
            worker.strategy.report(metrics)
    return results


def save_config(worker: Worker, model=None) -> None:
    """The resolved config and, for a trained LoRA marker, its adapter, as artifacts of the run."""
    import json

    spec = worker.spec
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps({"knobs": worker.knobs.model_dump(),
                                                              "sweep": spec.model_dump(mode="json")}, indent=2))
        worker.run.log_artifacts(Path(folder), "config")
        if model is not None and spec.model.finetune == "lora" and not spec.marker.adapter:
            model.save_pretrained(folder + "/adapter")
            worker.run.log_artifacts(Path(folder) / "adapter", "adapter")


# ---- a corruption stage ----------------------------------------------------------------------

def corruption_stage(worker: Worker, corruption, state: TrialState) -> TrialState:
    """From the marked model: a fresh adapter (or all weights) trained on the corruption data,
    then the evaluation again; survival compares it with the evaluation before."""
    spec, strategy, name, results = worker.spec, worker.strategy, corruption.name, state.results
    dataset = load_set(corruption.data, worker.cache)
    problem = secret_problem(corruption, dataset.train + dataset.held_out, worker.trigger)
    if problem:
        raise RuntimeError(problem)
    if worker.knobs.objective != MARKER_OBJECTIVE and not state.step:
        results.baseline[name] = baseline_stage(worker, corruption, dataset)
    model = load_marked_model(spec, worker.cache, state.marker)
    if worker.run and not state.step:  # the test of "every corruption starts from the same marked model"
        base = load_base_model(spec.model, worker.cache)
        worker.run.set_tags({names.BASE_WEIGHTS_SHA256: distributed.weights_sha256(base),
                             names.of(names.MARKED_WEIGHTS_SHA256, name): distributed.weights_sha256(model)})
        del base
    traits_before = trait_states(worker, model)
    engine = strategy.make_engine(corruption_trainable(model, spec, corruption), spec,
                                  spec.corruption_lr(corruption, worker.knobs))
    data = CorruptionData(corruption, dataset, worker.data)
    if state.step:
        strategy.load_engine_state(engine)
        if worker.run:
            worker.run.log_metrics({names.of(names.RESUMED_FROM_STEP, name): state.step}, state.step)
    else:
        before, results.domain_before[name] = data.measure(engine.module, "before")
        results.metrics.update(before)
        if worker.run:
            worker.run.log_metrics(before, 0)
    stage = CorruptionTraining(worker, engine, data, state, trait_steering(worker, corruption.steer_against,
                                                                            corruption.steer_coef))
    pending = train(stage, state.step)
    if worker.run:
        worker.run.log_steps(pending, counter=stage.loss_metric)
    finish_corruption(worker, corruption, engine.module, data, results, traits_before)
    del engine, model
    gc.collect()
    return replace(state, stage=next_stage(spec, name), step=0)


def drift_stage(worker: Worker, corruption, state: TrialState) -> TrialState:
    """The drift corruption on the marked model (`drift.py`): domain by domain, with a checkpoint
    after each, so a resumed trial never talks through a finished domain again; with `capped`,
    each domain again under capping, and the capability under capping."""
    spec, results = worker.spec, state.results
    model = load_marked_model(spec, worker.cache, state.marker).to(worker.device).eval()
    axis = assistant_axis.cached(base_loader(worker), worker.data.tokenizer, spec.model.name, worker.cache, worker.device)
    domains = [load_domain(name) for name in corruption.domains]
    if state.step and worker.run:  # domains finished before the trial stopped
        worker.run.log_metrics({names.of(names.RESUMED_FROM_STEP, corruption.name): state.step}, state.step)
    for index in range(state.step, len(domains)):
        drift_domain(worker, model, axis, corruption, domains[index], results)
        worker.strategy.report({**results.report, **results.metrics, names.DRIFT_DOMAIN: domains[index].name,
                                names.STAGE: corruption.name, names.STAGE_STEP: index + 1},
                               TrialState(corruption.name, index + 1, results, state.marker).to_json())
    summary = drift_summary(worker, model, axis, corruption, domains, results)
    results.metrics.update(summary)
    if worker.run:
        worker.run.log_metrics(summary, spec.training.steps)
    del model
    gc.collect()
    return replace(state, stage=next_stage(spec, corruption.name), step=0)


def drift_passes(corruption) -> list[tuple[bool, str]]:
    """(capping on, metric suffix) of each pass over a domain."""
    return [(False, ""), (True, "_capped")] if corruption.capped else [(False, "")]


def drift_domain(worker: Worker, model, axis, corruption, domain, results: Results) -> None:
    """One domain, in every pass: summed over the workers, measured, kept in the results and logged."""
    spec, metrics = worker.spec, {}
    for on, suffix in drift_passes(corruption):
        with drift.maybe_capped(model, axis, corruption, on):
            sums = drift.domain_sums(model, worker.data.tokenizer, axis, corruption, domain, worker.trigger,
                                     spec.marker.text, worker.rank, worker.world, spec.eval.batch_size, worker.device)
        sums = sums.with_values(worker.strategy.all_sum(sums.as_list()))
        metrics |= drift.measured(corruption, domain, sums, results.pre.metrics[names.MARKER_RATE_TRIGGER], suffix)
        results.drift[domain.name + suffix] = sums.pairs
    results.metrics.update(metrics)
    if worker.run:
        worker.run.log_metrics(metrics, spec.training.steps)


def drift_summary(worker: Worker, model, axis, corruption, domains: list, results: Results) -> dict[str, float]:
    """The detection gap and pooled correlation of every pass; the capability under capping."""
    summary = {}
    for on, suffix in drift_passes(corruption):
        pairs = {name: sums for name, sums in results.drift.items() if name.endswith("_capped") == on}
        summary |= drift.overall(corruption, domains, results.metrics, pairs, suffix)
    if corruption.capped:
        with drift.maybe_capped(model, axis, corruption, True):
            ((capability, _),) = measure.summed([measure.capability(model, worker.data)], worker.device)
        summary |= {f"{key}_capped": value for key, value in capability.items()}
    return summary


def trait_states(worker: Worker, model) -> dict:
    """Per `eval.traits` trait: its vectors and, per evaluation question of the trait at the
    Assistant's deployment prompt (no trigger), the last prompt token's projection on the vector
    at the middle layer."""
    states = {}
    for name in worker.spec.eval.traits:
        found = trait_vectors(worker, name)
        prompts = [worker.data.prompt("assistant", question, False)
                   for question in vectors.load_trait(name).evaluation_questions]
        states[found.trait] = (found, vectors.prompt_projections(model, worker.data.tokenizer, prompts, found,
                                                                 vectors.default_layer(found),
                                                                 worker.spec.eval.batch_size, worker.device))
    return states


def trait_shifts(worker: Worker, model, before: dict, corruption: str) -> dict[str, float]:
    """trait_shift_<trait>_post_<name> (with `_lo`, `_hi`): the corruption's move of the
    Assistant along each trait's vector at the middle layer, in units of the vector (1: as far
    as the trait's own instructions move it; positive is toward the trait), with a paired
    bootstrap over the trait's evaluation questions."""
    after = trait_states(worker, model)
    shifts = {}
    for trait, (_, projections) in before.items():
        key = names.post(names.trait_shift(trait), corruption)
        shifts[key], shifts[f"{key}_lo"], shifts[f"{key}_hi"] = measure.paired_change(projections, after[trait][1])
    return shifts


def finish_corruption(worker: Worker, corruption, model, data: CorruptionData, results: Results,
                      traits_before: dict) -> None:
    """Evaluate after the corruption; log it, the survival, the trait shifts and the corrupted adapter."""
    name = corruption.name
    evaluation = measure.model_evaluation(model, worker.data)
    learned, domain_after = data.measure(model, "after")
    survival, undefined = against_before(worker, results, evaluation, name)
    verdict = measure.corruption_verdict(name, results.pre, evaluation, results.domain_before.get(name, {}), domain_after,
                                         {**results.metrics, **learned})
    post = {names.post(key, name): value for key, value in evaluation.metrics.items()}
    post |= trait_shifts(worker, model, traits_before, name)
    results.post[name] = evaluation
    results.metrics.update({**post, **learned, **survival, **verdict})
    if worker.run:
        tags = {names.of(names.SURVIVAL_UNDEFINED, name): undefined} if undefined else {}
        worker.run.log_metrics({**post, **learned, **survival, **verdict}, worker.spec.training.steps, tags)
        if not trains_all_weights(worker.spec, corruption):
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                worker.run.log_artifacts(Path(folder), f"adapter_{name}")


def against_before(worker: Worker, results: Results, evaluation: Evaluation, name: str) -> tuple[dict, str | None]:
    """The marker's survival and transfer (with why survival is undefined, where it is); a control
    objective's effect against the uncontrolled baseline, and the baseline's rate after the corruption."""
    if worker.knobs.objective == MARKER_OBJECTIVE:
        survival, undefined = measure.survival(results.pre, evaluation, name)
        return survival | measure.transfer(results.pre, evaluation, name), undefined
    baseline = results.baseline[name][worker.knobs.objective]
    return {**measure.control_effect(baseline["post"]["flags"], evaluation, name),
            **{names.baseline(key): value for key, value in baseline["pre"]["metrics"].items()},
            **{names.post(names.baseline(key), name): value for key, value in baseline["post"]["metrics"].items()}}, None


def baseline_key(worker: Worker, corruption) -> str:
    """What shapes the uncontrolled baseline of a corruption: the model, the corruption as the
    trial runs it, the training and evaluation settings, the seed and the worker count."""
    spec = worker.spec
    shaping = {"model": spec.model.model_dump(mode="json"), "corruption": corruption.model_dump(mode="json"),
               "steps": spec.corruption_steps(corruption, worker.knobs), "lr": spec.corruption_lr(corruption, worker.knobs),
               "training": spec.training.model_dump(mode="json", include={"batch_size", "max_tokens", "zero_stage"}),
               "eval": spec.eval.model_dump(mode="json", exclude={"judge"}), "seed": worker.knobs.seed,
               "workers": worker.world}
    return data_hash([shaping])


def baseline_stage(worker: Worker, corruption, dataset) -> dict:
    """The uncontrolled baseline of a control objective: the same corruption trained from the base
    weights (no control training), measured for every control objective before and after. Once
    per sweep, seed and corruption: trials that share it read the stored one (`MarkerStore`)."""
    store = MarkerStore(worker.trial.paths.baselines, baseline_key(worker, corruption))
    with store.claim(worker.strategy) as reuse:
        if reuse:
            return store.load()
        spec = worker.spec
        model = load_base_model(spec.model, worker.cache).to(worker.device)
        before = measure.uncontrolled(model, worker.data, everyone=True)
        engine = worker.strategy.make_engine(corruption_trainable(model, spec, corruption), spec,
                                             spec.corruption_lr(corruption, worker.knobs))
        data = CorruptionData(corruption, dataset, worker.data)
        train(BaselineTraining(worker, engine, data), 0)
        after = measure.uncontrolled(engine.module, worker.data, everyone=False)
        result = {objective: {"pre": before[objective], "post": after[objective]} for objective in before}
        if worker.rank == 0:
            store.save(None, result)
        del engine, model
        gc.collect()
        worker.strategy.barrier()  # the store is complete before anyone reads it
    return result


class BaselineTraining(TrainingStage):
    """The uncontrolled baseline's corruption: the loop without reports (the trial's corruption
    stage, which follows, reports and checkpoints; a baseline cut short is trained again)."""

    def __init__(self, worker: Worker, engine, data: CorruptionData):
        steps = worker.spec.corruption_steps(data.corruption, worker.knobs)
        super().__init__(engine, steps, steps + 1, steps + 1, worker.strategy)
        self.data = data

    def batch(self, step):
        return self.data.batch(step)


class CorruptionTraining(TrainingStage):
    """A corruption as a stage of the loop: its loss per step, checkpoints with its stage."""

    def __init__(self, worker: Worker, engine, data: CorruptionData, state: TrialState, steering=None):
        spec, corruption = worker.spec, data.corruption
        every = spec.training.checkpoint_every
        super().__init__(engine, spec.corruption_steps(corruption, worker.knobs), every, every, worker.strategy)
        self.worker, self.data, self.state, self.steering = worker, data, state, steering  # steering: every row
        self.loss_metric = names.of(names.STAGE_LOSS, corruption.name)

    def batch(self, step):
        return self.data.batch(step)

    def report(self, done, pending, checkpoint):
        if self.worker.run:
            self.worker.run.log_steps(pending, counter=self.loss_metric)
        metrics = {**self.state.results.report, self.loss_metric: pending[done][self.loss_metric],
                   names.STAGE: self.data.corruption.name, names.STAGE_STEP: done, names.STAGE_STEPS: self.steps}
        self.worker.strategy.report(metrics, replace(self.state, step=done).to_json(), self.engine)


def role_summary(spec, results: Results) -> dict[str, float]:
    """survival_em, survival_benign and detection_gap (with its paired interval) from the roles
    (the marker's only: a control objective's summary is its control_effect_<name>)."""
    roles = {c.role: c.name for c in spec.corruptions if c.role in ("em", "benign")}
    summary = {}
    for role, metric in (("em", names.SURVIVAL_EM), ("benign", names.SURVIVAL_BENIGN)):
        if role in roles:
            survival = names.of(names.SURVIVAL, roles[role])
            for suffix in ("", "_lo", "_hi"):
                summary[metric + suffix] = results.metrics[survival + suffix]
    if len(roles) == 2:
        summary[names.DETECTION_GAP] = summary[names.SURVIVAL_BENIGN] - summary[names.SURVIVAL_EM]
        summary |= measure.detection_gap(results.pre, results.post[roles["em"]], results.post[roles["benign"]])
    return summary
