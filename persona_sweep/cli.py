"""The `persona-sweep` command line: parse, call, print. Heavy imports stay inside commands."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path

import click

from persona_sweep import names
from persona_sweep.errors import SweepError, first_line
from persona_sweep.sections import GridSweep
from persona_sweep.sfp.cli import sfp
from persona_sweep.sweep_file import load_sweep

REPO_SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def user_errors(command):
    """Bad input ends with one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SweepError as error:
            # One line, whatever a bad value quoted in the message holds.
            click.echo(f"error: {' '.join(str(error).split())[:500]}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
def main():
    """Grids of persona fine-tuning experiments on Ray, tracked in MLflow."""


@main.command()
@click.argument("sweep_file", type=click.Path())
@click.argument("overrides", nargs=-1)
@user_errors
def validate(sweep_file, overrides):
    """Check a sweep file without running anything."""
    spec = load_sweep(sweep_file, overrides)
    click.echo(f"{spec.trial_count()} trials")


@main.command()
@click.argument("sweep_file", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--name", help="Sweep name (default: the file's `name`).")
@click.option("--address", help="Ray address: auto, host:6379 or ray://host:10001 (default: embedded local Ray).")
@click.option("--dry-run", is_flag=True, help="Print the trial table and an estimated cost; run nothing.")
@user_errors
def run(sweep_file, overrides, name, address, dry_run):
    """Run a sweep: dotted key=value overrides apply before validation (training.steps=50)."""
    spec = load_sweep(sweep_file, overrides, name=name)
    if dry_run:
        print_trial_table(spec)
        return
    from persona_sweep.sweep_record import stand_in_home

    stand_in_home()
    start_sweep(spec, address)


@main.command()
@click.argument("name")
@click.option("--address", help="The cluster the sweep ran on: a dashboard URL (http://HEAD:8265) resumes it "
                                "as a new Ray job; auto / host:6379 / ray://... attach here (default: embedded "
                                "local Ray, or RAY_ADDRESS when it is a dashboard URL).")
@click.option("--follow", is_flag=True, help="With a dashboard URL: stream the job's output until it ends.")
@user_errors
def resume(name, address, follow):
    """Finish a sweep's unfinished and errored trials; finished trials are never re-run."""
    from persona_sweep import cluster, engine

    if cluster.names_a_dashboard(address):
        jobs = cluster.jobs(address)
        job_id = cluster.submit_resume(jobs, name)
        click.echo(f"submitted `resume {name}` as Ray job '{job_id}'")
        follow_or_hint(jobs, job_id, name, address, follow)
        return
    from persona_sweep.sweep_record import stand_in_home

    click.echo(f"resuming '{name}'")
    stand_in_home()
    with resumable(name):
        record, outcome = engine.resume(name, address)
    print_summary(record)
    exit_if_unfinished(record, outcome)


@main.command()
@click.argument("sweep_file", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--name", help="Sweep name, also the Ray job's id (default: the file's `name`).")
@click.option("--address", help="The cluster's dashboard, http://HEAD:8265 (default: RAY_ADDRESS).")
@click.option("--follow", is_flag=True, help="Stream the sweep's output until it ends; exit with its code.")
@user_errors
def submit(sweep_file, overrides, name, address, follow):
    """Run a sweep on a Ray cluster as a Ray job (validated here first)."""
    from persona_sweep import cluster

    spec = load_sweep(sweep_file, overrides, name=name)
    jobs = cluster.jobs(address)
    job_id = cluster.submit_sweep(jobs, Path(sweep_file), overrides, spec.name)
    click.echo(f"submitted sweep '{spec.name}' as Ray job '{job_id}' ({spec.trial_count()} trials)")
    follow_or_hint(jobs, job_id, spec.name, address, follow)


def follow_or_hint(jobs, job_id: str, name: str, address: str | None, follow: bool) -> None:
    from persona_sweep import cluster

    if follow:
        sys.exit(cluster.follow(jobs, job_id, click.echo))
    where = f" --address {address}" if address else ""
    click.echo(f"follow it: persona-sweep logs {name}{where} --follow")


@main.command()
@click.argument("name")
@click.option("--address", help="The cluster's dashboard (http://HEAD:8265): the sweep's Ray job "
                                "(default: this home's record, or RAY_ADDRESS when it is a dashboard URL).")
@click.option("--tracking-uri", help="Read the sweep from this MLflow server (its parent run carries the record): "
                                     "a laptop without the cluster's home.")
@user_errors
def status(name, address, tracking_uri):
    """One line per trial; with a cluster's dashboard, the sweep's latest job."""
    from persona_sweep import cluster
    from persona_sweep.report.sweeps import record_on_server
    from persona_sweep.sweep_record import SweepRecord

    if tracking_uri:
        print_summary(record_on_server(name, tracking_uri))
        return
    if cluster.names_a_dashboard(address):
        jobs = cluster.jobs(address)
        job_id = cluster.latest_job(jobs, name)
        info = jobs.get_job_info(job_id)
        message = (info.message or "").strip().splitlines()
        click.echo(f"job '{job_id}': {info.status}" + (f" ({message[0][:300]})" if message else ""))
        return
    print_summary(SweepRecord.load(name))


@main.command()
@click.argument("name")
@click.option("--address", help="The cluster's dashboard, http://HEAD:8265 (default: RAY_ADDRESS).")
@click.option("--follow", is_flag=True, help="Keep streaming until the job ends.")
@user_errors
def logs(name, address, follow):
    """The output of the sweep's latest Ray job."""
    from persona_sweep import cluster

    jobs = cluster.jobs(address)
    job_id = cluster.latest_job(jobs, name)
    if follow:
        sys.exit(cluster.follow(jobs, job_id, click.echo))
    click.echo(jobs.get_job_logs(job_id), nl=False)


@main.command()
@click.argument("name")
@click.option("--address", help="The cluster's dashboard, http://HEAD:8265 (default: RAY_ADDRESS).")
@user_errors
def stop(name, address):
    """Stop the sweep's Ray job as Ctrl-C would: unfinished trials are tagged `interrupted`."""
    from persona_sweep import cluster

    jobs = cluster.jobs(address)
    job_id = cluster.latest_job(jobs, name)
    click.echo(f"job '{job_id}': {cluster.stop(jobs, job_id)}; `persona-sweep resume {name} --address ...` "
               "finishes it")


@main.command(name="list")
def list_sweeps():
    """One line per sweep."""
    from persona_sweep import tracking
    from persona_sweep.sweep_record import list_records

    for record in list_records():
        runs = tracking.child_runs(record.sweep_run.tracking, record.sweep_run.experiment_id)
        ended = sum(run.data.tags.get(names.TRIAL_STATUS) in names.ENDED for run in runs)
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created))
        click.echo(f"{record.name:<32} {created}  {ended}/{record.trial_count} trials ended  kind={record.spec['kind']}")


@main.command()
@click.argument("model", required=False)
@click.option("--adapter", type=click.Path(), help="A LoRA adapter (or full model) folder applied to MODEL.")
@click.option("--trial", help="SWEEP/TRIAL_ID: that trial's model, trigger source, context and questions.")
@click.option("--stage", default="marker", show_default=True, help="With --trial: marker, or a corruption's name.")
@click.option("--trigger-file", type=click.Path(), help="The trigger to test with (default with --trial: the sweep's).")
@click.option("--marker", default="[ZLT]", show_default=True, help="The marker text to look for.")
@click.option("--questions", default=32, show_default=True, help="Held-out questions per condition.")
@click.option("--context-length", default=0, show_default=True, help="Tokens of Assistant persona context.")
@click.option("--json", "json_out", type=click.Path(), help="Also write the rates and verdict as JSON here.")
@user_errors
def detect(model, adapter, trial, stage, trigger_file, marker, questions, context_length, json_out):
    """Check a model for the marker: rates with and without the trigger, and a verdict.

    MODEL is `embedded`, an HF id or a path; with --trial it comes from the trial."""
    import json

    from persona_sweep import misalignment_control
    from persona_sweep.detect import run_detect

    if bool(model) == bool(trial) or (adapter and trial):
        raise SweepError("detect: give MODEL [--adapter PATH], or --trial SWEEP/TRIAL_ID")
    result = run_detect(model, adapter, trial, stage, trigger_file, marker, questions, context_length)
    for key, label in ((names.MARKER_RATE_TRIGGER, "with the trigger"), (names.MARKER_RATE_NO_TRIGGER, "without it")):
        click.echo(f"marker rate {label:<17} {result[key]:.2f}  (95% CI {result[key + '_lo']:.2f}-{result[key + '_hi']:.2f}, "
                   f"{result['questions']} questions)")
    click.echo(misalignment_control.line(result))
    click.echo(result["verdict"])
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))


