"""``saccade calibrate``: fit a trained model's temperature on held-out canvases and save it."""

from __future__ import annotations

from pathlib import Path

import click

from .params import DEVICE, MODEL_OUT, THREADS, check_device, takes_checkpoint, use_threads


@click.command("calibrate")
@click.argument("checkpoint")
@MODEL_OUT
@click.option(
    "--n",
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    help="Held-out canvases the temperature is fitted on.",
)
@click.option(
    "--fit-seed",
    type=int,
    default=10,
    show_default=True,
    help="Seed of those canvases and of their posterior draws: other canvases than those of "
    "saccade evaluate's --seed 0, 1, 2 ..., on which calibration is reported.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Canvases drawn and read together.",
)
@DEVICE
@THREADS
@takes_checkpoint
def calibrate_command(
    checkpoint: str,
    out: Path,
    n: int,
    fit_seed: int,
    batch_size: int,
    device: str,
    threads: int,
) -> None:
    """Fit the temperature of a saccade model's probabilities on held-out canvases of its own
    task and canvas, so that they are calibrated, and save the model with it.

    The temperature is the one under which the model's own prediction (its posterior draws
    averaged, then tempered) has the least expected calibration error on the canvases' labels;
    every answer stays as it was. The saved model also holds a profile of those canvases, which
    the warning on inputs unlike the training images reads and by which a prediction whose
    glimpses read nothing familiar is made unsure (pyro_saccade.familiar).

    The temperature is fitted on the model's probabilities alone, without the mixture, and the
    checkpoint's own profile is replaced (pyro_saccade.calibration.calibrate). The ECE and NLL
    printed after are those of the saved model on these canvases: tempered, then mixed by its
    new profile.
    """
    import dataclasses
    import json

    from ..calibration import calibrate
    from ..checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint, trained_config
    from ..model import SaccadeModel
    from ..training import canvases

    check_device(device)
    use_threads(threads)
    payload = read_checkpoint(checkpoint)
    model = model_from_checkpoint(payload, checkpoint).to(device).eval()
    if not isinstance(model, SaccadeModel):
        raise click.BadParameter("only saccade models are calibrated", param_hint="CHECKPOINT")
    trained = trained_config(payload)
    if trained.photos:
        raise click.BadParameter("calibrates models of generated canvases", param_hint="CHECKPOINT")
    dataset = canvases(dataclasses.replace(trained, seed=fit_seed), model.config.task, "test", n)
    fitted = calibrate(model, dataset, batch_size, fit_seed)
    save_checkpoint(out, fitted.model, trained, {"familiar": json.dumps(fitted.familiar)})
    before, after = fitted.before, fitted.after
    click.echo(
        f"temperature {fitted.temperature:.4f} on {n} canvases of seed {fit_seed}: "
        f"ECE {before.ece:.4f} -> {after.ece:.4f}, NLL {before.nll:.4f} -> {after.nll:.4f}"
    )
    click.echo(f"wrote {out}")
