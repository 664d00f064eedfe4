"""`persona-sweep report`: sweeps as an interactive page that opens offline, one PNG per panel.

It reads MLflow only (never reruns anything): `sweeps.py` reads the trials, `panels.py` turns
the panel files of `dashboards/panels/` into numbers, `figures.py` draws them. The page is
`dashboards/page.html` with Plotly's JavaScript inlined; each panel's numbers are embedded
beside its figure as JSON (`<script type="application/json" class="panel-data">`), so what the
page shows can be checked against MLflow. A single-sweep report is also logged on the sweep's
parent run (`report/`), replacing the previous one.
"""
from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass
from pathlib import Path
from string import Template

from persona_sweep import names, tracking
from persona_sweep.report import figures
from persona_sweep.report.panels import DASHBOARDS, load_panels, panel_data
from persona_sweep.report.sweeps import Sweep, read_sweep
from persona_sweep.sweep_record import home

ARTIFACT_PATH = "report"
TABLE_ARTIFACT = f"{ARTIFACT_PATH}/trials.json"


@dataclass
class Report:
    folder: Path
    panels: list[dict]
    notes: list[str]
    sweeps: list[Sweep]

    @property
    def index(self) -> Path:
        return self.folder / "index.html"


def build_report(sweep_names: list[str], out: Path | None, tracking_uri: str | None = None,
                 with_csv: bool = False, log=print) -> Report:
    sweeps = [read_sweep(name, tracking_uri) for name in sweep_names]
    folder = Path(out) if out else default_folder(sweeps[0])
    folder.mkdir(parents=True, exist_ok=True)
    panels, notes = [], []
    for panel in load_panels():
        data, note = panel_data(panel, sweeps)
        if data:
            panels.append(data)
        if note:
            notes.append(note)
    report = Report(folder, panels, notes, sweeps)
    write_page(report)
    for panel in panels:
        figures.save_png(panel, folder / f"{panel['id']}.png")
    if with_csv:
        write_csv(sweeps, folder / "trials.csv")
    for note in notes:
        log(note)
    if len(sweeps) == 1:
        log_to_mlflow(report)
    return report


def default_folder(sweep: Sweep) -> Path:
    return home() / "reports" / sweep.name


# ---- the page --------------------------------------------------------------------------------

def write_page(report: Report) -> None:
    from plotly.offline import get_plotlyjs

    sections = "\n".join(panel_section(panel) for panel in report.panels)
    page = Template((DASHBOARDS / "page.html").read_text()).substitute(
        title=html.escape(" vs ".join(s.name for s in report.sweeps)),
        header="\n".join(sweep_header(sweep) for sweep in report.sweeps),
        notes="\n".join(f"<li>{html.escape(note)}</li>" for note in report.notes),
        panels=sections, plotly_js=get_plotlyjs())
    report.index.write_text(page)


def panel_section(panel: dict) -> str:
    figure = figures.plotly_figure(panel).to_html(full_html=False, include_plotlyjs=False,
                                                  div_id=f"figure-{panel['id']}")
    data = json.dumps(panel).replace("</", "<\\/")  # JSON inside <script>: no early end tag
    return (f'<section class="panel" id="panel-{panel["id"]}">\n{figure}\n'
            f'<script type="application/json" class="panel-data" data-panel="{panel["id"]}">{data}</script>\n'
            f'<p class="png"><a href="{panel["id"]}.png">PNG</a></p>\n</section>')


def sweep_header(sweep: Sweep) -> str:
    counts = {}
    for trial in sweep.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    state = (f"still running (read at {sweep.read_at})" if sweep.running else f"ended (read at {sweep.read_at})")
    summary = ", ".join(f"{count} {status.replace('_', ' ')}" for status, count in sorted(counts.items()))
    lines = [f"<h2>{html.escape(sweep.name)}</h2>",
             f'<p class="state">{sweep.kind} sweep, {len(sweep.trials)} of {sweep.spec.trial_count()} trials '
             f"started: {html.escape(summary or 'none yet')}; {state}. MLflow: {html.escape(sweep.sweep_run.tracking.uri)}</p>"]
    failed = [t for t in sweep.trials if t.status in (names.ERRORED, names.INTERRUPTED)]
    if failed:
        items = "".join(f"<li>{t.trial_id} {t.status}: {html.escape(t.error or 'no error message')}</li>"
                        for t in failed)
        lines.append(f'<div class="unfinished"><p>Unfinished trials; <code>persona-sweep resume '
                     f"{html.escape(sweep.name)}</code> finishes them:</p><ul>{items}</ul></div>")
    return "\n".join(lines)


# ---- the table -------------------------------------------------------------------------------

def trial_rows(sweeps: list[Sweep]) -> list[dict]:
    """One row per trial: sweep, id, status, every grid axis, every final metric."""
    return [{"sweep": sweep.name, names.TRIAL_ID: trial.trial_id, "status": trial.status, **trial.knobs,
             **trial.metrics, names.ERROR: trial.error or ""} for sweep in sweeps for trial in sweep.trials]


def write_csv(sweeps: list[Sweep], path: Path) -> None:
    rows = trial_rows(sweeps)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


# ---- MLflow ----------------------------------------------------------------------------------

def log_to_mlflow(report: Report) -> None:
    """The page, the PNGs and the trials table on the parent run; a second report replaces the
    first (MLflow's `log_table` appends to an existing table, so that one goes first)."""
    sweep = report.sweeps[0]
    where, parent_run_id = sweep.sweep_run.tracking, sweep.sweep_run.parent_run_id
    client = where.client()
    tracking.delete_artifacts(where, parent_run_id, ARTIFACT_PATH)
    client.log_artifacts(parent_run_id, str(report.folder), ARTIFACT_PATH)
    rows = trial_rows([sweep])
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = {column: [row.get(column) for row in rows] for column in columns}
    client.log_table(parent_run_id, data=table, artifact_file=TABLE_ARTIFACT)