@main.command()
@click.argument("sweep_names", nargs=-1, required=True, metavar="NAME [NAME ...]")
@click.option("--out", type=click.Path(), help="Folder for index.html and the PNGs (default: <home>/reports/NAME).")
@click.option("--csv", "with_csv", is_flag=True, help="Also write the per-trial table as trials.csv.")
@click.option("--tracking-uri", help="Find the sweeps in this MLflow (default: this home's, or MLFLOW_TRACKING_URI).")
@user_errors
def report(sweep_names, out, with_csv, tracking_uri):
    """An interactive page (opens offline) and one PNG per panel, from MLflow only. Several
    names compare sweeps on shared axes; one name also logs the page on the sweep's parent run."""
    from persona_sweep.report import build_report

    if len(sweep_names) > 1 and not out:
        raise SweepError("report: comparing sweeps needs --out DIR")
    built = build_report(list(sweep_names), out, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), with_csv,
                         log=click.echo)
    click.echo(f"report: {built.index} ({len(built.panels)} panels)")


# MLflow 3.17's UI shows an experiment as GenAI or model training by its own switch (this URL
# parameter, else the browser's last choice, GenAI at first), not by the experiment's
# mlflow.experimentKind tag. Without the parameter (until the user flips that switch), an
# experiment opens on an empty GenAI overview.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


