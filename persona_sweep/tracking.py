"""MLflow: one experiment per sweep, a parent run per sweep, one child run per trial.

The driver creates the experiment and the parent run; rank 0 of each trial finds or creates its
child run by the `trial_id` tag (so a resumed trial reuses its run) and skips steps it already
logged (steps replayed after the last checkpoint would otherwise log twice). Every process sets
the tracking URI explicitly: workers do not inherit the driver's MLflow settings.

Where MLflow is travels as one handle, `Tracking` (the URI and the retry deadline), made once on
the driver and handed to every trial in its config; a sweep in MLflow is a `SweepRun` (the
handle, the experiment and the parent run), held by the sweep record and by each trial's config.

A tracking server that goes away (a restart, a network cut) is waited out: every call retries
with backoff for up to `tracking.wait_for_server_s`, then raises `TrackingUnreachable`. A trial
logs each step before it checkpoints it, so a trial that gives up loses nothing that `resume`
does not redo.
"""
from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from persona_sweep import names
from persona_sweep.sections import DEFAULT_WAIT_FOR_SERVER_S

PACKAGES = ("torch", "ray", "transformers", "peft", "deepspeed", "mlflow", "optuna")
RECORD_ARTIFACT = "sweep/record.json"  # the sweep record, on the parent run


# MLflow's environment in every process of ours, set once when this module is imported: before
# MLflow itself and before any thread starts, never in a call path (a user's own value wins).
# - No HTTP retries of MLflow's own: they would add minutes per call on top of our deadline.
# - No telemetry: it tries to reach mlflow.org from every trial process, which an offline cluster
#   never allows, and while it gives up it sets and unsets _MLFLOW_TELEMETRY_SESSION_ID in
#   os.environ from its own thread; `requests`, reading the environment for proxies in another
#   thread, then fails a request with a KeyError on that name (MLflow 3.17; one trial in ~70
#   errored that way at 100 trials).
MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
for _name, _value in MLFLOW_ENV.items():
    os.environ.setdefault(_name, _value)

TRANSIENT_ERROR_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")


class TrackingUnreachable(RuntimeError):
    """The tracking server did not answer within `tracking.wait_for_server_s`."""


@dataclass(frozen=True)
class Tracking:
    """Where MLflow is and how long each call waits out an unreachable server. Made once on the
    driver from the sweep's tracking section (`wait_for_server_s`), kept with the sweep record
    and handed to every trial, so a worker never reads a setting of its own process. A command
    without a sweep file (`status --tracking-uri`, `report --tracking-uri`, `ui`) makes one with
    the default deadline: `Tracking(uri)`."""

    uri: str
    wait_for_server_s: float = DEFAULT_WAIT_FOR_SERVER_S

    @property
    def is_server(self) -> bool:
        return is_server(self.uri)

    def client(self):
        from mlflow.tracking import MlflowClient

        if not self.is_server:
            return MlflowClient(tracking_uri=self.uri)
        return PatientClient(MlflowClient(tracking_uri=self.uri), self)

    def call_patiently(self, call, *args, **kwargs):
        deadline = time.monotonic() + self.wait_for_server_s
        pause, failed_at = 1.0, None
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - sorted by `unreachable`
                if not unreachable(error):
                    raise
                if time.monotonic() + pause > deadline:
                    raise TrackingUnreachable(f"MLflow tracking server {shown_uri(self.uri)} did not answer for "
                                              f"{self.wait_for_server_s:.0f} s (tracking.wait_for_server_s)") from None
                if failed_at is None:
                    failed_at = time.monotonic()
                    print(f"MLflow tracking server {shown_uri(self.uri)} unreachable; retrying for up to "
                          f"{self.wait_for_server_s:.0f} s", file=sys.stderr, flush=True)
                time.sleep(pause)
                pause = min(2 * pause, 30.0)
                continue
            if failed_at is not None:
                print(f"MLflow tracking server {shown_uri(self.uri)} answered again after "
                      f"{time.monotonic() - failed_at:.0f} s", file=sys.stderr, flush=True)
            return result


@dataclass(frozen=True)
class SweepRun:
    """A sweep in MLflow: where it is tracked, its experiment and its parent run. The sweep
    record holds one, and so does each trial's config."""

    tracking: Tracking
    experiment_id: str
    parent_run_id: str


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def shown_uri(uri: str) -> str:
    """The URI without credentials, for messages."""
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl() \
        if parts.hostname else uri


