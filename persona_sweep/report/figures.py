"""Drawing a panel's data: Plotly for the interactive page, matplotlib for the PNGs (no browser
needed). Both read the same dict from `panels.py`, so the page and the images show the same
numbers; hover on the page lists every seed's value."""
from __future__ import annotations

import math

# ---- plotly (the page) -----------------------------------------------------------------------

def plotly_figure(panel: dict):
    import plotly.graph_objects as go

    figure = PLOTLY[panel["type"]](panel, go)
    figure.update_layout(title=panel["title"], template="plotly_white", height=figure.layout.height or 420,
                         margin={"t": 60, "l": 60, "r": 20, "b": 60})
    if panel.get("range") and panel["type"] in ("bars", "lines"):  # a heatmap's range is its colour scale
        figure.update_yaxes(range=panel["range"])
    return figure


def hover(point: dict) -> str:
    seeds = "<br>".join(f"seed {v['seed']} ({v['trial_id']}): {fmt(v['value'])}" for v in point.get("values", []))
    interval = f"[{fmt(point['lo'])}, {fmt(point['hi'])}] ({point['interval']})" if "lo" in point else ""
    return f"mean {fmt(point['mean'])} {interval}<br>{seeds}"


def error_bars(points: list[dict]) -> dict:
    return {"type": "data", "symmetric": False,
            "array": [gap(p.get("hi"), p["mean"]) for p in points],
            "arrayminus": [gap(p["mean"], p.get("lo")) for p in points]}


def gap(high, low) -> float:
    return 0.0 if high is None or low is None else high - low


def plotly_bars(panel, go):
    figure = go.Figure()
    for series in panel["series"]:
        points = series["points"]
        figure.add_bar(name=series["name"], x=[p["x"] for p in points], y=[p["mean"] for p in points],
                       error_y=error_bars(points), hovertext=[hover(p) for p in points], hoverinfo="text+name")
    figure.update_layout(barmode="group")
    return figure


def plotly_heatmap(panel, go):
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=len(panel["series"]), cols=1, subplot_titles=[s["name"] for s in panel["series"]])
    for row, series in enumerate(panel["series"], 1):
        xs, ys, cells = heat_grid(series["points"])
        figure.add_heatmap(x=[str(x) for x in xs], y=[str(y) for y in ys], row=row, col=1, coloraxis="coloraxis",
                           z=[[cells[y, x]["mean"] if (y, x) in cells else None for x in xs] for y in ys],
                           text=[[fmt(cells[y, x]["mean"]) if (y, x) in cells else "" for x in xs] for y in ys],
                           texttemplate="%{text}",
                           hovertext=[[hover(cells[y, x]) if (y, x) in cells else "" for x in xs] for y in ys],
                           hoverinfo="text")
        figure.update_xaxes(title_text=panel["x_label"], row=row, col=1)
        figure.update_yaxes(title_text=panel["y"], row=row, col=1)
    low, high = panel.get("range") or (None, None)
    figure.update_layout(height=260 * len(panel["series"]) + 80,
                         coloraxis={"colorscale": "RdBu", "cmin": low, "cmax": high})
    return figure


def heat_grid(points: list[dict]):
    """The axis values in order, and the cells by (y, x)."""
    from persona_sweep.report.panels import ordered

    xs, ys = ordered(p["x"] for p in points), ordered(p["y"] for p in points)
    return xs, ys, {(p["y"], p["x"]): p for p in points}


def plotly_lines(panel, go):
    figure = go.Figure()
    for series in panel["series"]:
        points = series["points"]
        figure.add_scatter(name=series["name"], x=[p["x"] for p in points], y=[p["mean"] for p in points],
                           mode="lines+markers", error_y=error_bars(points), hovertext=[hover(p) for p in points],
                           hoverinfo="text+name")
    figure.update_xaxes(title_text=panel["x_label"], type="log" if panel.get("log_x") else None)
    return figure


def plotly_curves(panel, go):
    figure = go.Figure()
    for series in panel["series"]:
        xs, ys = [p["x"] for p in series["points"]], [p["mean"] for p in series["points"]]
        figure.add_scatter(name=series["name"], x=xs, y=ys, mode="lines+markers", legendgroup=series["name"])
        if series["stopped"]:
            figure.add_scatter(name=f"{series['name']} stopped", x=xs[-1:], y=ys[-1:], mode="markers",
                               marker={"symbol": "x", "size": 14, "color": "black"}, legendgroup=series["name"],
                               showlegend=False, hovertext=[f"{series['trial_id']}: stopped early by ASHA"],
                               hoverinfo="text")
    figure.update_xaxes(title_text=panel["x_label"])
    figure.update_yaxes(title_text=panel["series"][0]["metric"] if panel["series"] else "")
    return figure