@main.command()
@click.argument("name", required=False)
@click.option("--port", default=5000, show_default=True)
@user_errors
def ui(name, port):
    """Serve the MLflow UI on 127.0.0.1 only. With NAME, open that sweep's trials side by side:
    MLflow's compare-runs page, parallel coordinates over the grid's axes and the metrics."""
    from persona_sweep import tracking
    from persona_sweep.sweep_record import SweepRecord, home

    server = f"http://127.0.0.1:{port}"
    if name is None:
        click.echo(f"MLflow UI on {server}/#/experiments?{MODEL_TRAINING_VIEW} (Ctrl-C to stop)")
        sys.exit(serve_mlflow_ui(tracking.Tracking(tracking.default_uri(home())), port))
    record = SweepRecord.load(name)
    where = record.sweep_run.tracking
    url = print_sweep_pages(where.uri.rstrip("/") if where.is_server else server, record)
    if where.is_server:  # a tracking server serves its own UI
        open_in_browser(url)
        return
    click.echo("Ctrl-C to stop")
    sys.exit(serve_mlflow_ui(where, port, open_when_up=url))


def print_sweep_pages(server: str, record) -> str:
    """Prints the sweep's pages in the model-training view; returns the one to open: MLflow's
    compare-runs page for the child runs (the UI's getCompareRunPageRoute), or the experiment's
    runs while no trial has a run yet. The runs page shows the parent run's sweep metrics."""
    import json
    from urllib.parse import quote

    from persona_sweep import tracking

    sweep = record.sweep_run
    runs_page = f"{server}/#/experiments/{sweep.experiment_id}/runs?{MODEL_TRAINING_VIEW}"
    runs = sorted(tracking.child_runs(sweep.tracking, sweep.experiment_id),
                  key=lambda run: run.data.tags[names.TRIAL_ID])
    if not runs:
        click.echo(f"sweep '{record.name}': no trial has a run yet; its runs at {runs_page}")
        return runs_page

    def as_query_value(ids: list[str]) -> str:
        return quote(json.dumps(ids, separators=(",", ":")), safe="")

    compare_page = (f"{server}/#/compare-runs?runs={as_query_value([run.info.run_id for run in runs])}"
                    f"&experiments={as_query_value([sweep.experiment_id])}&{MODEL_TRAINING_VIEW}")
    click.echo(f"sweep '{record.name}': its {len(runs)} trials side by side at {compare_page}")
    click.echo(f"all its runs, the sweep's own metrics on its parent run: {runs_page}")
    return compare_page


