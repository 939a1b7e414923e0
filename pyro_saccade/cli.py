"""The ``saccade`` command line.

torch and pyro are imported inside command bodies so that ``saccade --help`` answers instantly.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import click


class CanvasType(click.ParamType):
    """A canvas size ``H`` (square) or ``HxW``, converted to ``(height, width)``."""

    name = "canvas"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "H[xW]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):  # already converted, e.g. a default given as (H, W)
            return value
        parts = str(value).lower().split("x")
        try:
            sides = [int(part) for part in parts]
        except ValueError:
            sides = []
        if len(sides) not in (1, 2) or min(sides) < 1:
            self.fail(
                f"expected H or HxW with positive integers (e.g. 100 or 300x500), got {value!r}"
            )
        return (sides[0], sides[-1])


class KeyValueType(click.ParamType):
    """``KEY=VALUE`` as ``(key, value)``; the value is a number, a list of comma-separated
    numbers, or else text."""

    name = "key=value"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, object]:
        if isinstance(value, tuple):
            return value
        key, equals, text = str(value).partition("=")
        if not equals or not key.strip():
            self.fail(f"expected KEY=VALUE (e.g. scale=0.5,1,1), got {value!r}")
        try:
            numbers = [_number(part) for part in text.split(",")]
        except ValueError:
            return key.strip(), text
        return key.strip(), numbers[0] if len(numbers) == 1 else numbers


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


class SaccadeGroup(click.Group):
    """A click group that prints expected errors as one line on stderr, without a traceback,
    and takes its --debug flag anywhere on the command line, also after the subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)  # after "--" it is an argument
        if "--debug" in args[:end]:
            args = ["--debug", *[a for a in args[:end] if a != "--debug"], *args[end:]]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt as error:
            click.echo(f"Error: {str(error) or 'interrupted'}", err=True)
            ctx.exit(130)
        except Exception as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if not _expected(error):
                raise
            click.echo(f"Error: {_one_line(error)}", err=True)
            ctx.exit(1)


def _expected(error: Exception) -> bool:
    """Errors caused by input or environment, which deserve a message rather than a traceback."""
    from .errors import SaccadeError

    return isinstance(error, (SaccadeError, ValueError, OSError, RuntimeError))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or error.__class__.__name__


def _writable(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Fail before any work on an output path that cannot be written: the nearest existing
    directory on its way must take a new file (nothing is created here)."""
    import tempfile

    if value is None:
        return None
    existing = value if param.type.dir_okay else value.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise click.BadParameter(f"cannot write to {value}: {existing} is not a directory")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise click.BadParameter(
            f"cannot write to {value}: {existing}: {error.strerror or error}"
        ) from error
    return value


@click.group(cls=SaccadeGroup, context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="pyro_saccade")
@click.option(
    "--debug",
    is_flag=True,
    help="Show full tracebacks on errors (also accepted after the command).",
)
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Variational saccading: classify very large images from a few small crops."""
    # Read by OpenMP when torch loads, which no command has done yet. Spinning threads that wait
    # for a thread whose core is busy made inference 6 to 50 times slower on a shared 2-core
    # machine; sleeping ones cost 5 ms per image when idle (docs/guide.md, "Threads").
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ctx.obj = {"debug": debug}
    if not debug:
        warnings.showwarning = _show_warning


# Listed from the files, as training.pretrained_names() does, so that --help needs no torch.
PRETRAINED_NAMES = sorted(path.stem for path in (Path(__file__).parent / "pretrained").glob("*.pt"))
CHECKPOINT_HELP = (
    "CHECKPOINT is a checkpoint file, a run directory (its checkpoint.pt) or the name of a "
    f"pretrained model: {', '.join(PRETRAINED_NAMES) or 'none shipped'}."
)


def takes_checkpoint(command: Callable) -> Callable:
    """Add CHECKPOINT_HELP to a command's help (apply below the @main.command decorator)."""
    command.__doc__ = f"{command.__doc__.rstrip()}\n\n    {CHECKPOINT_HELP}\n"
    return command


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """A warning as one line "Warning: ..." on stderr, without the source line (see --debug)."""
    click.echo(f"Warning: {_one_line(Exception(message))}", err=True)


@main.group()
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
@click.option(
    "--distractors",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Cluttered: number of 8x8 digit fragments (scaled with the canvas).",
)
@click.option(
    "--digit-size",
    type=click.IntRange(min=1),
    default=None,
    help="Cluttered: digit side in pixels [default: 28 per 100 pixels of the shorter side].",
)
@click.option(
    "--noise",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Megapixel: line-pair noise boxes per canvas.",
)
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
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    callback=_writable,
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
    split: str,
    seed: int,
    out: Path,
) -> None:
    """Write two-digit cluttered MNIST or Megapixel MNIST canvases as PNGs plus labels.csv.

    Files are 000000.png, 000001.png, ...; labels.csv has the header "file,label" where the label
    is the class name ("3-7" for identify, "10" for sum, "4" for majority, max and top) or, for
    mark and multi, the sorted digits present joined by "+" ("3+7", "4+4", "1+4+9").
    """
    import csv

    from click.core import ParameterSource
    from tqdm import tqdm

    from .data import MEGAPIXEL_TASKS, MegapixelMNIST, TwoDigitCluttered, save_image

    kind = kind or ("megapixel" if task in MEGAPIXEL_TASKS else "cluttered")
    megapixel = kind == "megapixel"
    task = task or ("majority" if megapixel else "identify")
    if (task in MEGAPIXEL_TASKS) != megapixel:
        raise click.BadParameter(f"{task!r} is not a {kind} task", param_hint="--task")
    source = click.get_current_context().get_parameter_source
    foreign = ("distractors", "digit_size") if megapixel else ("noise",)
    given = [name for name in foreign if source(name) is ParameterSource.COMMANDLINE]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.UsageError(f"{options}: not an option of {kind} canvases")
    canvas = canvas or ((1500, 1500) if megapixel else (100, 100))
    try:
        if megapixel:
            dataset = MegapixelMNIST(task, canvas, n, noise=noise, split=split, seed=seed)
        else:
            dataset = TwoDigitCluttered(
                task,
                canvas,
                n,
                distractors=distractors,
                digit_size=digit_size,
                split=split,
                seed=seed,
            )
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    try:
        out.mkdir(parents=True, exist_ok=True)
        labels = open(out / "labels.csv", "w", newline="")
    except OSError as e:
        raise click.BadParameter(f"cannot write to {out}: {e.strerror}", param_hint="--out") from e
    width = max(6, len(str(n - 1)))
    with labels:
        writer = csv.writer(labels, lineterminator="\n")
        writer.writerow(["file", "label"])
        for i in tqdm(range(n), desc="export", unit="canvas"):
            image, _ = dataset[i]
            name = f"{i:0{width}d}.png"
            save_image(image, out / name)
            writer.writerow([name, dataset.describe(i)["label"]])
    click.echo(f"wrote {n} canvases and labels.csv to {out}")