def plotly_front(panel, go):
    figure = go.Figure()
    for series in panel["series"]:
        points = series["points"]
        figure.add_scatter(name=series["name"], x=[p["x"] for p in points], y=[p["mean"] for p in points],
                           mode="markers", hovertext=[f"{p['trial_id']} {p['label']}" for p in points],
                           hoverinfo="text+x+y")
        best = sorted((p for p in points if p["on_front"]), key=lambda p: p["x"])
        figure.add_scatter(name=f"front {series['name']}", x=[p["x"] for p in best], y=[p["mean"] for p in best],
                           mode="lines+markers", marker={"size": 12, "symbol": "star"})
        figure.update_xaxes(title_text=series["x_metric"])
        figure.update_yaxes(title_text=series["metric"])
    return figure


def plotly_scatter(panel, go):
    """One plot per series side by side (their x axes are different measures), points labelled."""
    from plotly.subplots import make_subplots

    count = max(1, len(panel["series"]))
    figure = make_subplots(rows=1, cols=count, subplot_titles=[s["name"] for s in panel["series"]])
    for col, series in enumerate(panel["series"], 1):
        points = series["points"]
        figure.add_scatter(name=series["name"], x=[p["x"] for p in points], y=[p["mean"] for p in points],
                           mode="markers+text", text=[p["label"] for p in points], textposition="top center",
                           row=1, col=col, showlegend=False)
        figure.update_xaxes(title_text=series["x_metric"], row=1, col=col)
        figure.update_yaxes(title_text=series["metric"], row=1, col=col)
    figure.update_layout(height=460)
    return figure


def plotly_table(panel, go):
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=len(panel["series"]), cols=1, specs=[[{"type": "table"}]] * len(panel["series"]),
                           subplot_titles=[s["name"] for s in panel["series"]])
    height = 80
    for row, series in enumerate(panel["series"], 1):
        header, cells = table_cells(series)
        figure.add_table(header={"values": header}, cells={"values": list(map(list, zip(*cells)))}, row=row, col=1)
        height += 40 + 28 * (len(cells) + 1)
    figure.update_layout(height=height)
    return figure


def table_cells(series: dict) -> tuple[list[str], list[list[str]]]:
    knobs = list(series["rows"][0]["knobs"]) if series["rows"] else []
    header = ["trial", "status", *series["metrics"], *knobs, "error"]
    cells = [[row["trial_id"], row["status"], *(fmt(row["metrics"][m]) for m in series["metrics"]),
              *(str(row["knobs"][k]) for k in knobs), (row["error"] or "")[:80]] for row in series["rows"]]
    return header, cells


PLOTLY = {"bars": plotly_bars, "heatmap": plotly_heatmap, "lines": plotly_lines, "curves": plotly_curves,
          "front": plotly_front, "scatter": plotly_scatter, "table": plotly_table}


def fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


# ---- matplotlib (the PNGs) -------------------------------------------------------------------

def save_png(panel: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"figure.constrained_layout.use": True}):  # room for the title above every subplot
        figure = MATPLOTLIB[panel["type"]](panel, plt)
        figure.suptitle(panel["title"])
        figure.savefig(path, dpi=110)
    plt.close(figure)


def value_or_nan(value) -> float:
    return math.nan if value is None else value


def png_bars(panel, plt):
    figure, axis = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(panel["series"]))
    labels = list(dict.fromkeys(p["x"] for s in panel["series"] for p in s["points"]))
    for index, series in enumerate(panel["series"]):
        at = {p["x"]: p for p in series["points"]}
        points = [at.get(label, {"mean": None}) for label in labels]
        means = [value_or_nan(p["mean"]) for p in points]
        errors = [[gap(p["mean"], p.get("lo")) for p in points], [gap(p.get("hi"), p["mean"]) for p in points]]
        axis.bar([i + index * width for i in range(len(labels))], means, width, yerr=errors, label=series["name"],
                 capsize=3)
    axis.set_xticks([i + width * (len(panel["series"]) - 1) / 2 for i in range(len(labels))], labels,
                    rotation=20, ha="right", fontsize=8)
    finish_axis(axis, panel)
    return figure


