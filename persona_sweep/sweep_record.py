"""The sweep record: what a sweep needs to resume, kept under the home as `sweeps/<name>.json`
and on the sweep's parent run (`tracking.RECORD_ARTIFACT`). Written once at `run`; `resume`,
`status`, `list`, `ui`, `report`, `detect --trial` and a `SWEEP/TRIAL_ID` marker adapter read it.

The home is resolved here, on the driver only (`$PERSONA_SWEEP_HOME`, default `./runs`; see `home_folder`): trials
get every path from the record (`trial.SweepPaths`), never from their environment.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from persona_sweep import tracking
from persona_sweep.errors import SweepError
from persona_sweep.sections import GridSweep
from persona_sweep.sweep_file import validate
from persona_sweep.trial import SweepPaths

# 2: paths fixed on the driver and stored in the record; 3: staged trials; 4: storage.
# The tracking handle (`tracking.SweepRun`) left the JSON as it was: still schema 4.
RECORD_SCHEMA = 4


# Ray sets it for a job's driver, whose working directory is the job's package: Ray's to delete.
RAY_JOB_DRIVER = "RAY_JOB_CONFIG_JSON_ENV_VAR"
JOB_DRIVER_HOME = "~/persona-sweep/runs"


def home_folder() -> Path:
    """The driver's home, absolute: `$PERSONA_SWEEP_HOME`, else `./runs`, or for a Ray job's
    driver `~/persona-sweep/runs` on the head (on several nodes the nodes' shared home must be
    set; `run` refuses a folder some node does not see). Never called in a trial."""
    default = JOB_DRIVER_HOME if RAY_JOB_DRIVER in os.environ else "./runs"
    return Path(os.environ.get("PERSONA_SWEEP_HOME", default)).expanduser().absolute()


def stand_in_home() -> None:
    """A Ray job's driver leaves its working directory, the job's package, for the home once the
    sweep is read: Ray may delete the package while the driver runs, and MLflow (a sqlite
    store's path) and others ask for the working directory."""
    if RAY_JOB_DRIVER in os.environ:
        os.chdir(home())


def home() -> Path:
    """The home, created if missing."""
    path = home_folder()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SweepError(f"home {path}: cannot create it ({error.strerror}); set PERSONA_SWEEP_HOME") from None
    return path


def record_path(name: str) -> Path:
    return home() / "sweeps" / f"{name}.json"


@dataclass
class SweepRecord:
    """What a sweep needs to resume: written once at `run`, never changed by `resume`.

    Its JSON (`fields`) is flat, as in schema 4 before the handle: `mlflow_uri`, `experiment_id`
    and `parent_run_id` beside the spec. The handle's deadline is the spec's own
    `tracking.wait_for_server_s`, so it is not stored twice, and records written before the
    handle load unchanged (`resume` of an older sweep works)."""

    name: str
    spec: dict
    paths: SweepPaths
    sweep_run: tracking.SweepRun
    trial_count: int
    created: float
    provenance: dict
    schema: int = RECORD_SCHEMA

    def fields(self) -> dict:
        """The record as JSON keeps it (the file and the parent run's artifact)."""
        run = self.sweep_run
        return {"name": self.name, "spec": self.spec, "paths": asdict(self.paths), "mlflow_uri": run.tracking.uri,
                "experiment_id": run.experiment_id, "parent_run_id": run.parent_run_id,
                "trial_count": self.trial_count, "created": self.created, "provenance": self.provenance,
                "schema": self.schema}

    def save(self) -> None:
        path = record_path(self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.fields(), indent=2))

    @classmethod
    def load(cls, name: str) -> SweepRecord:
        path = record_path(name)
        if not path.is_file():
            raise SweepError(f"no sweep named '{name}' under {home()} (see: persona-sweep list)")
        return cls.from_fields(json.loads(path.read_text()), name)

    @classmethod
    def from_fields(cls, fields: dict, name: str, reached_by: tracking.Tracking | None = None) -> SweepRecord:
        """A record as `save` wrote it (or as the parent run carries it). `reached_by`: the handle
        the record was read through, in place of the recorded URI (which may be the cluster's own
        name for the server) and of the spec's deadline."""
        if fields.get("schema") != RECORD_SCHEMA:
            raise SweepError(f"sweep '{name}' was recorded by an older persona-sweep (record schema "
                             f"{fields.get('schema', 1)}, this version reads {RECORD_SCHEMA}); run it again under a new --name")
        fields = dict(fields)
        recorded_uri, experiment_id, parent_run_id = (fields.pop(key) for key in ("mlflow_uri", "experiment_id",
                                                                                   "parent_run_id"))
        handle = reached_by or tracking.Tracking(recorded_uri, validate(fields["spec"]).tracking.wait_for_server_s)
        return cls(**{**fields, "paths": SweepPaths(**fields["paths"]),
                      "sweep_run": tracking.SweepRun(handle, experiment_id, parent_run_id)})

    @property
    def config(self) -> GridSweep:
        return validate(self.spec)


def list_records() -> list[SweepRecord]:
    folder = home() / "sweeps"
    return [SweepRecord.load(path.stem) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def find_trial(reference: str, field: str):
    """`SWEEP/TRIAL_ID`: that sweep's record and the trial's child run; a trial that has no run
    fails in one line naming `field` (the option or key that gave the reference)."""
    sweep, trial_id = reference.split("/")
    record = SweepRecord.load(sweep)
    run = tracking.find_child_run(record.sweep_run, trial_id)
    if run is None:
        raise SweepError(f"{field}: sweep '{sweep}' has no trial '{trial_id}' (see: persona-sweep status {sweep})")
    return record, run