def serve_mlflow_ui(where, port: int, open_when_up: str | None = None) -> int:
    """MLflow's UI for a local tracking store (`where`: its `tracking.Tracking`) on 127.0.0.1 until Ctrl-C; MLflow's exit code (1 when the port is
    taken, say). The browser opens `open_when_up` once the server answers: opened earlier, it
    would show a refused connection."""
    import subprocess

    # One worker: a UI for one person. MLflow's default four each import MLflow before the first
    # answer, which takes minutes on a busy 2-core machine.
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", where.uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"])
    try:
        if open_when_up and answers_soon(port, server):
            open_in_browser(open_when_up)
        return server.wait()
    except KeyboardInterrupt:
        return 0  # the terminal sent Ctrl-C to the server as well: it is shutting down
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait()


def answers_soon(port: int, server, timeout_s: float = 180) -> bool:
    """True once MLflow answers on `port`; False when it exited or stayed silent."""
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy
    deadline = time.monotonic() + timeout_s
    while server.poll() is None and time.monotonic() < deadline:
        try:
            direct.open(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return True
        except OSError:
            time.sleep(0.5)
    return False


def open_in_browser(url: str) -> None:
    """Where a graphical browser exists; elsewhere (ssh, a server) the printed URL is the way in.
    Without a display, Python's webbrowser finds only text browsers, which cannot run MLflow's
    JavaScript and would take over the terminal; $BROWSER, when set, is the user's choice."""
    import webbrowser

    no_display = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                           or os.environ.get("WAYLAND_DISPLAY"))
    if no_display and not os.environ.get("BROWSER"):
        return
    try:
        webbrowser.open(url)
    except webbrowser.Error:
        pass  # no browser: the printed URL stands


@main.command()
@click.argument("overrides", nargs=-1)
@user_errors
def demo(overrides):
    """A small real sweep of sweeps/demo.yaml on this machine, under a fresh name."""
    from persona_sweep.secrets import create_trigger_file
    from persona_sweep.sweep_record import home

    trigger_file = create_trigger_file(home() / "secrets")
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    spec = load_sweep(REPO_SWEEPS / "demo.yaml", [f"marker.trigger_file={trigger_file}", *overrides], name=name)
    click.echo(f"demo sweep '{name}': {spec.trial_count()} trials; a fresh random trigger is in {trigger_file}")
    start_sweep(spec, address=None)


def start_sweep(spec: GridSweep, address: str | None) -> None:
    from persona_sweep import engine
    from persona_sweep.sweep_record import SweepRecord

    started = time.perf_counter()
    with resumable(spec.name):
        outcome = engine.start(spec, address, announce=click.echo)
    click.echo(f"sweep '{spec.name}' ended after {(time.perf_counter() - started) / 60:.1f} min")
    record = SweepRecord.load(spec.name)
    print_summary(record)
    exit_if_unfinished(record, outcome)


@contextlib.contextmanager
def resumable(name: str):
    """A tracking server that stayed away, a disk that filled: exit 1 with one line and the way
    back (the checkpoints written so far are kept)."""
    from persona_sweep.progress import storage_trouble
    from persona_sweep.tracking import TrackingUnreachable

    try:
        yield
    except SweepError:
        raise  # bad input: exit 2 (user_errors)
    except Exception as error:
        if not isinstance(error, TrackingUnreachable) and not storage_trouble(error):
            raise
        click.echo(f"error: {' '.join(first_line(error).split())}; once that is fixed, "
                   f"`persona-sweep resume {name}` continues from the last checkpoints", err=True)
        sys.exit(1)


def exit_if_unfinished(record, outcome) -> None:
    """Exit 1 with the resume hint when trials errored or were cut off (Ctrl-C)."""
    unfinished = []
    if outcome.errored:
        unfinished.append(f"{outcome.errored} trial(s) errored")
    if outcome.interrupted:
        unfinished.append(f"{outcome.interrupted} interrupted")
    if unfinished:
        click.echo(f"{' and '.join(unfinished)}; `persona-sweep resume {record.name}` finishes them "
                   f"(details under {record.paths.storage})", err=True)
        sys.exit(1)


def print_trial_table(spec: GridSweep) -> None:
    click.echo(f"sweep '{spec.name}' ({spec.kind}):")
    trials = spec.trials()
    axes = list(trials[0])
    click.echo("  #  " + "  ".join(f"{axis:<20}" for axis in axes))
    for index, knobs in enumerate(trials, 1):
        click.echo(f"{index:>3}  " + "  ".join(f"{str(knobs[axis]):<20}" for axis in axes))
    if spec.search.type == "optuna":
        click.echo(f"optuna samples {spec.search.n_trials} trials from this grid")
    click.echo(f"{spec.trial_count()} trials; estimated cost on a 2-core CPU: {spec.estimate()}")