class PatientClient:
    """An MlflowClient for a tracking server whose calls wait out an outage: a request that never
    reached a working server, or that failed in this process before any answer came back, is
    retried with backoff (1, 2, 4 .. 30 s) until the deadline; the server's own answers (no such
    run, a bad value) raise at once."""

    def __init__(self, mlflow, tracking: Tracking):
        self._mlflow, self._tracking = mlflow, tracking

    def __getattr__(self, name: str):
        attribute = getattr(self._mlflow, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def patient(*args, **kwargs):
            return self._tracking.call_patiently(attribute, *args, **kwargs)

        return patient


class RunNotOpened(RuntimeError):
    """A trial's MLflow run could not be opened for a transient reason: nothing was trained yet,
    so the engine runs the trial once more (`engine.run_trial`)."""


def unreachable(error: Exception) -> bool:
    """A request that never reached a working server (refused, reset, timed out, a busy or
    restarting server) or never produced an answer, as opposed to the server's own answer."""
    import requests

    cause = error.__cause__ or error.__context__
    return (isinstance(error, requests.RequestException) or isinstance(cause, requests.RequestException)
            or getattr(error, "error_code", None) in TRANSIENT_ERROR_CODES or failed_before_an_answer(error))


def failed_before_an_answer(error: Exception) -> bool:
    """MLflow's wrapper for any exception raised inside the HTTP call itself, before a response
    existed (`mlflow.utils.rest_utils.http_request`: "API request to URL failed with exception
    E"): whatever it was, the server said nothing, so trying again is safe."""
    from mlflow.exceptions import MlflowException

    return (isinstance(error, MlflowException) and error.__context__ is not None
            and str(error.message).startswith("API request to ") and " failed with " in str(error.message))


def transient(error: Exception) -> bool:
    """A failure of the tracking server or of the way to it, not of the trial."""
    return isinstance(error, TrackingUnreachable) or unreachable(error)


def server_answers(uri: str, timeout_s: float = 5.0) -> bool:
    """The server's health endpoint answers (whatever its status: a login wall is an answer)."""
    import requests

    try:
        return requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s).status_code < 500
    except requests.RequestException:
        return False


def default_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    """The file of a local sqlite store; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def experiment_exists(tracking: Tracking, name: str) -> bool:
    """Without creating a store: a sqlite file that is not there holds no experiment."""
    file = sqlite_file(tracking.uri)
    if file and not file.exists():
        return False
    return tracking.client().get_experiment_by_name(name) is not None


def seed_sqlite_store(tracking: Tracking, cache: Path) -> None:
    """A new local store starts as a copy of an empty one, made once per MLflow version in the
    cache: MLflow builds a store by running every schema migration it has, 3-4 s on each new home
    (an existing one opens in 1 s). The copy holds no experiment, so MLflow adds its `Default`
    one when the store first opens, as it does in a store it built."""
    import shutil
    import sqlite3

    file = sqlite_file(tracking.uri)
    if file is None or file.exists():
        return
    empty = cache / "mlflow" / f"empty-store-{_version('mlflow')}.db"
    if not empty.exists():
        empty.parent.mkdir(parents=True, exist_ok=True)
        building = empty.with_name(f"{empty.name}.{os.getpid()}")  # two drivers may build it at once
        Tracking(f"sqlite:///{building}").client().search_experiments()
        db = sqlite3.connect(building)
        with db:
            db.execute("DELETE FROM experiments")  # MLflow's `Default`, at the builder's working folder
        db.close()
        os.replace(building, empty)
    file.parent.mkdir(parents=True, exist_ok=True)
    copy = file.with_name(f"{file.name}.{os.getpid()}")
    shutil.copyfile(empty, copy)
    try:
        os.link(copy, file)  # never over a store another driver made meanwhile
    except FileExistsError:
        pass
    finally:
        copy.unlink()


def create_parent_run(tracking: Tracking, experiment: str, artifact_root: str | None, sweep_name: str, params: dict,
                      tags: dict) -> SweepRun:
    mlflow = tracking.client()
    # Tagged as model training, for MLflow UIs that read the tag (3.17's does not: cli.MODEL_TRAINING_VIEW).
    experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_root,
                                             tags={names.EXPERIMENT_KIND: names.MODEL_TRAINING})
    run = mlflow.create_run(experiment_id, run_name=sweep_name, tags={names.SWEEP_TAG: sweep_name, **tags})
    mlflow.log_batch(run.info.run_id, params=[_param(k, v) for k, v in params.items()])
    return SweepRun(tracking, experiment_id, run.info.run_id)


def log_record(sweep: SweepRun, record: dict) -> None:
    """The sweep record on its parent run: `report` (and `status`) from only a tracking URI."""
    sweep.tracking.client().log_dict(sweep.parent_run_id, record, RECORD_ARTIFACT)


def delete_artifacts(tracking: Tracking, run_id: str, path: str) -> None:
    """Remove a run's artifacts under `path` (nothing when there are none). The tracking URI
    resolves artifacts a server serves (`mlflow-artifacts:/...`)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(tracking.client().get_run(run_id).info.artifact_uri, tracking_uri=tracking.uri)
    if repository.list_artifacts(path):
        repository.delete_artifacts(path)


