"""A sweep's new local MLflow store is a copy of an empty one kept in the cache
(`tracking.seed_sqlite_store`): the same schema MLflow builds, and MLflow's own `Default`
experiment where the store first opens, as in a store MLflow built itself."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from persona_sweep import tracking


def schema(file: Path) -> tuple[dict, list]:
    """Every table's and index's definition, its clauses in any order (MLflow's migrations write a
    table's constraints in an order that changes from one process to the next), and the revision."""
    db = sqlite3.connect(file)
    try:
        definitions = {(kind, name): sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())
                       for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_master")}
        return definitions, db.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        db.close()


def test_a_new_local_store_is_the_empty_one_mlflow_builds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where MLflow puts the `Default` experiment's artifacts
    cache = tmp_path / "cache"
    built, first, second = (tracking.Tracking(tracking.default_uri(tmp_path / name)) for name in ("built", "a", "b"))
    for where in (first, second):
        tracking.seed_sqlite_store(where, cache)
    (empty,) = (cache / "mlflow").iterdir()
    assert (tmp_path / "b" / "mlflow.db").read_bytes() == empty.read_bytes()

    built.client().search_experiments()  # MLflow builds this one, migrations and all
    assert schema(tmp_path / "b" / "mlflow.db") == schema(tmp_path / "built" / "mlflow.db")
    client = second.client()
    assert [(e.experiment_id, e.name, e.artifact_location) for e in client.search_experiments()] == [
        (e.experiment_id, e.name, e.artifact_location) for e in built.client().search_experiments()]
    run = client.create_run(client.create_experiment("sweep"))
    client.log_metric(run.info.run_id, "loss", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}

    # A store that exists is left as it is; a server is not a file.
    held = (tmp_path / "b" / "mlflow.db").read_bytes()
    tracking.seed_sqlite_store(second, cache)
    assert (tmp_path / "b" / "mlflow.db").read_bytes() == held
    tracking.seed_sqlite_store(tracking.Tracking("http://127.0.0.1:1"), cache)
    assert list((cache / "mlflow").iterdir()) == [empty]
