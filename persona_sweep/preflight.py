"""Checks before an LLM sweep starts, each ending in one line naming the field.

Static validation (`validate`) cannot know the environment; these run at `run` on the driver
(trigger source, model, that every example fits `max_tokens`) and on the cluster (the trigger
source exists on every node where trials may run), before anything is written.
"""
from __future__ import annotations

import re
from pathlib import Path

from persona_sweep.config import BUILTIN_CORRUPTION_DATA as BUILTIN
from persona_sweep.config import TRIAL_REFERENCE, LlmKnobs, SweepConfig
from persona_sweep.data.traits import load_trait, shipped_traits
from persona_sweep.errors import SweepError
from persona_sweep.locations import is_local_path
from persona_sweep.secrets import read_trigger, trigger_problem


def check_llm_sweep(spec: SweepConfig) -> SweepConfig:
    """Run-time checks on the driver; returns the spec with every local path absolute."""
    from persona_sweep.corruption import epochs_as_steps
    from persona_sweep.models import default_cache, load_checked_tokenizer

    spec = absolute_paths(spec)
    problem = node_problem(spec, default_cache())
    if problem:
        raise SweepError(problem)
    try:
        tokenizer = load_checked_tokenizer(spec.model.name, default_cache(), spec.model.trust_remote_code)
    except ValueError as error:
        raise SweepError(str(error)) from None
    check_examples_fit(spec, tokenizer, read_trigger(spec.marker))
    check_traits(spec)
    return epochs_as_steps(spec, default_cache())


def check_traits(spec: SweepConfig) -> None:
    """Every trait the sweep reads loads (one line if not), and names metrics safely."""
    used = [*spec.eval.traits, *([spec.training.steer_trait] if "steer" in spec.grid.method else []),
            *(c.steer_against for c in spec.corruptions if c.steer_against)]
    for reference in used:
        name = load_trait(reference).name
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise SweepError(f"trait file {reference}: its name {name!r} names metrics (trait_shift_<name>_...): "
                             "use lowercase letters, digits and _")


def node_problem(spec: SweepConfig, cache: Path) -> str | None:
    """Why trials could not run in this process (one line), or None: the trigger source must be
    readable, and no corruption's data may contain the trigger or its placeholder (checked where
    the trigger is, so it never leaves the node)."""
    from persona_sweep.corruption import check_corruptions

    return trigger_problem(spec.marker) or check_corruptions(spec, read_trigger(spec.marker), cache)


def absolute_paths(spec: SweepConfig) -> SweepConfig:
    """Workers run in other folders: pin every local path the sweep names (a SWEEP/TRIAL_ID
    marker adapter becomes the folder of that trial's adapter)."""
    from persona_sweep.corruption import source_file

    marker, model = spec.marker, spec.model
    if marker.trigger_file:
        marker = marker.model_copy(update={"trigger_file": absolute(marker.trigger_file)})
    if marker.adapter:
        marker = marker.model_copy(update={"adapter": resolve_adapter(marker.adapter)})
    if is_local_path(model.name):
        model = model.model_copy(update={"name": absolute(model.name)})
    corruptions = [c.model_copy(update={"data": absolute(c.data)}) if c.data and source_file(c.data) and c.data not in BUILTIN
                   else c for c in spec.corruptions]
    corruptions = [c.model_copy(update={"domains": [absolute_domain(domain) for domain in c.domains]})
                   if c.kind == "drift" else c for c in corruptions]
    corruptions = [c.model_copy(update={"steer_against": absolute_trait(c.steer_against)}) if c.steer_against else c
                   for c in corruptions]
    training = spec.training.model_copy(update={"steer_trait": absolute_trait(spec.training.steer_trait)})
    evaluation = spec.eval.model_copy(update={"traits": [absolute_trait(trait) for trait in spec.eval.traits]})
    return spec.model_copy(update={"marker": marker, "model": model, "corruptions": corruptions, "training": training,
                                   "eval": evaluation})


def absolute_domain(reference: str) -> str:
    """A drift domain file given by path, made absolute (a shipped domain's name stays)."""
    from persona_sweep.data.conversations import shipped_domains

    return reference if reference in shipped_domains() else absolute(reference)


def absolute_trait(reference: str) -> str:
    return reference if reference in shipped_traits() else absolute(reference)


def absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def resolve_adapter(adapter: str) -> str:
    """A folder as given, or SWEEP/TRIAL_ID: the marker adapter that trial logged to MLflow."""
    if not TRIAL_REFERENCE.match(adapter) or Path(adapter).is_dir():
        return absolute(adapter)
    from persona_sweep.sweep_record import find_trial

    record, run = find_trial(adapter, "marker.adapter")
    folder = Path(record.paths.home) / "adapters" / adapter.replace("/", "-")
    if not (folder / "adapter_config.json").exists():
        try:
            record.sweep_run.tracking.client().download_artifacts(run.info.run_id, "adapter", str(folder.parent / ".dl"))
        except Exception:  # MLflow raises several types for a missing artifact
            raise SweepError(f"marker.adapter: trial {adapter} saved no marker adapter (a full fine-tune: give its "
                             "marker folder under <storage>/_markers/ as a path)") from None
        (folder.parent / ".dl" / "adapter").rename(folder)
    return str(folder)


def longest_context_knobs(spec: SweepConfig, method: str) -> LlmKnobs:
    grid = spec.grid
    return LlmKnobs(method=method, design=grid.design[0], context_length=int(largest(spec, "context_length")),
                    on_policy_fraction=largest(spec, "on_policy_fraction"), contrastive_negatives=True,
                    seed=grid.seed[0])


def largest(spec: SweepConfig, axis: str) -> float:
    """An axis's largest value a trial may take: in its grid list, or at the top of its search range."""
    sampled = spec.search.ranges.get(axis)
    return max([*getattr(spec.grid, axis), *([sampled.high] if sampled else [])])


def check_examples_fit(spec: SweepConfig, tokenizer, trigger: str) -> None:
    """The persona data must hold the longest context of every method on this tokenizer, and the
    longest example must fit `max_tokens` (training never cuts an example: the marker is at its end)."""
    from persona_sweep.train import MarkerData

    for method in spec.grid.method:
        knobs = longest_context_knobs(spec, method)
        try:
            data = MarkerData(spec, knobs, tokenizer, trigger, rank=0, world=1, device="cpu")
        except ValueError as error:  # more context than the persona data holds
            raise SweepError(f"method {method}: {error}") from None
        longest = data.longest_example_tokens()
        if longest > spec.training.max_tokens:
            raise SweepError(f"training.max_tokens: {spec.training.max_tokens} cannot hold the longest {method} "
                             f"example ({longest} tokens at grid.context_length {knobs.context_length}); raise "
                             "training.max_tokens or shorten grid.context_length")


def check_nodes(spec: SweepConfig, cache: str) -> None:
    """Trials read the trigger on whichever node runs them: check every alive node first, with a
    small task pinned to each, so that a missing env var or file, or corruption data holding the
    trigger, fails in one line now rather than in every trial 25 s into its start."""
    for node, problem in on_every_node(node_problem, spec, Path(cache)):
        if problem:
            raise SweepError(f"{problem} on node {node['NodeManagerAddress']}, where trials run")


def check_shared(paths) -> None:
    """Trials write into the home (and into a storage folder, unless it is an object store) from
    whichever node runs them: on a cluster of several nodes each must be one shared filesystem.
    A file the driver writes there must be visible on every node."""
    from persona_sweep import storage

    if len(trial_nodes()) < 2:
        return
    check_visible_everywhere(Path(paths.home), "home", "PERSONA_SWEEP_HOME on storage they all share")
    if not storage.is_uri(paths.storage) and not Path(paths.storage).is_relative_to(paths.home):
        check_visible_everywhere(Path(paths.storage).parents[1], "resources.storage",
                                 "a storage folder they all share (or an s3:// or gs:// URI)")


def check_visible_everywhere(folder: Path, what: str, need: str) -> None:
    import secrets

    probe = folder / f".shared-check-{secrets.token_hex(8)}"
    probe.write_text("")
    try:
        answers = on_every_node(Path.exists, probe)
    finally:
        probe.unlink(missing_ok=True)
    for node, visible in answers:
        if not visible:
            raise SweepError(f"{what} {folder}: not on node {node['NodeManagerAddress']} ({node['NodeID'][:12]}); "
                             f"a sweep on several nodes needs {need}")


def trial_nodes() -> list[dict]:
    import ray

    return [node for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0]


def on_every_node(function, *arguments) -> list[tuple[dict, object]]:
    """`function(*arguments)` once on each node where trials may run, with its answer."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote, nodes = ray.remote(num_cpus=0)(function), trial_nodes()
    answers = ray.get([remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                       .remote(*arguments) for node in nodes], timeout=300)
    return list(zip(nodes, answers))
