"""The sweep engine: Ray Tune schedules trials, each trial runs what its kind says (`trial.py`).

Layout under `$PERSONA_SWEEP_HOME` (default `./runs`), resolved once on the driver:
    sweeps/<name>.json      the sweep record: resolved spec, paths, MLflow ids, trial count
    ray_results/<name>/     Tune's experiment state; Train runs under ray_results/<name>/_train;
                            the sweep's stored marker stages (_markers/) and worker ids (_pids/)
    mlflow.db, mlartifacts/ MLflow (default tracking store)
    logs/<name>.log         what the driver printed
    secrets/                demo triggers (0700)
With `resources.storage` (a shared folder or an s3:// / gs:// URI), Tune's experiment state and
the Train runs go to `<storage>/ray_results/<name>/` instead (and, with a local tracking store,
the MLflow artifacts to `<storage>/mlartifacts/<name>/`; a tracking server keeps them where its
`--artifacts-destination` says); the rest stays in the home.

Trial actors and Train workers never resolve a path themselves: they run in Tune's trial folder
and do not inherit the driver's environment. The driver fixes home, cache and storage, and the
tracking handle (URI and retry deadline), keeps them in the sweep record (`sweep_record`) and
hands them to every trial (`trial.TrialConfig`).
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from persona_sweep import checkpoints, kinds, names, storage, tracking
from persona_sweep.cluster import is_job_address
from persona_sweep.errors import SweepError, first_line
from persona_sweep.preflight import check_shared
from persona_sweep.sections import GridSweep
from persona_sweep.sweep_record import SweepRecord, home, home_folder, record_path
from persona_sweep.trial import SweepPaths, TrialConfig

# Tests only: trials whose knobs match this env var's `axis=value[,axis=value]` raise at start.
# An environment variable, never a sweep-file key, so `resume` (which keeps the spec) can run without it.
FAULT_ENV = "PERSONA_SWEEP_FAULT"


def paths_for(spec: GridSweep) -> SweepPaths:
    from persona_sweep.models import default_cache

    root = home()
    results = spec.resources.storage or str(root)
    return SweepPaths(home=str(root), cache=str(default_cache()), storage=storage.join(results, "ray_results", spec.name),
                      state=str(root / "ray_results" / spec.name))


def artifact_location(spec: GridSweep, paths: SweepPaths, where: tracking.Tracking) -> str | None:
    """A tracking server keeps artifacts where its `--artifacts-destination` says and serves
    them, so a laptop with only the tracking URI reads them (None: the server's default); a
    local tracking store keeps them beside Tune's results."""
    if where.is_server:
        return None
    return storage.as_uri(storage.join(spec.resources.storage or paths.home, "mlartifacts", spec.name))


# ---- starting a sweep ------------------------------------------------------------------------

def start(spec: GridSweep, address: str | None, announce=print):
    """Check everything that can be checked, then write the record and run the sweep.

    Nothing is written before the checks pass (bad address, too few resources, no trigger
    where trials run), so a start that fails leaves the name free."""
    spec = kinds.of(spec).checked_for_run(spec)
    check_home_writable(home_folder())
    if spec.resources.storage:
        storage.check_writable(spec.resources.storage)
    paths = paths_for(spec)
    # Fixed here and kept in the record: trials get it from there, not from their environment.
    where = tracking.Tracking(spec.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
                              or tracking.default_uri(Path(paths.home)), spec.tracking.wait_for_server_s)
    check_tracking_server(where)
    refuse_existing(spec, where, paths)
    connect(address)
    max_concurrent = concurrency(spec)
    check_shared(paths)
    kinds.of(spec).check_on_cluster(spec, paths.cache)
    tracking.seed_sqlite_store(where, Path(paths.cache))
    record = create_record(spec, paths, where)
    announce(f"sweep '{spec.name}': {spec.trial_count()} trials, home {paths.home}")
    try:
        return fit(record, max_concurrent=max_concurrent)
    except tracking.TrackingUnreachable:
        raise  # nothing to ask the server: `resume` takes it from here
    except BaseException:
        if not tracking.child_runs(where, record.sweep_run.experiment_id):
            discard(record)  # no trial started: the name stays free
        raise


def check_tracking_server(where: tracking.Tracking) -> None:
    """A sweep starts only when its tracking server answers (a mistyped URI fails here, not
    after `wait_for_server_s`); during the sweep an outage is waited out."""
    if where.is_server and not tracking.server_answers(where.uri):
        raise SweepError(f"tracking.mlflow_uri: no MLflow server answers at {tracking.shown_uri(where.uri)}")


def refuse_existing(spec: GridSweep, where: tracking.Tracking, paths: SweepPaths) -> None:
    """Never overwrite: a name with results anywhere is refused (a known Ray Tune trap)."""
    experiment = spec.tracking.experiment or spec.name
    taken = record_path(spec.name).exists() or Path(paths.state).exists() or storage.exists(paths.storage)
    if taken or tracking.experiment_exists(where, experiment):
        raise SweepError(f"name: sweep '{spec.name}' already has results; "
                         f"continue it with `persona-sweep resume {spec.name}` or pick another --name")


def create_record(spec: GridSweep, paths: SweepPaths, where: tracking.Tracking) -> SweepRecord:
    params = {"kind": spec.kind, "trials": spec.trial_count(), "scheduler": spec.scheduler.type,
              "search": spec.search.type, **spec.parent_params()}
    provenance = tracking.provenance_tags()
    sweep_run = tracking.create_parent_run(
        where, spec.tracking.experiment or spec.name, artifact_location(spec, paths, where), spec.name, params, provenance)
    record = SweepRecord(spec.name, spec.model_dump(mode="json"), paths, sweep_run, spec.trial_count(), time.time(),
                         provenance)
    record.save()
    tracking.log_record(sweep_run, record.fields())
    return record


def discard(record: SweepRecord) -> None:
    """Undo a start that ran no trial: record, Tune folder and MLflow experiment go."""
    record_path(record.name).unlink(missing_ok=True)
    shutil.rmtree(record.paths.state, ignore_errors=True)
    storage.remove(record.paths.storage)
    tracking.delete_experiment(record.sweep_run)


# ---- Ray --------------------------------------------------------------------------------------

def ensure_auth_token() -> None:
    """With RAY_AUTH_MODE=token, Ray expects the token to exist already (a new local cluster
    started that way does not write one): create it as `ray get-auth-token --generate` does."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    if (Path.home() / ".ray" / "auth_token").exists():
        return
    ray_cli = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray_cli), "get-auth-token", "--generate"], capture_output=True, check=True, timeout=120)


def connect(address: str | None) -> None:
    """An embedded local Ray without `address`; otherwise `auto`, `host:6379` or `ray://host:10001`."""
    import ray

    # Token authentication: a new local cluster turns it on and writes ~/.ray/auth_token; a
    # connection to a running cluster turns it on when that token exists. We leave it at that.
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: our progress lines, not Tune's tables
    if ray.is_initialized():
        return
    ensure_auth_token()
    if not address:
        from persona_sweep.embedded_ray import start_embedded_ray

        start_embedded_ray(address="local")  # a new instance, even where RAY_ADDRESS names a cluster
        return
    if is_job_address(address):
        raise SweepError(f"--address: {address} is a dashboard; send the sweep there with `persona-sweep submit`")
    check_reachable(address)
    try:
        # Ray's own "Connecting to ..." lines would bury a one-line error; failures still surface.
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise SweepError(f"--address: cannot connect to a Ray cluster at {address}: {first_line(error)}") from None


def check_reachable(address: str) -> None:
    """Ray waits minutes for a GCS that is not there; a closed port is known in a second."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise SweepError(f"--address: no Ray cluster answers at {address} ({error.strerror or error})") from None


def concurrency(spec: GridSweep) -> int:
    import ray

    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    cpus = ray.cluster_resources().get("CPU", 0)
    per_trial = spec.trial_resources()[1]
    fits = int(cpus // per_trial)
    if spec.resources.gpus_per_worker:
        gpus = ray.cluster_resources().get("GPU", 0)
        fits = min(fits, int(gpus // (spec.resources.workers_per_trial * spec.resources.gpus_per_worker)))
    if fits < 1:
        raise SweepError(f"resources: a trial needs {per_trial:g} CPUs"
                         + (f" and {spec.resources.workers_per_trial * spec.resources.gpus_per_worker:g} GPUs"
                            if spec.resources.gpus_per_worker else "")
                         + f" but the cluster has {cpus:g} CPUs")
    return fits


def param_space(spec: GridSweep) -> dict:
    from ray import tune

    axes = spec.axes()
    if spec.search.type == "optuna":
        return {**{axis: tune.choice(values) for axis, values in axes.items()},
                **{key: sampled(sampling) for key, sampling in spec.search.ranges.items()}}
    return {axis: tune.grid_search(values) for axis, values in axes.items()}


def sampled(sampling):
    """A search range as Tune's domain (integer ranges include `high`)."""
    from ray import tune

    if sampling.integer:
        return (tune.lograndint if sampling.log else tune.randint)(int(sampling.low), int(sampling.high) + 1)
    return (tune.loguniform if sampling.log else tune.uniform)(sampling.low, sampling.high)


def scheduler_and_search(spec: GridSweep):
    from ray.tune.schedulers import ASHAScheduler

    scheduler = search = None
    if spec.scheduler.type == "asha":
        # ASHA decides on the marker stage only. A trial reaching max_t is not stopped for it
        # (stop_last_trials=False): its corruptions follow, and their reports repeat the marker
        # stage's last train_step and metric, which ASHA has already recorded at every rung.
        scheduler = ASHAScheduler(time_attr=names.TRAIN_STEP, metric=spec.scheduler.metric, mode=spec.scheduler.mode,
                                  max_t=spec.total_steps(), grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor, stop_last_trials=False)
    if spec.search.type == "optuna":
        _, mode = spec.search_metric()
        from persona_sweep.search import RankedAtTheEnd

        search = RankedAtTheEnd(metric=names.SEARCH_VALUE, mode=mode, seed=0)
    return scheduler, search


def run_trial(knobs: dict, record: SweepRecord, fault: str | None = None) -> None:
    """The Tune function trainable: the sweep's kind decides what a trial runs."""
    from ray import tune

    if fault and fault_matches(fault, knobs):
        raise RuntimeError(f"fault injected by {FAULT_ENV}={fault}")
    trial = TrialConfig(trial_id=tune.get_context().get_trial_id(), knobs=knobs, spec=record.config.for_trial(knobs),
                        paths=record.paths, sweep_run=record.sweep_run, provenance=record.provenance,
                        started=time.time())
    run_once_more_if_transient(kinds.of(trial.spec).run_trial, trial)


def run_once_more_if_transient(run, trial: TrialConfig) -> None:
    """A trial whose MLflow run could not be opened (the tracking server, or the way to it, failed
    before anything was trained) runs once more, with one line saying so; any other error is the
    trial's own and ends it. An llm trial's worker group may already have been restarted once by
    Ray Train (`training.max_failures`) before this."""
    try:
        run(trial)
    except Exception as error:  # noqa: BLE001 - sorted by `failed_to_open_its_run`
        if not failed_to_open_its_run(error):
            raise
        print(f"trial {trial.trial_id}: a transient tracking failure before training ({first_line(error)}); "
              "running it once more", file=sys.stderr, flush=True)
        run(trial)


def failed_to_open_its_run(error: BaseException, depth: int = 0) -> bool:
    """RunNotOpened anywhere in the chain, Ray Train's wrappers included: a WorkerGroupError keeps
    each rank's error in `worker_failures`, wrapped with its traceback in `_base_exc`."""
    if error is None or depth > 8:
        return False
    if isinstance(error, tracking.RunNotOpened):
        return True
    inner = [error.__cause__, error.__context__, getattr(error, "_base_exc", None),
             *getattr(error, "worker_failures", {}).values()]
    return any(failed_to_open_its_run(each, depth + 1) for each in inner if isinstance(each, BaseException))


def trainable(record: SweepRecord):
    """Read on the driver at every `run` and `resume` (trials do not inherit its environment),
    so a resume without the fault hook completes the trials it failed."""
    from ray import tune

    fault = os.environ.get(FAULT_ENV) or None
    return tune.with_resources(tune.with_parameters(run_trial, record=record, fault=fault),
                               record.config.trial_resources()[0])


def fault_matches(fault: str, knobs: dict) -> bool:
    """`axis=value[,axis=value]`: the trials at that grid point fail."""
    wanted = dict(item.split("=", 1) for item in fault.split(","))
    return all(str(knobs.get(axis)) == value for axis, value in wanted.items())


def tuner_for(record: SweepRecord, resume: bool, max_concurrent: int | None = None):
    """A new Tuner, or the stored one (with its stored RunConfig and callbacks) on resume."""
    from ray import tune

    from persona_sweep.progress import SweepProgress

    spec = record.config
    location, filesystem = storage.for_tune(record.paths.storage)
    if resume:
        return tune.Tuner.restore(location, trainable=trainable(record), storage_filesystem=filesystem,
                                  resume_unfinished=True, resume_errored=True, param_space=param_space(spec))
    scheduler, search = scheduler_and_search(spec)
    results, experiment = storage.parent_and_name(location)
    return tune.Tuner(
        trainable(record),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(scheduler=scheduler, search_alg=search,
                                    num_samples=spec.search.n_trials if spec.search.type == "optuna" else 1,
                                    max_concurrent_trials=max_concurrent or concurrency(spec),
                                    reuse_actors=kinds.of(spec).reuses_trial_processes),
        run_config=tune.RunConfig(name=experiment, storage_path=results, storage_filesystem=filesystem,
                                  callbacks=[SweepProgress(record)],
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=spec.trial_retries())),
    )


def resume(name: str, address: str | None):
    record = SweepRecord.load(name)
    check_home_writable(Path(record.paths.home))
    storage.check_writable(record.paths.storage)
    if not storage.exists(record.paths.storage):
        raise SweepError(f"sweep '{name}' has no Tune results at {record.paths.storage}; nothing to resume")
    check_tune_state_whole(name, record.paths.storage)
    connect(address)
    check_shared(record.paths)
    # The trigger may have gone from a node since the start.
    kinds.of(record.config).check_on_cluster(record.config, record.paths.cache)
    announce_cut_short_checkpoints(record)
    return record, fit(record, resume=True)


def check_tune_state_whole(name: str, location: str) -> None:
    """Tune restores a sweep from its newest `experiment_state-*.json`; one it cannot read, it
    starts afresh ("Failed to restore the run state"): every trial again under a new id, a second
    MLflow run each, the marker stage trained again. Tune writes the file whole or not at all
    (`storage.for_tune`), so a full disk or a killed driver leaves the last whole one; a file cut
    some other way (copied by hand, a sweep begun before 2026-12-07) is refused in one line."""
    import fnmatch

    from pyarrow.fs import FileSelector

    fs, path = storage.filesystem(location)
    states = [info for info in fs.get_file_info(FileSelector(path))
              if fnmatch.fnmatch(info.base_name, "experiment_state-*.json")]
    if not states:  # Tune's own error says so
        return
    newest = max(states, key=lambda info: info.path)  # Tune's choice too: the names hold the time
    if checkpoints.read_json(fs, newest.path) is None:
        raise SweepError(f"sweep '{name}': Tune's record of its trials, {newest.path}, is cut short or unreadable "
                         f"({newest.size} bytes); resuming would start every trial afresh. "
                         "Start the sweep again under a new name")


def announce_cut_short_checkpoints(record: SweepRecord) -> None:
    """Before trials restart: which unfinished trial skips which checkpoint, and where it starts
    instead (the workers choose with the same `checkpoints.newest_whole`)."""
    from persona_sweep.progress import say, sweep_log

    sweep = record.sweep_run
    unfinished = [run.data.tags[names.TRIAL_ID] for run in tracking.child_runs(sweep.tracking, sweep.experiment_id)
                  if run.data.tags.get(names.TRIAL_STATUS) not in names.ENDED]
    for trial_id in unfinished:
        filesystem, folder = storage.filesystem(record.paths.trial_checkpoints(trial_id))
        for line in checkpoints.newest_whole(filesystem, folder).describe(trial_id):
            say(sweep_log(record), line)


MIN_FREE_MB = 100  # a LoRA trial's checkpoints and runs; full fine-tunes need far more


def check_home_writable(folder: Path) -> None:
    """Refuse before anything starts when the home cannot take a sweep: read-only, or full."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as error:
        raise SweepError(f"home {folder}: not writable ({error.strerror}); "
                         "set PERSONA_SWEEP_HOME to a writable folder") from None
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < MIN_FREE_MB:
        raise SweepError(f"home {folder}: {free_mb:.0f} MB free, a sweep needs at least {MIN_FREE_MB} MB "
                         "(checkpoints, MLflow); free some space or set PERSONA_SWEEP_HOME")


def remove_placement_groups_left_by_earlier_drivers(record: SweepRecord) -> None:
    """A driver stopped while a trial's Ray Train controller was starting a new worker group can
    leave that group's placement group behind: created as its creator died, Ray never removes it
    (seen after `stop`: a 0.99-CPU group of the stopped job, 1 run in 4), and the resumed trials'
    worker groups wait for its CPUs forever. Each driver of a sweep writes its Ray session and
    job id; a new one removes the groups that ended drivers of the same sweep left in the same
    Ray session (a group's id ends with its job's id), and no other job's."""
    import ray
    from ray._private.state import jobs
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    context = ray.get_runtime_context()
    session = context.get_session_name()
    drivers = record.paths.drivers_file
    lines = drivers.read_text().splitlines() if drivers.exists() else []
    earlier = {job for their_session, _, job in (line.partition(" ") for line in lines) if their_session == session}
    ended = earlier & {job["JobID"] for job in jobs() if job["IsDead"]}
    for group_id, group in placement_group_table().items():
        if group_id[-8:] in ended and group["state"] != "REMOVED":
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))
    drivers.parent.mkdir(parents=True, exist_ok=True)
    with drivers.open("a") as handle:
        handle.write(f"{session} {context.get_job_id()}\n")


@dataclass(frozen=True)
class Outcome:
    """How a `run` or `resume` ended: trials that errored, trials cut off (Ctrl-C)."""

    errored: int
    interrupted: int


def fit_reading_back(tuner, record: SweepRecord):
    """`tuner.fit()`, whose last act reads each errored trial's pickled error back: on a disk
    that filled, that file is empty and Tune raises EOFError, which says nothing of the disk."""
    try:
        return tuner.fit()
    except EOFError as error:
        free_mb = shutil.disk_usage(record.paths.home).free / 2**20
        if free_mb >= MIN_FREE_MB:
            raise
        raise OSError(errno.ENOSPC, f"No space left on device ({free_mb:.0f} MB free in {record.paths.home}; "
                      "Tune's record of a trial's error is empty)") from error


def fit(record: SweepRecord, resume: bool = False, max_concurrent: int | None = None) -> Outcome:
    """Run (or resume) the sweep; the parent run ends FINISHED only when every trial ended."""
    remove_placement_groups_left_by_earlier_drivers(record)
    tuner = tuner_for(record, resume, max_concurrent)
    mlflow = record.sweep_run.tracking.client()
    mlflow.update_run(record.sweep_run.parent_run_id, status="RUNNING")
    results = fit_reading_back(tuner, record)
    kinds.of(record.config).after_sweep(record)
    # Ctrl-C: Tune stops the trials and returns; runs still `running` were cut off.
    outcome = Outcome(errored=len(results.errors),
                      interrupted=tracking.tag_interrupted(record.sweep_run))
    tracking.log_sweep_metrics(record)  # after the statuses above are final
    ended = "FAILED" if outcome.errored else "KILLED" if outcome.interrupted else "FINISHED"
    mlflow.set_terminated(record.sweep_run.parent_run_id, ended)
    return outcome
