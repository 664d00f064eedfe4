"""`persona-sweep sfp ...`: the toy world's commands. Thin: parse, call experiments, print."""
from __future__ import annotations

import json
from pathlib import Path

import click


def _scales(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers like 0,0.5,1, got {text!r}") from None


def _index(text: str) -> int | None:
    if text == "final":
        return None
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"expected 'final' or an integer, got {text!r}") from None


def _limit_threads() -> None:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))


@click.group(name="sfp")
def sfp():
    """The toy world of seed 003: semi-factored processes and belief-state steering."""


@sfp.command()
@click.option("--process", "process_kind", type=click.Choice(["factored", "semi-factored"]), default="factored",
              show_default=True, help="Z1R x Z1R, or the partition-preserving semi-factored Z1R of appendix B.")
@click.option("--scales", default=None, help="Comma-separated steering scales [factored: 0,0.5,1,1.5,2,3; "
              "semi-factored: 0,0.5,1,2,3,5].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one JSON object per scale to this file.")
@click.option("--centroids", type=click.Choice(["marginal", "conditional"]), default="marginal", show_default=True,
              help="Class centroids averaged over the other factor (appendix A), or per class of the other factor.")
@click.option("--kl", type=click.Choice(["per-sequence", "batch-mean"]), default="per-sequence", show_default=True,
              help="KL per sequence then averaged (appendix A), or KL of the averaged distributions.")
@click.option("--position", default="final", show_default=True, help="Sequence position to read and steer: "
              "'final' or an index (negative counts from the end).")
@click.option("--layer", default="final", show_default=True, help="Residual stream after this block: 'final' or an index.")
def steer(process_kind, scales, json_out, centroids, kl, position, layer):
    """Belief-state steering table (appendix A, Table 1; Table 2 for semi-factored) with a random
    direction of the same norm as control. Trains the model on first use, then reuses the cache.

    KL in nats: KL(target-model || steered), KL(steered || original) on the steered factor's tokens
    and on the other factor's tokens (spillover)."""
    from persona_sweep.sfp.experiments import format_steer_table, steer_table

    _limit_threads()
    try:
        rows, summary = steer_table(process_kind, _scales(scales), centroids, kl, _index(position), _index(layer))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(format_steer_table(rows, summary))
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2))
        click.echo(f"wrote {json_out}")


@sfp.command()
@click.option("--scales", default="1,2,4", show_default=True, help="Steering scales for the reversal.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the measurements as JSON to this file.")
def em(scales, json_out):
    """EM analog: narrow fine-tune (misaligned persona, task 0), misalignment on every task, then
    reversal by belief-state steering vs difference-in-means."""
    from persona_sweep.sfp.experiments import em_experiment, format_em

    _limit_threads()
    result = em_experiment(_scales(scales))
    click.echo(format_em(result))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    sfp()