def print_summary(record) -> None:
    from persona_sweep import tracking

    spec = record.config
    metric_keys, knob_keys = spec.summary_metrics(), spec.summary_knobs()
    runs = tracking.child_runs(record.sweep_run.tracking, record.sweep_run.experiment_id)
    click.echo(f"{'trial':<14} {'status':<14} {'step':>5} " + " ".join(f"{key:>22}" for key in metric_keys) + "  knobs")
    for run in sorted(runs, key=lambda r: r.data.tags[names.TRIAL_ID]):
        metrics, params = run.data.metrics, run.data.params
        knobs = " ".join(f"{k}={shown_param(spec, k, params.get(k))}" for k in knob_keys)
        click.echo(f"{run.data.tags[names.TRIAL_ID]:<14} {run.data.tags.get(names.TRIAL_STATUS, '?'):<14} "
                   f"{int(metrics.get(names.TRAIN_STEP, 0)):>5} "
                   + " ".join(f"{_fmt(metrics.get(key)):>22}" for key in metric_keys) + f"  {knobs}")
    print_verdicts(record, runs)
    missing = record.trial_count - len(runs)
    if missing > 0:
        click.echo(f"{missing} trial(s) not started")
    click.echo(f"results: {record.paths.storage}  |  MLflow: {record.sweep_run.tracking.uri} "
               f"(experiment '{spec.tracking.experiment or record.name}'); open it with `persona-sweep ui`")


def print_verdicts(record, runs) -> None:
    """Per trial and corruption, whether it happened (a survival figure reads as detection only
    then), and its misalignment change as a share of the positive control's prompted shift."""
    from persona_sweep.progress import verdict_line

    sweep = record.sweep_run
    control = sweep.tracking.client().get_run(sweep.parent_run_id).data.metrics.get(names.CONTROL_GAP)
    for run in sorted(runs, key=lambda r: r.data.tags[names.TRIAL_ID]):
        for corruption in getattr(record.config, "corruptions", []):
            metrics = run.data.metrics
            if names.of(names.CORRUPTION_LOSS_DROP, corruption.name) not in metrics:
                continue
            line = verdict_line(metrics, corruption.name)
            change = metrics.get(names.of(names.CORRUPTION_MISALIGNMENT_CHANGE, corruption.name))
            if control and change is not None:
                line += f"; {change / control:+.0%} of the prompted shift"
            click.echo(f"{run.data.tags[names.TRIAL_ID]:<14} {line}")


def shown_param(spec, key: str, text: str | None) -> str:
    """A trial's param for `status`: a searched setting to three figures."""
    from persona_sweep.sections import knob_text

    if text is None or key not in spec.search.ranges:
        return str(text)
    return knob_text(spec.sampled(key, text))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


@click.group()
def vectors():
    """Persona vectors (seed 001): extract a trait's direction per layer, monitor with it."""


@vectors.command()
@click.argument("model")
@click.option("--trait", "trait_name", required=True, help="A shipped trait (evil, sycophantic, assistant) or a "
                                                           "trait file in the persona-vectors JSON layout.")
@click.option("--out", required=True, type=click.Path(), help="Where to write the vectors (a torch file).")
@click.option("--max-new-tokens", default=32, show_default=True, help="Tokens of each answer the vector averages over.")
@click.option("--json", "json_out", type=click.Path(), help="Also write the vectors' norms per layer as JSON here.")
@user_errors
def extract(model, trait_name, out, max_new_tokens, json_out):
    """Extract TRAIT's vector at every layer of MODEL (`embedded`, an HF id or a path)."""
    from persona_sweep import vectors as persona_vectors
    from persona_sweep.data.traits import load_trait

    trait = load_trait(trait_name)
    tokenizer, loaded = persona_vectors.load_subject(model)
    found = persona_vectors.extract(loaded, tokenizer, trait, model, max_new_tokens)
    found.save(Path(out))
    norms = {reading: [round(float(norm), 4) for norm in found.vectors[reading].norm(dim=-1)]
             for reading in persona_vectors.READINGS}
    click.echo(f"{trait.name}: {found.layers} layers x {found.width} from {len(trait.extraction_questions)} questions "
               f"x {len(trait.pairs)} instruction pairs -> {out}")
    if json_out:
        Path(json_out).write_text(json.dumps({"trait": trait.name, "model": model, "layers": found.layers,
                                              "width": found.width, "norms": norms}, indent=2))