# -- the model -----------------------------------------------------------------------------------

DEVICE = click.option(
    "--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, ..."
)
SEED = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
THREADS = click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="torch threads that run the model (0: torch's default, one per core). Waiting threads "
    "sleep (OMP_WAIT_POLICY=PASSIVE unless set), so a core busy with another job slows them "
    "little.",
)


def _use_threads(threads: int) -> None:
    """Run torch's operations on ``threads`` threads (0 leaves torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


IMAGES = click.argument(
    "images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
TASK = click.option(
    "--task",
    type=click.Choice(["identify", "sum", "mark", "majority", "max", "top", "multi"]),
    default="identify",
    show_default=True,
    help="Two-digit cluttered MNIST: digit pair, digit sum, or digits present. Megapixel MNIST "
    "(five digits and --noise scribbles): the class of three of them, the largest, the "
    "topmost, or the classes present.",
)


PHOTO_DIR = click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Photos instead of canvases: a folder with one subfolder per class (JPEG, PNG, TIFF "
    "of any size).",
)
PHOTO_CSV = click.option(
    "--csv",
    "csv_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Photos instead of canvases, listed in a CSV of path,label (paths relative to it).",
)


def _photos(data_dir: Path | None, csv_file: Path | None) -> str | None:
    """The photo source given by --data-dir or --csv, as an absolute path (or None)."""
    if data_dir and csv_file:
        raise click.UsageError("give --data-dir or --csv, not both")
    source = data_dir or csv_file
    return str(source.resolve()) if source else None


def _digit_source(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--digits as a TrainConfig source (``data.mnist.digit_source``): a directory is recorded
    as an absolute path, so that --resume finds it from anywhere."""
    from .data.mnist import digit_source

    try:
        return digit_source(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@main.command("train")
@TASK
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(["saccade", "resnet18-tiled", "resnet18", "proxy-cnn"]),
    default="saccade",
    show_default=True,
    help="Variational saccading, or a baseline: resnet18 on 224 px tiles, or on the whole image, "
    "or a small CNN on the --proxy sided proxy alone.",
)
@click.option(
    "--canvas",
    type=CanvasType(),
    default="100",
    show_default=True,
    help="Canvas size, H or HxW pixels.",
)
@click.option(
    "--distractors",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Two-digit tasks: 8x8 digit fragments per canvas.",
)
@click.option(
    "--noise",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Megapixel MNIST tasks: line-pair scribbles per canvas.",
)
@click.option(
    "--digit-size",
    type=click.IntRange(min=1),
    default=None,
    help="Digit side in pixels [default: scales with the canvas].",
)
@click.option(
    "--augment",
    is_flag=True,
    help="Rotate, scale and shear each training digit at random (held-out canvases never).",
)
@click.option(
    "--overlap",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of training canvases that draw one digit over the other, more than half of its "
    "box inside the other's (held-out canvases never; about 8% of them are so by chance).",
)
@click.option(
    "--digits",
    default="bundled",
    show_default=True,
    callback=_digit_source,
    help='MNIST digits the canvases are drawn from: "bundled" (the 10k test digits, 8000 for '
    'training), "bundled+5k" (and 5,000 of the official training digits), "bundled+60k" (and '
    'all 60,000, downloaded once; held-out digits stay the bundled 2,000), "torchvision" '
    "(downloads the official 60k/10k) or a directory of idx files.",
)
@PHOTO_DIR
@PHOTO_CSV
@click.option(
    "--test-data",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Held-out photos, a folder or CSV like the training ones [default: a seeded "
    "--test-fraction of them].",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of each class of photos held out for testing.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Passes over --train-size fresh canvases (0 with --init: save that model for this "
    "--task and --canvas without training).",
)
@click.option(
    "--train-size",
    type=click.IntRange(min=1),
    default=20000,
    show_default=True,
    help="Fresh canvases per epoch.",
)
@click.option(
    "--test-size",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Held-out canvases evaluated after every epoch.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Global batch: under torchrun it is split evenly over the processes.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Peak learning rate (cosine decay).",
)
@click.option(
    "--ema",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Decay of a moving average of the weights, which is evaluated and saved as the model "
    "(e.g. 0.999); 0 turns it off.",
)
@click.option(
    "--glimpses",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Number of glimpses T.",
)
@click.option(
    "--crop",
    type=click.IntRange(min=4),
    default=56,
    show_default=True,
    help="Crop side L in pixels.",
)
@click.option(
    "--crop-pool",
    type=click.Choice(["max_mean", "max"]),
    default="max_mean",
    show_default=True,
    help="Crop features pooled over the crop: their maxima, or their maxima and means.",
)
@click.option(
    "--antialias",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Each crop pixel averages k x k bilinear samples of the image (1: one sample).",
)
@click.option(
    "--scale-range",
    type=(click.FloatRange(min=0, max=1, min_open=True), click.FloatRange(min=0, max=1)),
    default=(0.3, 0.8),
    show_default=True,
    metavar="MIN MAX",
    help="Crop side as a fraction of the image's shorter side.",
)
@click.option(
    "--later-scale-max",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="Largest crop of glimpses 2..T (default: the MAX of --scale-range), so that the later "
    "glimpses zoom in; with --init it applies to that model.",
)
@click.option(
    "--proxy",
    type=click.IntRange(min=4),
    default=32,
    show_default=True,
    help="Proxy side J in pixels (multiple of 4).",
)
@click.option(
    "--proxy-noise",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Std of Gaussian noise added to the proxy.",
)
@click.option(
    "--likelihood",
    type=click.Choice(["per_glimpse", "aggregate"]),
    default="per_glimpse",
    show_default=True,
    help="Label likelihood at every glimpse (Eq. 6) or once after the last.",
)
@click.option(
    "--pair-evidence",
    is_flag=True,
    help="Digit-pair tasks: the head also reads a term per digit pair from the state, besides "
    "the evidence per digit; with --init it is added to that model's head (starting at zero).",
)
@click.option(
    "--kl-weight",
    type=click.FloatRange(min=0, min_open=True),
    default=0.05,
    show_default=True,
    help="Weight of the KL terms of Eq. 6.",
)
@click.option(
    "--prior",
    default="vrnn",
    show_default=True,
    help="Glimpse prior: vrnn, normal, fixed, centre or a registered name.",
)
@click.option(
    "--prior-arg",
    "prior_args",
    type=KeyValueType(),
    multiple=True,
    help="Argument of the prior, repeatable: e.g. --prior fixed --prior-arg loc=0,0,0 "
    "--prior-arg scale=0.5,1,1, or --prior centre --prior-arg spread=0.2.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Data-loader worker processes.",
)
@click.option(
    "--precision",
    type=click.Choice(["float32", "bfloat16"]),
    default="float32",
    show_default=True,
    help="bfloat16: the loss under torch.autocast, faster on CPUs with AMX or AVX-512 BF16 "
    "and on GPUs, slower on CPUs without them.",
)
@DEVICE
@SEED
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its checkpoint, or start it if --out holds none yet, "
    "so that the same command can be repeated after a crash (as torchrun --max-restarts does).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="K",
    help="Also write the checkpoint every K optimiser steps within an epoch, so that a restart "
    "loses at most K steps (0: at the end of each epoch only).",
)
@click.option(
    "--init",
    "init",
    default=None,
    help="Start from the weights of this checkpoint file, run directory or pretrained name "
    f"({', '.join(PRETRAINED_NAMES)}): fine-tuning.",
)
@click.option(
    "--set",
    "settings",
    type=KeyValueType(),
    multiple=True,
    help="Any SaccadeConfig field, repeatable, after the options above: e.g. --set where=cells "
    "--set box_min=32 --set box_max=96 (see pyro_saccade.SaccadeConfig); with --init, the "
    "fields that keep its weights' shapes, e.g. --set learn_where=true.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    callback=_writable,
    required=True,
    help="Run directory: checkpoint.pt, config.json, metrics.jsonl.",
)
@click.pass_context
def train_command(
    ctx: click.Context,
    task: str,
    model_kind: str,
    canvas: tuple[int, int],
    distractors: int,
    noise: int,
    digit_size: int | None,
    augment: bool,
    overlap: float,
    digits: str,
    data_dir: Path | None,
    csv_file: Path | None,
    test_data: Path | None,
    test_fraction: float,
    epochs: int,
    train_size: int,
    test_size: int,
    batch_size: int,
    lr: float,
    ema: float,
    glimpses: int,
    crop: int,
    crop_pool: str,
    antialias: int,
    scale_range: tuple[float, float],
    later_scale_max: float | None,
    proxy: int,
    proxy_noise: float,
    likelihood: str,
    pair_evidence: bool,
    kl_weight: float,
    prior: str,
    prior_args: tuple[tuple[str, object], ...],
    workers: int,
    precision: str,
    device: str,
    seed: int,
    resume: bool,
    checkpoint_every: int,
    init: str | None,
    settings: tuple[tuple[str, object], ...],
    quiet: bool,
    out: Path,
) -> None:
    """Train a variational saccading model (or a baseline) on generated cluttered-MNIST canvases,
    or on photos of any size with --data-dir or --csv.

    The model options (--glimpses to --prior) apply to the saccade model only. With photos,
    --task, --canvas, --distractors, --digit-size, --augment, --overlap, --digits, --train-size and
    --test-size do not apply: every training photo is seen once per epoch. --resume continues
    the run in --out as it was configured (options given again must repeat its values), or
    starts it from the options given when --out holds no checkpoint yet.
    """
    from .model import SaccadeConfig
    from .priors import make_prior
    from .training import (
        CHECKPOINT,
        TrainConfig,
        canvases,
        default_model_config,
        load,
        train,
        train_baseline,
    )

    _check_device(device)
    if resume and (out / CHECKPOINT).exists():
        trained, position = _check_resume(ctx, out)
        if trained is not None and position is not None:
            _echo_once(_resuming(out, trained.epochs, position))
        train(train_config=trained, out=out, resume=True, progress=not quiet)
        _report_checkpoint(out)
        return
    photos = _photos(data_dir, csv_file)
    if photos and model_kind != "saccade":
        raise click.BadParameter("photos train the saccade model only", param_hint="--model")
    if test_data and not photos:
        raise click.UsageError("--test-data needs --data-dir or --csv")
    train_config = TrainConfig(
        task="photo" if photos else task,
        photos=photos,
        photo_test=str(test_data.resolve()) if test_data else None,
        test_fraction=test_fraction,
        canvas=list(canvas),
        distractors=distractors,
        noise=noise,
        digit_size=digit_size,
        augment=augment,
        overlap=overlap,
        source=digits,
        epochs=epochs,
        train_size=train_size,
        test_size=test_size,
        batch_size=batch_size,
        lr=lr,
        ema=ema,
        proxy_noise=proxy_noise,
        seed=seed,
        device=device,
        workers=workers,
        precision=precision,
        checkpoint_every=checkpoint_every,
    )
    start = load(init) if init else None
    if start is not None and getattr(start, "kind", "saccade") != model_kind:
        raise click.BadParameter(
            f"{init} holds a {getattr(start, 'kind', 'saccade')} model, not {model_kind}",
            param_hint="--init",
        )
    if start is not None and model_kind == "saccade" and start.config.task != train_config.task:
        start = _for_task(start, train_config.task, "--init")
    # The model options that also apply to an --init model; the others are its own.
    changes: dict[str, object] = {}
    if pair_evidence:
        changes["pair_evidence"] = True
    if later_scale_max is not None:
        changes["later_scale_max"] = later_scale_max
    changes.update(_config_settings(settings))
    if start is not None and model_kind == "saccade" and changes:
        try:
            start = start.with_config(**changes)
        except (TypeError, ValueError) as error:
            raise click.UsageError(str(error)) from error
    if not photos:
        try:  # e.g. digits larger than the canvas
            canvases(train_config, "test", 1)
        except ValueError as error:
            raise click.UsageError(str(error)) from error
    model_config = None
    if model_kind == "saccade":
        classes = default_model_config(train_config).classes
        try:
            model_config = (
                start.config
                if start
                else SaccadeConfig(
                    **{
                        "classes": classes,
                        "task": train_config.task,
                        "channels": 3 if photos else 1,
                        "glimpses": glimpses,
                        "crop": crop,
                        "crop_pool": crop_pool,
                        "antialias": antialias,
                        "scale_min": scale_range[0],
                        "scale_max": scale_range[1],
                        "later_scale_max": later_scale_max,
                        "proxy": proxy,
                        "likelihood": likelihood,
                        "pair_evidence": pair_evidence,
                        "kl_weight": kl_weight,
                        "prior": prior,
                        "prior_args": dict(prior_args),
                        **_config_settings(settings),
                    }
                )
            )
            make_prior(model_config.prior, model_config.hidden, model_config.prior_args)
        except (TypeError, ValueError) as error:  # TypeError: a --set key that is no field
            raise click.UsageError(str(error)) from error
        if not photos:
            try:
                model_config.check_image(model_config.channels, *canvas)
            except ValueError as error:
                raise click.BadParameter(str(error), param_hint="--canvas") from error
    if (out / "checkpoint.pt").exists():  # starting anew would overwrite that run
        raise click.BadParameter(
            f"{out} holds a run already: continue it with --resume, or choose another directory",
            param_hint="--out",
        )
    if resume:
        _echo_once(f"starting the run in {out}: no checkpoint to resume yet")
    if model_config is None:
        train_baseline(
            model_kind, train_config, out=out, progress=not quiet, model=start, proxy=proxy
        )
    else:
        train(model_config, train_config, out=out, progress=not quiet, model=start)
    _report_checkpoint(out)


def _config_settings(settings: tuple[tuple[str, object], ...]) -> dict[str, object]:
    """--set KEY=VALUE pairs as SaccadeConfig fields: true, false and none as Python's."""
    words = {"true": True, "false": False, "none": None}
    return {
        key: words.get(value.lower(), value) if isinstance(value, str) else value
        for key, value in settings
    }


def _echo_once(text: str) -> None:
    """Print once, from the first process, when torchrun starts several."""
    if os.environ.get("RANK", "0") == "0":
        click.echo(text)


def _report_checkpoint(out: Path) -> None:
    """Say where the model is."""
    _echo_once(f"checkpoint: {out / 'checkpoint.pt'}")


def _resuming(out: Path, epochs: int, position: dict) -> str:
    """One line on where a resumed run continues, from its checkpoint's position."""
    done, steps = position["epoch"], position["batch"]
    if done >= epochs:
        return f"the run in {out} has finished its {epochs} epochs: nothing left to train"
    step = f", step {steps + 1}" if steps else ""
    return f"resuming the run in {out} at epoch {done + 1} of {epochs}{step}"


def _check_resume(ctx: click.Context, out: Path) -> tuple[object, dict | None]:
    """The TrainConfig of the run in ``out`` that --resume continues (None for a checkpoint
    without one) and its position (None for a model without training state): as it was
    configured, so an option given again must repeat the run's value, since another one would
    silently not apply."""
    import dataclasses
    import json

    from click.core import ParameterSource

    from .training import CHECKPOINT, TrainConfig, read_checkpoint

    payload = read_checkpoint(out / CHECKPOINT)
    trained = json.loads(payload.get("train_config") or "{}")
    if trained:  # with the defaults of settings added since the run was saved
        trained = dataclasses.asdict(TrainConfig(**trained))
    saved = {
        **trained,
        **json.loads(payload["config"]),
        "kind": payload.get("kind", "saccade"),
    }
    if "scale_min" in saved:
        saved["scale_range"] = [saved["scale_min"], saved["scale_max"]]
    fields = {
        "data_dir": "photos",
        "csv_file": "photos",
        "test_data": "photo_test",
        "model_kind": "kind",
        "digits": "source",
    }
    for param in ctx.command.params:
        name = param.name
        # --init gives a run its first weights only: a repeated command may keep it.
        if name in ("out", "resume", "quiet", "init"):
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value, field = ctx.params[name], fields.get(name, name)
        if name == "settings":  # --set KEY=VALUE: each must repeat the run's model config
            for key, setting in _config_settings(value).items():
                if saved.get(key, object()) != setting:
                    raise click.BadParameter(
                        f"the run in {out} has {key}={saved.get(key)!r}; --resume continues it "
                        "as it was configured",
                        ctx=ctx,
                        param=param,
                    )
            continue
        if isinstance(value, Path):
            value = str(value.resolve())
        elif isinstance(value, tuple):  # --canvas (H, W), or --prior-arg (key, value) pairs
            value = dict(value) if value and isinstance(value[0], tuple) else list(value)
        if field not in saved or value != saved[field]:
            was = f"{field}={saved[field]!r}" if field in saved else "no such setting"
            raise click.BadParameter(
                f"the run in {out} has {was}; --resume continues it as it was configured",
                ctx=ctx,
                param=param,
            )
    position = json.loads(payload["position"]) if "position" in payload else None
    return (TrainConfig(**trained) if trained else None), position


def _for_task(model: object, task: str, param_hint: str) -> object:
    """The model answering another two-digit task (``SaccadeModel.for_task``), or a usage
    error naming ``param_hint`` when it cannot."""
    from .model import SaccadeModel
    from .training import TrainConfig, default_model_config

    if not isinstance(model, SaccadeModel):
        raise click.BadParameter(
            f"a {type(model).__name__} answers {model.config.task!r} only", param_hint=param_hint
        )
    try:
        return model.for_task(task, default_model_config(TrainConfig(task=task)).classes)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=param_hint) from error