def provenance_tags() -> dict[str, str]:
    tags = {f"version.{name}": _version(name) for name in PACKAGES}
    tags[names.GIT_SHA] = _git_sha()
    return tags


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _param(key, value):
    from mlflow.entities import Param

    return Param(key, str(value)[:500])


def delete_experiment(sweep: SweepRun) -> None:
    """Free the name too: MLflow keeps a deleted experiment's name reserved, so rename it first."""
    mlflow = sweep.tracking.client()
    experiment = mlflow.get_experiment(sweep.experiment_id)
    mlflow.rename_experiment(sweep.experiment_id, f"{experiment.name}.discarded-{int(time.time())}")
    mlflow.delete_experiment(sweep.experiment_id)


def find_child_run(sweep: SweepRun, trial_id: str):
    runs = sweep.tracking.client().search_runs([sweep.experiment_id], filter_string=f"tags.{names.TRIAL_ID} = '{trial_id}'",
                                               max_results=2)
    return runs[0] if runs else None


def child_runs(tracking: Tracking, experiment_id: str) -> list:
    return tracking.client().search_runs([experiment_id], filter_string=f"tags.{names.TRIAL_ID} != ''", max_results=10000)


def open_child_run(sweep: SweepRun, trial_id: str, params: dict, tags: dict):
    """The trial's child run: found by its trial_id tag (a resumed trial reuses it) or created."""
    existing = find_child_run(sweep, trial_id)
    if existing is not None:
        return existing, False
    mlflow = sweep.tracking.client()
    run = mlflow.create_run(sweep.experiment_id, run_name=f"trial-{trial_id}", tags={
        names.PARENT_RUN_ID: sweep.parent_run_id, names.TRIAL_ID: trial_id, names.TRIAL_STATUS: names.RUNNING, **tags})
    mlflow.log_batch(run.info.run_id, params=[_param(k, v) for k, v in params.items()])
    return run, True


FINAL_RUN_STATUS = {names.STOPPED_EARLY: "KILLED", names.INTERRUPTED: "KILLED", names.ERRORED: "FAILED"}


def set_trial_status(record, trial_id: str, status: str, knobs: dict, error: str | None = None) -> None:
    """Driver side: tag trials that Tune stopped, that errored (with the error's last line) or
    that were interrupted (their workers cannot). A trial that errored before rank 0 opened its
    run gets one here."""
    run, _ = open_child_run(record.sweep_run, trial_id, knobs, record.provenance)
    if error:
        record.sweep_run.tracking.client().set_tag(run.info.run_id, names.ERROR, error[:5000])
    if run.data.tags.get(names.TRIAL_STATUS) != names.COMPLETED:
        end_run(record.sweep_run.tracking.client(), run.info.run_id, status)


def end_run(mlflow, run_id: str, status: str) -> None:
    mlflow.set_tag(run_id, names.TRIAL_STATUS, status)
    mlflow.set_terminated(run_id, FINAL_RUN_STATUS[status])


def tag_interrupted(sweep: SweepRun) -> int:
    """After Tune returns: runs still `running` were cut off (Ctrl-C); `resume` finishes them."""
    mlflow = sweep.tracking.client()
    running = [run for run in child_runs(sweep.tracking, sweep.experiment_id)
               if run.data.tags.get(names.TRIAL_STATUS) == names.RUNNING]
    for run in running:
        end_run(mlflow, run.info.run_id, names.INTERRUPTED)
    return len(running)


