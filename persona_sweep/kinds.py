"""The kinds of sweep: for each `kind:` a sweep file may name, what runs it.

    kind -> Kind(config class, trial runner, run-time pre-flight, cluster check, after-sweep hook)

The engine dispatches through `KINDS` (`of(spec)`); the config classes stay data.

Why two tables. Reading a sweep file must pick the kind's config class, and configuration may
import nothing that runs (an import-linter contract in pyproject.toml holds that, counting
imports inside functions, as grimp does). So the configuration layer keeps the data half,
`sweep_file.SWEEP_CLASSES` (kind -> config class), and this module, above the runtime modules,
imports them at the top and keeps the runtime half. Importing the runners lazily here instead
would not help: `validate` would then import this module, and through it `trial` and
`preflight`, which is the circle this split removes. A test checks that the two tables name
the same kinds with the same classes.

Adding a kind: its own package (config class, trial runner, checks), one line in
`sweep_file.SWEEP_CLASSES` and one entry in `KINDS`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from persona_sweep.config import SweepConfig
from persona_sweep.parent_run import log_on_parent_run
from persona_sweep.preflight import check_llm_sweep, check_nodes
from persona_sweep.sections import GridSweep
from persona_sweep.sfp.config import SfpSweepConfig
from persona_sweep.sfp.sweep import log_pareto_front, run_sfp_trial
from persona_sweep.trial import run_llm_trial


@dataclass(frozen=True)
class Kind:
    config: type[GridSweep]
    # In the Tune trial: runs one trial (`trial.TrialConfig`) to the end.
    run_trial: Callable
    # On the driver before anything is written: run-time checks (trigger, data, paths); returns
    # the spec with every local path absolute.
    checked_for_run: Callable[[GridSweep], GridSweep]
    # Once connected to the cluster (spec, cache folder): what every node where trials may run needs.
    check_on_cluster: Callable[[GridSweep, str], None]
    # After Tune returns, with the sweep record: what the kind adds to the parent run.
    after_sweep: Callable
    # Tune runs the next trial in a finished trial's process (`reuse_actors`), sparing the new
    # process's imports (~700 ms a trial, benchmarks/grid_scale.py). Only for a trial that runs
    # in its own process: Tune keeps a trial it stopped (ASHA) in the cache without stopping its
    # function, so an llm trial's Ray Train run would go on holding its workers' CPUs and the next
    # trial would wait for them forever (what hung the ASHA test).
    reuses_trial_processes: bool


def unchanged(spec: GridSweep) -> GridSweep:
    return spec


def nothing(*_) -> None:
    """Nothing to do for this kind."""


KINDS: dict[str, Kind] = {
    # The LLM marker sweep: its parent run gets the misalignment measure's positive control.
    "llm": Kind(config=SweepConfig, run_trial=run_llm_trial, checked_for_run=check_llm_sweep,
                check_on_cluster=check_nodes, after_sweep=log_on_parent_run, reuses_trial_processes=False),
    # The toy world needs nothing from the nodes beyond the package; its parent run gets the Pareto front.
    "sfp": Kind(config=SfpSweepConfig, run_trial=run_sfp_trial, checked_for_run=unchanged,
                check_on_cluster=nothing, after_sweep=log_pareto_front, reuses_trial_processes=True),
}


def of(spec: GridSweep) -> Kind:
    return KINDS[spec.kind]