def _check_device(device: str) -> None:
    import torch

    try:
        torch.device(device)
    except RuntimeError as error:
        raise click.BadParameter(f"unknown device {device!r}", param_hint="--device") from error
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")


@main.command("evaluate")
@click.argument("checkpoint")
@click.option(
    "--canvas",
    type=CanvasType(),
    default=None,
    help="Canvas size [default: the one the model was trained on].",
)
@click.option(
    "--distractors", type=click.IntRange(min=0), default=None, help="[default: as trained]"
)
@click.option(
    "--task",
    type=click.Choice(["identify", "sum", "mark"]),
    default=None,
    help="Another two-digit task for a digit-pair model (identify answers sums as it is) "
    "[default: as trained].",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Number of held-out canvases.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Posterior samples averaged per image (0: posterior-mean glimpses).",
)
@click.option(
    "--proxy-noise",
    type=click.FloatRange(min=0),
    default=None,
    help="Std of proxy noise [default: as trained].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Canvases predicted together (lower it for large canvases to save memory).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the test canvases and of the posterior samples.",
)
@click.option(
    "--proxy-baseline",
    default=None,
    metavar="CHECKPOINT",
    help="Also evaluate this model (a proxy-only CNN: saccade train --model proxy-cnn; a "
    "checkpoint file or run directory) on the same canvases and report its accuracy beside.",
)
@PHOTO_DIR
@PHOTO_CSV
@DEVICE
@THREADS
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@takes_checkpoint
def evaluate_command(
    checkpoint: str,
    canvas: tuple[int, int] | None,
    distractors: int | None,
    task: str | None,
    n: int,
    samples: int,
    proxy_noise: float | None,
    batch_size: int,
    seed: int,
    proxy_baseline: str | None,
    data_dir: Path | None,
    csv_file: Path | None,
    device: str,
    threads: int,
    as_json: bool,
) -> None:
    """Accuracy on canvases built from held-out digits only, or on photos.

    For a saccade model on canvases it also reports what the glimpses read (see
    pyro_saccade.metrics): the coverage of the digits that decide the label (at least half of a
    digit inside a glimpse box at most 4x its side), the share of the image's pixels read, the
    mean glimpse box side, and the accuracy of the same model with its glimpses at random places.

    A model trained on photos is evaluated on its run's held-out photos, or on every photo of
    --data-dir or --csv (the canvas options and --n do not apply then).
    """
    import dataclasses
    import json
    import time

    import pyro

    from .data import MEGAPIXEL_TASKS
    from .metrics import evaluate_glimpses, glimpse_lines
    from .model import SaccadeModel
    from .training import canvases, load, model_from_checkpoint, read_checkpoint, trained_config

    _check_device(device)
    _use_threads(threads)
    payload = read_checkpoint(checkpoint)
    trained = trained_config(payload)
    model = model_from_checkpoint(payload, checkpoint).to(device).eval()
    pyro.set_rng_seed(seed)  # the same posterior samples every time
    noise = trained.proxy_noise if proxy_noise is None else proxy_noise
    photos = _photos(data_dir, csv_file)
    if photos or trained.photos:
        if proxy_baseline:
            raise click.UsageError("--proxy-baseline applies to canvases, not to photos")
        _evaluate_photos(model, trained, photos, batch_size, samples, noise, as_json)
        return
    baseline = load(proxy_baseline, device) if proxy_baseline else None
    # The model's own task, which is the trained one unless the model was moved to another
    # (SaccadeModel.for_task) and saved, as sum-100 is.
    answers = model.config.task
    config = dataclasses.replace(
        trained,
        seed=seed,
        task=task or answers,
        canvas=list(canvas) if canvas else trained.canvas,
        distractors=trained.distractors if distractors is None else distractors,
    )
    if config.task != answers:
        model = _for_task(model, config.task, "--task")
    try:
        if isinstance(model, SaccadeModel):
            model.config.check_image(model.config.channels, *config.canvas)
        test_set = canvases(config, "test", n)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--canvas") from error
    if baseline is not None and baseline.config.classes != model.config.classes:
        raise click.BadParameter(
            f"answers {baseline.config.task!r}, not {config.task!r}", param_hint="--proxy-baseline"
        )
    started = time.perf_counter()
    measured = evaluate_glimpses(
        model,
        test_set,
        batch_size=batch_size,
        samples=samples,
        noise=noise,
        seed=seed,
        proxy_baseline=baseline,
        progress=None if as_json else True,  # with --json, a bar only on a terminal's stderr
    )
    megapixel = config.task in MEGAPIXEL_TASKS
    result = {
        "checkpoint": str(checkpoint),
        "task": config.task,
        "canvas": "x".join(map(str, config.canvas)),
        **({"noise": config.noise} if megapixel else {"distractors": config.distractors}),
        "n": n,
        "samples": samples,
        "proxy_noise": noise,
        **measured.to_dict(),
        "proxy_baseline": proxy_baseline,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    clutter = f"{config.noise} noise boxes" if megapixel else f"{config.distractors} distractors"
    click.echo(
        f"accuracy {measured.accuracy:.4f} on {n} held-out {result['canvas']} canvases "
        f"({config.task}, {clutter})"
    )
    for line in glimpse_lines(measured, proxy_baseline):
        click.echo(line)


def _evaluate_photos(
    model: object,
    trained: object,
    photos: str | None,
    batch_size: int,
    samples: int,
    noise: float,
    as_json: bool,
) -> None:
    """Accuracy on every photo of ``photos``, or on the held-out photos of the run."""
    import json
    import time

    from .data import PhotoFolder
    from .data.photos import proxy_cache_dir
    from .model import SaccadeModel
    from .training import evaluate, photo_set

    if not isinstance(model, SaccadeModel):
        raise click.BadParameter(
            "only saccade models are evaluated on photos", param_hint="CHECKPOINT"
        )
    c = model.config
    dataset = (
        PhotoFolder(
            photos,
            classes=c.classes,
            proxy=c.proxy,
            channels=c.channels,
            cache_dir=proxy_cache_dir(),
            progress=not as_json,
            check=c.check_image,
        )
        if photos
        else photo_set(trained, c, "test", progress=not as_json)
    )
    started = time.perf_counter()
    accuracy = evaluate(
        model, dataset, batch_size=batch_size, samples=samples, noise=noise, progress=not as_json
    )
    source = photos or trained.photo_test or f"{trained.photos} (held-out split)"
    result = {
        "photos": source,
        "n": len(dataset),
        "skipped": len(dataset.skipped),
        "samples": samples,
        "proxy_noise": noise,
        "accuracy": accuracy,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"accuracy {accuracy:.4f} on {len(dataset)} photos of {source}")


@main.command("predict")
@click.argument("checkpoint")
@IMAGES
@click.option(
    "--samples",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Posterior samples averaged (0: posterior-mean glimpses).",
)
@SEED
@DEVICE
@THREADS
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@takes_checkpoint
def predict_command(
    checkpoint: str,
    images: tuple[Path, ...],
    samples: int,
    seed: int,
    device: str,
    threads: int,
    as_json: bool,
) -> None:
    """Classify image files (JPEG, PNG, TIFF, .npy) of any size.

    Photos are read lazily: JPEGs are decoded at the reduced scale each crop needs, tiled or
    striped TIFFs only where the crops fall; other formats are decoded once.
    """
    import json

    import pyro

    _use_threads(threads)
    model = _saccade_model(checkpoint, device)
    photos = [_open_image(path, model, lazy=True) for path in images]
    pyro.set_rng_seed(seed)
    for path, image in zip(images, photos, strict=True):
        result = describe_prediction(model, image, samples)
        if as_json:
            click.echo(json.dumps({"path": str(path), **result}))
        else:
            click.echo(f"{path}: {result['label']} (p={result['probability']:.3f})")


def describe_prediction(model: object, image: object, samples: int = 0) -> dict:
    """Label, probability and glimpses (z and pixel boxes) of one image [C, H, W] or Photo."""
    from .batches import prepare
    from .data import as_batch
    from .glimpse import box_scale
    from .labels import predicted

    device = next(model.parameters()).device
    height, width = image.shape[-2:]
    batch = as_batch([image], model.config.proxy)
    prediction = model.infer(*prepare(batch, device, model.config.proxy), samples=samples)
    probs = prediction.probs[0]
    z = prediction.z.mean(0)[0]  # [T, 3]: mean over posterior samples
    boxes = model.boxes(prediction.z, height, width, prediction.centres).mean(0)[0]
    scale = box_scale(boxes, height, width)
    label, probability = predicted(probs, model.config.classes, model.config.multilabel)
    return {
        "label": label,
        "probability": probability,
        "glimpses": [
            {
                "step": t,
                "z": [round(v, 4) for v in z[t].tolist()],
                "scale": round(float(scale[t]), 4),
                "x": round(float((box[0] + box[2]) / 2), 1),
                "y": round(float((box[1] + box[3]) / 2), 1),
                "box": [round(float(v), 1) for v in box],
            }
            for t, box in enumerate(boxes)
        ],
    }


@main.command("demo")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Held-out canvases per shipped model; a model of canvases over 512 px takes a tenth as "
    "many, at least 10.",
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
    callback=_writable,
    default="runs/demo",
    show_default=True,
    help="Directory for the pictures (and with --train, the run).",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it holds files already.")
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
    if out.exists() and any(out.iterdir()):
        if not force:
            raise click.BadParameter(
                f"{out} holds files already: add --force to overwrite them, or choose another "
                "directory",
                param_hint="--out",
            )
        # Only the demo's own run files go (train refuses a directory that holds a run); its
        # pictures are overwritten, and anything else in --out stays.
        for name in ("checkpoint.pt", "config.json", "metrics.jsonl"):
            (out / name).unlink(missing_ok=True)
    from .demo import run_demo, run_training

    _use_threads(threads)
    if train_first:
        run_training(epochs, train_size, seed, out, not quiet, click.echo)
    else:
        run_demo(n, seed, out, click.echo)


# -- looking inside ------------------------------------------------------------------------------


def _saccade_model(checkpoint: str, device: str) -> object:
    """The SaccadeModel of a checkpoint; the baselines have no glimpses to show."""
    from .checkpoint import load
    from .model import SaccadeModel

    _check_device(device)
    model = load(checkpoint, device)
    if not isinstance(model, SaccadeModel):
        raise click.BadParameter(
            f"{checkpoint} holds a {getattr(model, 'kind', 'baseline')} model, which has no "
            "glimpses",
            param_hint="CHECKPOINT",
        )
    return model


def _open_image(path: Path, model: object, lazy: bool = False) -> object:
    """An image file as ``model`` reads it, a tensor [C, H, W] or (``lazy``) a Photo on disk;
    an ImageError naming the file if the model cannot use it."""
    from .data import ImageError, Photo, load_image

    c = model.config
    image = Photo(path, channels=c.channels) if lazy else load_image(path, channels=c.channels)
    try:
        c.check_image(*image.shape)
    except ValueError as error:
        raise ImageError(f"{path}: {error}") from None
    return image


@main.command("posterior")
@click.argument("checkpoint")
@IMAGES
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Posterior draws (and as many prior draws) per image.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Images of one size sampled together.",
)
@SEED
@DEVICE
@THREADS
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_writable,
    required=True,
    help="netCDF file to write (open it with ArviZ).",
)
@takes_checkpoint
def posterior_command(
    checkpoint: str,
    images: tuple[Path, ...],
    samples: int,
    batch_size: int,
    seed: int,
    device: str,
    threads: int,
    out: Path,
) -> None:
    """Posterior samples of the glimpses of image files, saved as ArviZ netCDF.

    Groups: posterior (z, crop, box per image and glimpse), posterior_predictive (probs, label),
    prior and prior_predictive (the same under the prior), and observed_data when a labels.csv
    (file,label) beside the images gives every true label. Prints a summary.
    """
    import pyro

    from .labels import image_names, true_labels
    from .posterior import sample_posterior

    _use_threads(threads)
    model = _saccade_model(checkpoint, device)
    c = model.config
    photos = [_open_image(path, model, lazy=True) for path in images]
    labels = true_labels(images, c.classes, c.multilabel)
    pyro.set_rng_seed(seed)
    result = sample_posterior(
        model, photos, samples, names=image_names(images), labels=labels, batch_size=batch_size
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_arviz().to_netcdf(str(out))
    click.echo(result.summary())
    click.echo(f"wrote {out}")


@main.command("visualize")
@click.argument("checkpoint")
@IMAGES
@click.option(
    "--samples",
    type=click.IntRange(min=0),
    default=32,
    show_default=True,
    help="Posterior draws drawn as a faint cloud of boxes (0: none).",
)
@SEED
@DEVICE
@THREADS
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    callback=_writable,
    required=True,
    help="Directory for the pictures (created if missing).",
)
@takes_checkpoint
def visualize_command(
    checkpoint: str,
    images: tuple[Path, ...],
    samples: int,
    seed: int,
    device: str,
    threads: int,
    out: Path,
) -> None:
    """Draw where the model looks: OUT/NAME_glimpses.png for each image.

    Each picture shows the image with the posterior-mean glimpses numbered in order over a faint
    cloud of sampled ones, the crops the model saw, and the predicted label, with the true one
    when a labels.csv (file,label) sits beside the images. Large images are shown downsampled.
    """
    import pyro

    from .labels import checked_labels, labels_beside
    from .viz import glimpse_figure

    _use_threads(threads)
    model = _saccade_model(checkpoint, device)
    checked_labels(images, model.config.classes, model.config.multilabel)
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(seed)
    names = _unique_stems(images)
    for path, label, name in zip(images, labels_beside(images), names, strict=True):
        image = _open_image(path, model, lazy=True)
        target = out / f"{name}_glimpses.png"
        glimpse_figure(model, image, samples, label).savefig(target, dpi=100)
        click.echo(f"{path}: {target}")


