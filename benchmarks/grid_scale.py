"""Scale, by simulation: what the engine costs per trial on grids of 100 and 1,000 trials.

On 127.0.0.1 it starts what a team's cluster has: PostgreSQL, an MLflow tracking server on it,
and a two-node Ray cluster (tests/servers.py, as the cluster tests do). For each grid size, in
one run, on the same cluster and with the same bounded concurrency:

- bare Tune: a Ray Tune run of a function that reports once and returns;
- the engine: a toy-world sweep (`kind: sfp`, a grid over `seed`) run by `engine.start`, whose
  training is replaced by one report in every Ray worker (Ray's `worker_process_setup_hook`).
  Everything else is the engine's own: the sweep record, the trainable, one MLflow child run per
  trial opened, logged and completed, the progress callback, Tune's resume state, the status
  tags and the parent run's end-of-sweep bookkeeping.

It prints the wall time of each and the engine's overhead per trial beyond bare Tune, (engine -
bare) / trials (goal: under 100 ms), and asserts every trial has exactly one child run, completed,
with its final metrics. The last line is that overhead at the last grid size given.

    .venv/bin/python benchmarks/grid_scale.py [--trials 100 1000] [--concurrency 4]   (quick check: --trials 4)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the servers the cluster tests start
os.environ["RAY_AUTH_MODE"] = "token"  # before anything reads Ray's config, which it does once per process
os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0, for both runs: no tables

CPUS_PER_TRIAL = 0.25  # trials that train nothing: several per core, as many as `--concurrency`


def no_training() -> None:
    """Run in every Ray worker: the toy world's training module becomes one report of final
    metrics (put in place of the module, so that its imports, torch among them, are not paid
    either: they are the training's, not the engine's)."""
    import types

    from persona_sweep import names

    def one_report(params: dict, report) -> dict:
        final = {names.ALIGNMENT_FIDELITY: 1.0, names.EM_ROBUSTNESS: 1.0, names.LOSS_RATIO: 1.0}
        report({names.TRAIN_STEP: 1, names.LOSS: 0.0, **final})
        return final

    training = types.ModuleType("persona_sweep.sfp.experiments")
    training.persona_engineering_trial = one_report
    sys.modules[training.__name__] = training


def bare_tune(trials: int, concurrency: int, storage: Path) -> float:
    """Tune's own cost, with the engine's reuse of trial processes."""
    from ray import tune

    from persona_sweep import kinds

    def empty(config):
        tune.report({"done": 1})

    tuner = tune.Tuner(tune.with_resources(empty, {"CPU": CPUS_PER_TRIAL}),
                       param_space={"seed": tune.grid_search(list(range(trials)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=concurrency,
                                                   reuse_actors=kinds.KINDS["sfp"].reuses_trial_processes),
                       run_config=tune.RunConfig(name=f"bare-{trials}", storage_path=str(storage), verbose=0))
    started = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - started
    assert len(results) == trials and not results.errors
    return elapsed


def engine_sweep(trials: int, concurrency: int, tracking_uri: str, gcs: str):
    from persona_sweep import engine
    from persona_sweep.sweep_file import validate

    spec = validate({"name": f"scale-{trials}", "kind": "sfp", "grid": {"seed": list(range(trials))},
                     "resources": {"workers_per_trial": 1, "cpus_per_worker": CPUS_PER_TRIAL, "max_concurrent_trials": concurrency},
                     "tracking": {"mlflow_uri": tracking_uri}})
    started = time.perf_counter()
    outcome = engine.start(spec, gcs, announce=lambda line: None)
    elapsed = time.perf_counter() - started
    assert outcome.errored == 0 and outcome.interrupted == 0, outcome
    record = engine.SweepRecord.load(spec.name)
    return elapsed, record.sweep_run


def check_one_child_run_per_trial(sweep_run, trials: int) -> float:
    """Asserts one completed child run per trial with its final metrics; returns the mean
    seconds each run was open (the trial's own MLflow bookkeeping and its report)."""
    from persona_sweep import names, tracking

    runs = tracking.child_runs(sweep_run.tracking, sweep_run.experiment_id)
    trial_ids = [run.data.tags[names.TRIAL_ID] for run in runs]
    assert len(runs) == len(set(trial_ids)) == trials, (len(runs), len(set(trial_ids)), trials)
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags[names.TRIAL_STATUS] == names.COMPLETED, run.info
        assert {names.ALIGNMENT_FIDELITY, names.EM_ROBUSTNESS, names.LOSS_RATIO} <= set(run.data.metrics), run.data
    return sum(run.info.end_time - run.info.start_time for run in runs) / len(runs) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    import ray

    from conftest import free_port
    from persona_sweep import engine
    from servers import MlflowServer, PostgresServer, TwoNodeRayCluster

    work = Path(tempfile.mkdtemp(prefix="grid-scale-"))
    os.environ["PERSONA_SWEEP_HOME"] = str(work / "home")
    engine.ensure_auth_token()
    database = PostgresServer(free_port()).start()
    server = MlflowServer(database.uri, free_port(), work / "mlflow.log", artifacts=str(work / "mlflow-artifacts")).start()
    cluster = TwoNodeRayCluster({key: value for key, value in os.environ.items() if not key.startswith("PERSONA_SWEEP_")},
                                cpus=2)
    try:
        cluster.start()
        # As the engine connects: the workers' own output stays in their logs.
        ray.init(address=cluster.gcs, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": no_training})
        rows = []
        for trials in args.trials:
            # The engine first: whatever a first run pays (a cold worker pool) counts against it.
            ours, sweep_run = engine_sweep(trials, args.concurrency, server.uri, cluster.gcs)
            bare = bare_tune(trials, args.concurrency, work / "bare")
            in_trial = check_one_child_run_per_trial(sweep_run, trials)
            rows.append((trials, bare, ours, (ours - bare) / trials * 1000, in_trial * 1000))
        print(f"\ntwo nodes x 2 CPUs, {args.concurrency} trials at a time, MLflow on PostgreSQL")
        print("overhead: (engine - bare Tune) / trials, wall clock; child run open: mean time from a trial's "
              "MLflow run created to completed (inside the trial, in parallel with the others)")
        print(f"{'trials':>7} {'bare Tune s':>12} {'engine s':>9} {'overhead ms/trial':>18} {'child run open ms':>18}")
        for row in rows:
            print("{:>7} {:>12.1f} {:>9.1f} {:>18.0f} {:>18.0f}".format(*row))
        # Last, for `make bench` and tests/test_benchmarks.py: the figure at the last grid size given.
        trials, *_, overhead_ms, _ = rows[-1]
        print(f"engine overhead per trial beyond bare Tune: {overhead_ms:.1f} ms ({trials} trials)")
    finally:
        ray.shutdown()
        cluster.stop()
        server.stop()
        database.stop()


if __name__ == "__main__":
    main()
