"""``saccade data``: generate and export datasets."""

from __future__ import annotations

from pathlib import Path

import click

from ..training.config import BACKGROUNDS
from .params import BACKGROUND_HELP, TRAINING, CanvasType, library_option, writable


@click.group()
def data() -> None:
    """Generate and export datasets."""


@data.command("export")
@click.option(
    "--dataset",
    "kind",
    type=click.Choice(["cluttered", "megapixel"]),
    default=None,
    help="Two-digit cluttered MNIST or Megapixel MNIST [default: megapixel for its tasks, "
    "else cluttered].",
)
# The task names mirror data.TASKS and data.MEGAPIXEL_TASKS, spelled out so that --help does
# not have to import torch.
@click.option(
    "--task",
    type=click.Choice(["identify", "sum", "mark", "majority", "max", "top", "multi"]),
    default=None,
    help="Label. Cluttered: unordered digit pair, digit sum, or digits present [default: "
    "identify]. Megapixel: the class of three of the five digits, the largest, the topmost, or "
    "the classes present [default: majority].",
)
@click.option(
    "--canvas",
    type=CanvasType(),
    default=None,
    help="Canvas size, H or HxW pixels [default: 100 for cluttered, 1500 for megapixel].",
)
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of canvases.")
# --distractors and --noise: the clutter of the canvases a training run draws by default.
@library_option(
    TRAINING,
    "--distractors",
    type=click.IntRange(min=0),
    help="Cluttered: number of 8x8 digit fragments (scaled with the canvas).",
)
@click.option(
    "--digit-size",
    type=click.IntRange(min=1),
    default=None,
    help="Cluttered: digit side in pixels [default: 28 per 100 pixels of the shorter side].",
)
@library_option(
    TRAINING,
    "--noise",
    type=click.IntRange(min=0),
    help="Megapixel: line-pair noise boxes per canvas.",
)
@library_option(TRAINING, "--background", type=click.Choice(BACKGROUNDS), help=BACKGROUND_HELP)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="test",
    show_default=True,
    help="Digit pool: test (held-out digits, which no model saw in training) or train; train "
    "and test canvases never share a digit.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed.")
@click.option(
    "--format",
    "image_format",
    type=click.Choice(["png", "jpg"]),
    default="png",
    show_default=True,
    help="Image files: lossless PNG, or JPEG at quality 95, as photos come.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    callback=writable,
    required=True,
    help="Output directory (created if missing).",
)
def export(
    kind: str | None,
    task: str | None,
    canvas: tuple[int, int] | None,
    n: int,
    distractors: int,
    digit_size: int | None,
    noise: int,
    background: str,
    split: str,
    seed: int,
    image_format: str,
    out: Path,
) -> None:
    """Write two-digit cluttered MNIST or Megapixel MNIST canvases as PNGs (or JPEGs) plus
    labels.csv, which saccade train --csv reads as photos, and boxes.csv, where the digits that
    decide each label are, which saccade evaluate --csv measures the glimpses' coverage on.

    Files are 000000.png, 000001.png, ...; labels.csv has the header "file,label" where the label
    is the class name ("3-7" for identify, "10" for sum, "4" for majority, max and top) or, for
    mark and multi, the sorted digits present joined by "+" ("3+7", "4+4", "1+4+9"); boxes.csv
    has "file,x0,y0,x1,y1", one row per deciding digit, in pixels.
    """
    import csv

    from click.core import ParameterSource
    from tqdm import tqdm

    from ..data import MEGAPIXEL_TASKS, MegapixelMNIST, TwoDigitCluttered, save_image
    from ..data.photos import BOXES
    from ..metrics import deciding_boxes

    kind = kind or ("megapixel" if task in MEGAPIXEL_TASKS else "cluttered")
    megapixel = kind == "megapixel"
    if task is not None and (task in MEGAPIXEL_TASKS) != megapixel:
        raise click.BadParameter(f"{task!r} is not a {kind} task", param_hint="--task")
    source = click.get_current_context().get_parameter_source
    foreign = ("distractors", "digit_size") if megapixel else ("noise",)
    given = [name for name in foreign if source(name) is ParameterSource.COMMANDLINE]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.UsageError(f"{options}: not an option of {kind} canvases")
    # Unless given, the task and canvas size are the dataset's defaults.
    chosen = {name: value for name, value in (("task", task), ("canvas", canvas)) if value}
    try:
        if megapixel:
            dataset = MegapixelMNIST(
                n=n, noise=noise, split=split, seed=seed, background=background, **chosen
            )
        else:
            dataset = TwoDigitCluttered(
                n=n,
                distractors=distractors,
                digit_size=digit_size,
                split=split,
                seed=seed,
                background=background,
                **chosen,
            )
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    try:
        out.mkdir(parents=True, exist_ok=True)
        labels = open(out / "labels.csv", "w", newline="")
        objects = open(out / BOXES, "w", newline="")
    except OSError as e:
        raise click.BadParameter(f"cannot write to {out}: {e.strerror}", param_hint="--out") from e
    width = max(6, len(str(n - 1)))
    with labels, objects:
        label_rows = csv.writer(labels, lineterminator="\n")
        label_rows.writerow(["file", "label"])
        box_rows = csv.writer(objects, lineterminator="\n")
        box_rows.writerow(["file", "x0", "y0", "x1", "y1"])
        for i in tqdm(range(n), desc="export", unit="canvas"):
            image, _ = dataset[i]
            name = f"{i:0{width}d}.{image_format}"
            save_image(image, out / name)
            described = dataset.describe(i)
            label_rows.writerow([name, described["label"]])
            for box in deciding_boxes(dataset.task, described).tolist():
                box_rows.writerow([name, *(round(side) for side in box)])
    click.echo(f"wrote {n} canvases, labels.csv and {BOXES} to {out}")
