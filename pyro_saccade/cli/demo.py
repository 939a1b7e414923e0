"""``saccade demo``: the shipped models on held-out canvases, or a brief training."""

from __future__ import annotations

from pathlib import Path

import click

from .params import SEED, THREADS, use_threads, writable

TRAIN_DIR = "train"  # the --train run's directory inside --out


@click.command("demo")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Held-out canvases per shipped model; a model of canvases over 512 px takes N / 10 of "
    "them, at least 10.",
)
@click.option(
    "--train",
    "train_first",
    is_flag=True,
    help="Instead, train a model briefly (it prints how long first), evaluate it and draw "
    "its glimpses.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --train: passes over --train-size fresh canvases.",
)
@click.option(
    "--train-size",
    type=click.IntRange(min=1),
    default=3000,
    show_default=True,
    help="With --train: fresh canvases per epoch.",
)
@SEED
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    callback=writable,
    default="runs/demo",
    show_default=True,
    help="Directory for the pictures; with --train, the run and its picture go to OUT/train "
    "instead, so the two never mix.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write even if the directory (OUT, or OUT/train with --train) holds files already.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@THREADS
def demo(
    n: int,
    train_first: bool,
    epochs: int,
    train_size: int,
    seed: int,
    out: Path,
    force: bool,
    quiet: bool,
    threads: int,
) -> None:
    """Predict held-out canvases with every shipped pretrained model, in under a minute: prints
    accuracy and time per image beside the tiled resnet18 baseline's, and draws where each
    model looked. With --train, train a model briefly instead.
    """
    # The pictures of the shipped models go to OUT, a training run to OUT/train: each refuses
    # only files of its own, so `saccade demo` then `saccade demo --train` (or the other way
    # round) needs no --force, and neither writes among the other's files.
    target = out / TRAIN_DIR if train_first else out
    held = []
    if target.is_dir():  # else writable() has checked that it can be made
        held = [p for p in target.iterdir() if train_first or p.name != TRAIN_DIR]
    if held:
        if not force:
            raise click.BadParameter(
                f"{target} holds files already: add --force to overwrite them, or choose "
                "another directory",
                param_hint="--out",
            )
        if train_first:
            # Only the run's own files go (train refuses a directory that holds a run); its
            # picture is overwritten, and anything else in OUT/train stays.
            from ..checkpoint import CHECKPOINT
            from ..training import METRICS

            for name in (CHECKPOINT, "config.json", METRICS):
                (target / name).unlink(missing_ok=True)

    from .demo_run import run_demo, run_training

    use_threads(threads)
    if train_first:
        run_training(epochs, train_size, seed, target, not quiet, click.echo)
    else:
        run_demo(n, seed, out, click.echo)
