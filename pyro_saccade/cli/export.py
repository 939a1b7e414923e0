"""``saccade export``: a trained model for shipping, under settings that change how it predicts."""

from __future__ import annotations

from pathlib import Path

import click

from .params import MODEL_OUT, CanvasType, settings_option, takes_checkpoint


@click.command("export")
@click.argument("checkpoint")
@MODEL_OUT
@click.option(
    "--task",
    type=click.Choice(["identify", "sum", "mark", "majority", "max", "top", "multi"]),
    default=None,
    help="Another digit task that the model's per-digit evidence answers as it is.",
)
@click.option(
    "--canvas",
    type=CanvasType(),
    default=None,
    help="The canvas size, H or HxW pixels, the model is for: saccade evaluate's default.",
)
@settings_option(
    "A SaccadeConfig field that keeps the weights, repeatable: how the model predicts, "
    "e.g. --set evidence=mixture --set predict_samples=8."
)
@takes_checkpoint
def export_command(
    checkpoint: str,
    out: Path,
    task: str | None,
    canvas: list[int] | None,
    settings: dict[str, object],
) -> None:
    """Save a trained model for shipping: its weights and configs without the optimiser's
    state, read another way (--set), for another digit task (--task) or canvas size (--canvas).
    The weights are not trained: a recipe's export step does the same
    (pyro_saccade.recipes)."""
    from ..checkpoint import export, load

    changes = {**settings, **({"task": task} if task else {})}
    try:
        export(checkpoint, out, changes, {"canvas": canvas} if canvas else None)
        model = load(out)
    except (TypeError, ValueError) as error:
        raise click.UsageError(str(error)) from error
    click.echo(f"wrote {out}: {model.config.task}, {model.config.evidence} evidence")