def _unique_stems(paths: tuple[Path, ...]) -> list[str]:
    """A distinct name per image for its picture: the file's stem, with as many of its folders
    as tell it apart from the others (a/x.png and b/x.png: a_x and b_x), else a count."""
    keys = [path.resolve().with_suffix("").parts[1:] for path in paths]  # without the root
    depth = [1] * len(paths)
    while True:
        names = ["_".join(key[-d:]) for key, d in zip(keys, depth, strict=True)]
        owners: dict[str, set[tuple[str, ...]]] = {}
        for name, key in zip(names, keys, strict=True):
            owners.setdefault(name, set()).add(key)
        # Folders tell apart only different files: a file given twice is counted below.
        grow = [
            i
            for i, name in enumerate(names)
            if len(owners[name]) > 1 and depth[i] < len(keys[i])
        ]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # the same file twice, or x.png beside x.jpg
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


# -- benchmark -----------------------------------------------------------------------------------


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """Parse "100,512,1024" into positive integers."""
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"expected positive integers separated by commas, got {value!r}")
    return numbers


@main.command("benchmark")
@click.option(
    "--sizes",
    default="100,512,1024,2528,4096",
    show_default=True,
    callback=_int_list,
    help="Square canvas sides, comma-separated.",
)
@click.option(
    "--batch-sizes", default="1,16", show_default=True, callback=_int_list, help="Comma-separated."
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Timed runs after the warm-up (median reported).",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Wall-clock seconds per measurement: fewer repeats beyond it; cells whose warm-up and "
    "one run are estimated to overrun it are skipped.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads per measurement (one keeps numbers stable on a shared machine).",
)
@click.option(
    "--memory-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="GB; cells estimated to need more are skipped [default: half the available memory].",
)
@click.option(
    "--checkpoint",
    default=None,
    help="Saccade model to time: a checkpoint, run directory or pretrained name, or a run's "
    "config.json for an untrained model of that configuration (weights do not change the cost) "
    "[default: pretrained identify-100 if shipped, else untrained].",
)
@click.option(
    "--lazy",
    is_flag=True,
    help="Time only the inference of the saccade model and the proxy CNN, on canvases drawn "
    "from their patches (data.CanvasBatch) of the model's task: Megapixel MNIST, or two native "
    "28-px digits.",
)
@DEVICE
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    callback=_writable,
    default="runs/benchmark",
    show_default=True,
    help="Directory for benchmark.json, benchmark.md and benchmark.png.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def benchmark_command(
    sizes: list[int],
    batch_sizes: list[int],
    repeats: int,
    budget: float,
    memory_limit: float | None,
    threads: int,
    checkpoint: str | None,
    lazy: bool,
    device: str,
    out: Path,
    quiet: bool,
) -> None:
    """Latency, memory and training-step time of the saccade model vs the resnet18 baselines
    and the proxy-only CNN.

    Every measurement runs in a fresh process; the cost of building the proxy is reported apart
    from inference given the proxy, and inference is also measured cold (first call in a fresh
    process). Prints the tables and writes JSON, Markdown and a log-log plot. Measurements
    estimated to overrun --budget or --memory-limit are skipped, with reasons.
    """
    from .benchmark import default_checkpoint, run_benchmark, saccade_model
    from .benchmark_report import write
    from .checkpoint import resolve

    _check_device(device)
    if checkpoint and checkpoint.endswith(".json"):
        saccade_model(checkpoint)  # fail now, not in every measuring process
    elif checkpoint:
        resolve(checkpoint)
    report = run_benchmark(
        sizes,
        batch_sizes,
        repeats=repeats,
        budget=budget,
        memory_limit_gb=memory_limit,
        threads=threads,
        device=device,
        checkpoint=checkpoint or default_checkpoint(),
        progress=not quiet,
        lazy=lazy,
    )
    paths = write(report, out)
    click.echo(paths["md"].read_text())
    click.echo(f"wrote {paths['json']}, {paths['md']} and {paths['png']}")


if __name__ == "__main__":  # python -m pyro_saccade.cli, e.g. under torchrun
    main(prog_name="saccade")