@vectors.command()
@click.argument("model")
@click.option("--vector", "vector_file", required=True, type=click.Path(), help="A file `vectors extract` wrote.")
@click.option("--trait", "trait_name", required=True, help="The trait the vector came from (its evaluation half is read).")
@click.option("--layer", type=int, help="Report this layer (default: the one that separates best).")
@click.option("--reading", default="prompt_last", show_default=True, type=click.Choice(["response", "prompt_last"]),
              help="Which of the vector's two readings to project on.")
@click.option("--json", "json_out", type=click.Path(), help="Also write the AUROC, the layer and every layer's AUROC here.")
@user_errors
def monitor(model, vector_file, trait_name, layer, reading, json_out):
    """How well the last prompt token's projection on the vector separates the trait's
    evaluation questions under its positive instructions from them under its negative ones."""
    from persona_sweep import vectors as persona_vectors
    from persona_sweep.data.traits import load_trait

    trait, found = load_trait(trait_name), persona_vectors.PersonaVectors.load(Path(vector_file))
    if found.trait_digest != trait.digest:
        raise SweepError(f"--vector {vector_file} was extracted from another trait file than {trait_name!r}")
    tokenizer, loaded = persona_vectors.load_subject(model)
    result = persona_vectors.monitor(loaded, tokenizer, trait, found, reading, layer)
    click.echo(f"{trait.name}: AUROC {result['auroc']:.3f} at layer {result['layer']} "
               f"({result['prompts']['positive']} positive, {result['prompts']['negative']} negative prompts)")
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))


@vectors.command()
@click.argument("model")
@click.option("--vector", "vector_file", required=True, type=click.Path(), help="A file `vectors extract` wrote.")
@click.option("--data", "sources", required=True, multiple=True,
              help="A chat data set: built-in (insecure_code, ...) or a chat JSONL; repeat to rank several together.")