def png_heatmap(panel, plt):
    count = len(panel["series"])
    figure, axes = plt.subplots(count, 1, figsize=(7, 2.6 * count + 0.6), squeeze=False)
    for axis, series in zip(axes[:, 0], panel["series"]):
        xs, ys, cells = heat_grid(series["points"])
        grid = [[value_or_nan(cells[y, x]["mean"]) if (y, x) in cells else math.nan for x in xs] for y in ys]
        low, high = panel.get("range") or (None, None)
        image = axis.imshow(grid, aspect="auto", cmap="RdBu", vmin=low, vmax=high)
        axis.set_xticks(range(len(xs)), [str(x) for x in xs])
        axis.set_yticks(range(len(ys)), [str(y) for y in ys])
        for row, y in enumerate(ys):
            for col, x in enumerate(xs):
                if (y, x) in cells:
                    axis.text(col, row, fmt(cells[y, x]["mean"]), ha="center", va="center", fontsize=8)
        axis.set_title(series["name"], fontsize=9)
        axis.set_xlabel(panel["x_label"])
        axis.set_ylabel(panel["y"])
        figure.colorbar(image, ax=axis)
    return figure


def png_lines(panel, plt):
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for series in panel["series"]:
        points = series["points"]
        axis.errorbar([p["x"] for p in points], [value_or_nan(p["mean"]) for p in points], marker="o", capsize=3,
                      yerr=[[gap(p["mean"], p.get("lo")) for p in points], [gap(p.get("hi"), p["mean"]) for p in points]],
                      label=series["name"])
    if panel.get("log_x"):
        axis.set_xscale("log")
    axis.set_xlabel(panel["x_label"])
    finish_axis(axis, panel)
    return figure


def png_curves(panel, plt):
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for series in panel["series"]:
        xs, ys = [p["x"] for p in series["points"]], [value_or_nan(p["mean"]) for p in series["points"]]
        (line,) = axis.plot(xs, ys, marker=".", label=series["name"])
        if series["stopped"]:
            axis.plot(xs[-1:], ys[-1:], marker="x", markersize=12, color="black")
    axis.set_xlabel(panel["x_label"])
    axis.set_ylabel(panel["series"][0]["metric"] if panel["series"] else "")
    finish_axis(axis, panel)
    return figure


def png_front(panel, plt):
    figure, axis = plt.subplots(figsize=(7, 5))
    for series in panel["series"]:
        points = series["points"]
        axis.scatter([value_or_nan(p["x"]) for p in points], [value_or_nan(p["mean"]) for p in points],
                     label=series["name"], alpha=0.6)
        best = sorted((p for p in points if p["on_front"]), key=lambda p: p["x"])
        axis.plot([p["x"] for p in best], [p["mean"] for p in best], marker="*", markersize=12,
                  label=f"front {series['name']}")
        axis.set_xlabel(series["x_metric"])
        axis.set_ylabel(series["metric"])
    finish_axis(axis, panel)
    return figure


def png_scatter(panel, plt):
    count = max(1, len(panel["series"]))
    figure, axes = plt.subplots(1, count, figsize=(5.5 * count, 4.8), squeeze=False)
    for axis, series in zip(axes[0], panel["series"]):
        points = series["points"]
        axis.scatter([p["x"] for p in points], [p["mean"] for p in points])
        for point in points:
            axis.annotate(point["label"], (point["x"], point["mean"]), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
        axis.set_title(series["name"], fontsize=8)
        axis.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        axis.set_xlabel(series["x_metric"])
        axis.set_ylabel(series["metric"])
        axis.grid(alpha=0.3)
    return figure


def png_table(panel, plt):
    rows = sum(len(s["rows"]) + 2 for s in panel["series"])
    figure, axes = plt.subplots(len(panel["series"]), 1, figsize=(12, 0.32 * rows + 1), squeeze=False)
    for axis, series in zip(axes[:, 0], panel["series"]):
        header, cells = table_cells(series)
        axis.axis("off")
        if cells:
            shown = axis.table(cellText=cells, colLabels=header, loc="center")
            shown.auto_set_font_size(False)
            shown.set_fontsize(7)
        axis.set_title(series["name"], fontsize=9)
    return figure


def finish_axis(axis, panel: dict) -> None:
    if panel.get("range"):
        axis.set_ylim(*panel["range"])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


MATPLOTLIB = {"bars": png_bars, "heatmap": png_heatmap, "lines": png_lines, "curves": png_curves,
              "front": png_front, "scatter": png_scatter, "table": png_table}