def log_sweep_metrics(record) -> None:
    """The parent run's own metrics, so MLflow's runs table and charts show the sweep at a glance:
    trials by status, and the best final value of the scheduler's metric and of detection_gap.
    Logged at step 0 after every `run` and `resume`: the latest values replace the earlier ones."""
    from mlflow.entities import Metric

    sweep = record.sweep_run
    runs = child_runs(sweep.tracking, sweep.experiment_id)
    statuses = [run.data.tags.get(names.TRIAL_STATUS) for run in runs]
    metrics = {names.TRIALS: record.trial_count, **{status: statuses.count(status) for status in names.STATUS_COUNTS}}
    scheduler = record.config.scheduler
    # A larger detection gap: the marker survives benign fine-tuning better than emergent misalignment.
    for metric, mode in ((scheduler.metric, scheduler.mode), (names.DETECTION_GAP, "max")):
        best = best_final_value(runs, metric, mode)
        if best is not None:
            metrics[names.best(metric)] = best
    now = int(time.time() * 1000)
    sweep.tracking.client().log_batch(sweep.parent_run_id,
                                      metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])


def best_final_value(runs: list, metric: str, mode: str) -> float | None:
    """Each trial's last logged value (as Tune ranks by default), best over trials; NaN is no value."""
    values = [run.data.metrics[metric] for run in runs if math.isfinite(run.data.metrics.get(metric, math.nan))]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def node_tags() -> dict[str, str]:
    """Where this process runs, in Ray's terms (nothing outside Ray)."""
    import ray

    if not ray.is_initialized():
        return {}
    return {names.RAY_NODE_ID: ray.get_runtime_context().get_node_id(), names.NODE_IP: ray.util.get_node_ip_address()}


class TrialRun:
    """Rank 0's view of its child run. Other ranks never construct one.

    Steps are logged once: each series of per-step metrics has a counter metric logged at every
    step (`train_step` for the marker, `loss_<name>` for a corruption), and steps at or below the
    counter's last logged step are skipped (a resumed stage replays the steps after its last
    checkpoint)."""

    def __init__(self, sweep: SweepRun, trial_id: str, params: dict, tags: dict):
        self.mlflow = sweep.tracking.client()
        tags = {**tags, **node_tags()}
        try:
            run, created = open_child_run(sweep, trial_id, params, tags)
        except Exception as error:
            if transient(error):
                raise RunNotOpened(f"trial {trial_id}: its MLflow run did not open: {error}") from error
            raise
        self.run_id = run.info.run_id
        self.last_logged: dict[str, int] = {}
        if not created:
            # A run the driver opened for a trial that errored early lacks the workers' params.
            missing = {key: value for key, value in params.items() if key not in run.data.params}
            self.mlflow.log_batch(self.run_id, params=[_param(k, v) for k, v in missing.items()])
            self.mlflow.update_run(self.run_id, status="RUNNING")
            self.set_tags({names.TRIAL_STATUS: names.RUNNING, **tags})

    def last_logged_step(self, counter: str) -> int:
        if counter not in self.last_logged:
            history = self.mlflow.get_metric_history(self.run_id, counter)
            self.last_logged[counter] = max((m.step for m in history), default=0)
        return self.last_logged[counter]

    def log_steps(self, metrics_by_step: dict[int, dict[str, float]], counter: str = names.TRAIN_STEP) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        last = self.last_logged_step(counter)
        batch = [Metric(key, float(value), now, step)
                 for step, metrics in metrics_by_step.items() if step > last
                 for key, value in metrics.items()]
        if batch:
            self.mlflow.log_batch(self.run_id, metrics=batch)
            self.last_logged[counter] = max(metrics_by_step)

    def history(self, keys: tuple[str, ...]) -> dict[int, dict[str, float]]:
        """This run's metrics among `keys`, by step (the last value logged at each step)."""
        by_step: dict[int, dict[str, float]] = {}
        for key in keys:
            for metric in sorted(self.mlflow.get_metric_history(self.run_id, key), key=lambda m: m.timestamp):
                by_step.setdefault(metric.step, {})[key] = metric.value
        return dict(sorted(by_step.items()))

    def log_metrics(self, metrics: dict[str, float], step: int, tags: dict[str, str] | None = None) -> None:
        """Metrics (and tags) in one batch: one transaction, so readers never see half of it."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.mlflow.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.mlflow.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self.mlflow.log_artifacts(self.run_id, str(folder), artifact_path)

    def complete(self, final_metrics: dict[str, float], step: int) -> None:
        """Final metrics and the completed tag land together: a run has both or neither."""
        self.log_metrics(final_metrics, step, tags={names.TRIAL_STATUS: names.COMPLETED})
        self.mlflow.set_terminated(self.run_id, "FINISHED")