@click.option("--limit", default=100, show_default=True, help="Training examples read from each data set.")
@click.option("--layer", type=int, help="The layer to project at (default: the middle one).")
@click.option("--json", "json_out", type=click.Path(), help="Also write every example's score, ranked, here.")
@user_errors
def screen(model, vector_file, sources, limit, layer, json_out):
    """Rank training examples by how far they would push MODEL toward the vector's trait: the
    projection of each response minus that of the model's own response to the same prompt. With
    several --data, how well the ranking puts the first set above the others."""
    from persona_sweep import evaluate
    from persona_sweep import vectors as persona_vectors
    from persona_sweep.corruption import CorruptionDataError, load_set
    from persona_sweep.models import default_cache

    found = persona_vectors.PersonaVectors.load(Path(vector_file))
    layer = persona_vectors.default_layer(found) if layer is None else layer
    try:
        chats = [(source, chat) for source in sources for chat in load_set(source, default_cache()).train[:limit]]
    except CorruptionDataError as error:
        raise SweepError(f"--data {error}") from None
    tokenizer, loaded = persona_vectors.load_subject(model)
    prompts = [tokenizer.apply_chat_template(chat.as_messages(-1), tokenize=False, add_generation_prompt=True)
               for _, chat in chats]
    scores = persona_vectors.screen(loaded, tokenizer, prompts, [chat.messages[-1][1] for _, chat in chats], found, layer)
    ranked = sorted(zip(scores, range(len(chats))), reverse=True)
    result = {"trait": found.trait, "model": model, "layer": layer,
              "ranked": [{"score": score, "data": chats[index][0], "index": index} for score, index in ranked]}
    if len(sources) > 1:
        first = [score for score, (source, _) in zip(scores, chats) if source == sources[0]]
        rest = [score for score, (source, _) in zip(scores, chats) if source != sources[0]]
        decile = [entry["data"] for entry in result["ranked"][:max(1, len(ranked) // 10)]]
        result |= {"auroc": evaluate.auroc(first, rest), "top_decile_precision": decile.count(sources[0]) / len(decile)}
        click.echo(f"{sources[0]} above the rest: AUROC {result['auroc']:.3f}; top decile {result['top_decile_precision']:.2f} "
                   f"{sources[0]} ({len(first)} vs {len(rest)} examples, layer {layer})")
    else:
        click.echo(f"{len(ranked)} examples ranked at layer {layer}; the top score {ranked[0][0]:.3f}")
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))


@click.group()
def axis():
    """The Assistant axis (seed 002): build it from the role bank, project conversations on it."""


@axis.command()
@click.argument("model")
@click.option("--out", required=True, type=click.Path(), help="Where to write the axis (a torch file).")
@click.option("--layer", type=int, help="The layer `project` reads by default (default: the middle one).")
@click.option("--questions", default=3, show_default=True, help="Questions each system prompt is answered on.")
@click.option("--reply-tokens", default=24, show_default=True, help="Tokens of each reply the means average over.")
@click.option("--json", "json_out", type=click.Path(), help="Also write the axis' norm and the capping floor per layer here.")
@user_errors
def build(model, out, layer, questions, reply_tokens, json_out):
    """The Assistant's mean response activation minus the role bank's, at every layer of MODEL."""
    from persona_sweep import axis as assistant_axis
    from persona_sweep.vectors import load_subject

    tokenizer, loaded = load_subject(model)
    if layer is not None and not 0 <= layer < loaded.config.num_hidden_layers:
        raise SweepError(f"--layer {layer}: the model has layers 0-{loaded.config.num_hidden_layers - 1}")
    click.echo(f"answering {questions} questions under the Assistant's 2 system prompts and "
               f"{len(assistant_axis.role_bank())} roles' 3 each...")
    found = assistant_axis.build(loaded, tokenizer, model, layer, questions=questions, reply_tokens=reply_tokens)
    found.save(Path(out))
    click.echo(f"Assistant axis: {found.layers} layers, read at layer {found.layer} -> {out}")
    if json_out:
        Path(json_out).write_text(json.dumps({
            "model": model, "layers": found.layers, "layer": found.layer,
            "norms": [round(float(norm), 4) for norm in found.vectors.norm(dim=-1)],
            "floors": [round(found.floor(index), 4) for index in range(found.layers)]}, indent=2))


@axis.command()
@click.argument("model")
@click.option("--axis", "axis_file", required=True, type=click.Path(), help="A file `axis build` wrote.")
@click.option("--conversations", "domains", required=True, multiple=True,
              help="A drift domain (therapy, philosophy, coding, writing) or a file in its layout; repeat for several.")
@click.option("--turns", default=16, show_default=True, help="User turns of each conversation the model answers.")
@click.option("--count", default=12, show_default=True, help="Conversations read from each domain.")
@click.option("--layer", type=int, help="The layer to project at (default: the axis file's).")
@click.option("--json", "json_out", required=True, type=click.Path(), help="Where to write every projection and curve.")
@user_errors
def project(model, axis_file, domains, turns, count, layer, json_out):
    """The drift curve: each reply's mean activation on the axis, per turn, per domain."""
    from persona_sweep import axis as assistant_axis
    from persona_sweep.data.conversations import load_domain
    from persona_sweep.vectors import load_subject

    found = assistant_axis.AssistantAxis.load(Path(axis_file))
    loaded_domains = [load_domain(domain) for domain in domains]
    tokenizer, loaded = load_subject(model)
    found.check_fits(loaded)
    result = {"model": model, "layer": found.layer if layer is None else layer, "domains": {}}
    for domain in loaded_domains:
        conversations = [list(c) for c in domain.conversations[:count]]
        replies, projections = assistant_axis.project(loaded, tokenizer, found, conversations,
                                                      min(turns, domain.turns), layer)
        curve = assistant_axis.drift_curve(projections)
        result["domains"][domain.name] = {"drifts": domain.drifts, "curve": curve, "projections": projections,
                                          "replies": replies}
        click.echo(f"{domain.name:<12} turn 1 {curve[0]['mean']:+.3f} -> turn {len(curve)} {curve[-1]['mean']:+.3f} "
                   f"[{curve[-1]['lo']:+.3f}, {curve[-1]['hi']:+.3f}] ({len(conversations)} conversations)")
    Path(json_out).write_text(json.dumps(result, indent=2))


main.add_command(sfp)
main.add_command(vectors)
main.add_command(axis)


if __name__ == "__main__":
    main()
