"""``saccade train``: its options, and the checks that --resume continues a run as configured.

The model and training options take their defaults from SaccadeConfig and TrainConfig
(``params.library_option``); the command builds both configurations from them.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..training.config import BACKGROUNDS
from .params import (
    BACKGROUND_HELP,
    DEVICE_HELP,
    MODEL,
    PHOTO_CSV,
    PHOTO_DIR,
    PRETRAINED_NAMES,
    RECIPE_NAMES,
    TRAINING,
    CanvasType,
    KeyValueType,
    LibraryOption,
    canvas_text,
    check_device,
    for_task,
    given_fields,
    given_photos,
    library_option,
    settings_option,
    writable,
)


def _digit_source(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--digits as a TrainConfig source (``data.mnist.digit_source``): a directory is recorded
    as an absolute path, so that --resume finds it from anywhere."""
    from ..data.mnist import digit_source

    try:
        return digit_source(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@click.command("train")
# The task names mirror data.TASKS and data.MEGAPIXEL_TASKS, spelled out so that --help does
# not have to import torch.
@library_option(
    MODEL,
    "--task",
    type=click.Choice(["identify", "sum", "mark", "majority", "max", "top", "multi"]),
    help="Two-digit cluttered MNIST: digit pair, digit sum, or digits present. Megapixel MNIST "
    "(five digits and --noise scribbles): the class of three of them, the largest, the "
    "topmost, or the classes present.",
)
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(["saccade", "resnet18-tiled", "resnet18", "proxy-cnn"]),
    default="saccade",
    show_default=True,
    help="Variational saccading, or a baseline: resnet18 on 224 px tiles, or on the whole image, "
    "or a small CNN on the --proxy sided proxy alone.",
)
@library_option(
    TRAINING, "--canvas", type=CanvasType(), form=canvas_text, help="Canvas size, H or HxW pixels."
)
@library_option(
    TRAINING,
    "--distractors",
    type=click.IntRange(min=0),
    help="Two-digit tasks: 8x8 digit fragments per canvas.",
)
@library_option(
    TRAINING,
    "--noise",
    type=click.IntRange(min=0),
    help="Megapixel MNIST tasks: line-pair scribbles per canvas.",
)
@library_option(
    TRAINING,
    "--background",
    type=click.Choice(BACKGROUNDS),
    help=BACKGROUND_HELP,
)
@library_option(
    TRAINING,
    "--digit-size",
    type=click.IntRange(min=1),
    help="Digit side in pixels [default: scales with the canvas].",
)
@library_option(
    TRAINING,
    "--augment",
    is_flag=True,
    help="Rotate, scale and shear each training digit at random (held-out canvases never).",
)
@library_option(
    TRAINING,
    "--overlap",
    type=click.FloatRange(0, 1),
    help="Share of training canvases that draw one digit over the other, more than half of its "
    "box inside the other's (held-out canvases never; about 8% of them are so by chance).",
)
@library_option(
    TRAINING,
    "--digits",
    field="source",
    type=str,
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
@library_option(
    TRAINING,
    "--test-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    help="Share of each class of photos held out for testing.",
)
@library_option(
    TRAINING,
    "--epochs",
    type=click.IntRange(min=1),
    help="Passes over --train-size fresh canvases (saccade export saves a model for another "
    "--task or --canvas without training).",
)
@library_option(
    TRAINING, "--train-size", type=click.IntRange(min=1), help="Fresh canvases per epoch."
)
@library_option(
    TRAINING,
    "--test-size",
    type=click.IntRange(min=1),
    help="Held-out canvases evaluated after every epoch.",
)
@library_option(
    TRAINING,
    "--batch-size",
    type=click.IntRange(min=1),
    help="Global batch: under torchrun it is split evenly over the processes.",
)
@library_option(
    TRAINING,
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    help="Peak learning rate (cosine decay).",
)
@library_option(MODEL, "--glimpses", type=click.IntRange(min=1), help="Number of glimpses T.")
@library_option(MODEL, "--crop", type=click.IntRange(min=4), help="Crop side L in pixels.")
@library_option(
    MODEL,
    "--antialias",
    type=click.IntRange(min=1),
    help="Each crop pixel averages k x k bilinear samples of the image (1: one sample).",
)
@library_option(
    MODEL,
    "--proxy",
    type=click.IntRange(min=4),
    help="Proxy side J in pixels (multiple of 4).",
)
@library_option(
    TRAINING,
    "--proxy-noise",
    type=click.FloatRange(min=0),
    help="Std of Gaussian noise added to the proxy.",
)
@library_option(
    MODEL,
    "--likelihood",
    type=click.Choice(["per_glimpse", "aggregate"]),
    help="Label likelihood at every glimpse (Eq. 6) or once after the last.",
)
@library_option(
    MODEL,
    "--kl-weight",
    type=click.FloatRange(min=0, min_open=True),
    help="Weight of the KL terms of Eq. 6.",
)
@library_option(
    MODEL,
    "--prior",
    type=str,
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
@library_option(
    TRAINING, "--workers", type=click.IntRange(min=0), help="Data-loader worker processes."
)
@library_option(
    TRAINING,
    "--precision",
    type=click.Choice(["float32", "bfloat16"]),
    help="bfloat16: the loss under torch.autocast, faster on CPUs with AMX or AVX-512 BF16 "
    "and on GPUs, slower on CPUs without them.",
)
@library_option(TRAINING, "--device", type=str, help=DEVICE_HELP)
@library_option(TRAINING, "--seed", type=int, help="Random seed.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its checkpoint, or start it if --out holds none yet, "
    "so that the same command can be repeated after a crash (as torchrun --max-restarts does).",
)
@library_option(
    TRAINING,
    "--checkpoint-every",
    type=click.IntRange(min=0),
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
@settings_option(
    "Any SaccadeConfig field, repeatable, after the options above; a dotted KEY sets a "
    "field of a section, and text given to a section names its kind: e.g. --set where=cells "
    "--set where.box_min=32 --set where.box_max=96 (see pyro_saccade.SaccadeConfig). With "
    "--init, the fields that keep its weights' shapes, e.g. --set where.learn=true."
)
@click.option(
    "--recipe",
    default=None,
    help="Make a model by a recipe, every stage in one resumable run: a shipped one "
    f"({', '.join(RECIPE_NAMES)}) or a TOML file like them. --task T --canvas C alone picks "
    "T's shipped recipe for C.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    callback=writable,
    required=True,
    help="Run directory: checkpoint.pt, config.json, metrics.jsonl.",
)
@click.pass_context
def train_command(
    ctx: click.Context,
    model_kind: str,
    data_dir: Path | None,
    csv_file: Path | None,
    test_data: Path | None,
    prior_args: tuple[tuple[str, object], ...],
    resume: bool,
    init: str | None,
    settings: dict[str, object],
    recipe: str | None,
    quiet: bool,
    out: Path,
    **fields: object,  # SaccadeConfig's and TrainConfig's, read through given_fields
) -> None:
    """Train a variational saccading model (or a baseline) on generated cluttered-MNIST canvases,
    or on photos of any size with --data-dir or --csv.

    The model options (--glimpses to --prior) apply to the saccade model only. With photos,
    --task, --canvas, --distractors, --background, --digit-size, --augment, --overlap, --digits,
    --train-size and --test-size do not apply: every training photo is seen once per epoch.
    --resume continues the run in --out as it was configured (options given again must repeat
    its values), or starts it from the options given when --out holds no checkpoint yet.

    --recipe makes a model as a recipe file says (pyro_saccade.recipes), stages and all, and
    records the recipe and this command in the model's config.json.
    """
    from ..checkpoint import CHECKPOINT, load, with_config
    from ..config import SaccadeConfig, updated
    from ..data import photo_classes
    from ..priors import make_prior
    from ..training import TrainConfig, canvases, default_model_config, train, train_baseline

    training, model = given_fields(ctx, TRAINING), given_fields(ctx, MODEL)
    given_task = model.pop("task")  # the model's, and with it the data's
    check_device(training["device"])
    recipe = recipe or _recipe_of_task(ctx, given_task, training)
    if recipe is not None:
        _run_recipe(ctx, recipe, out, resume, quiet, training["device"])
        return
    if resume and (out / CHECKPOINT).exists():
        trained, state = _check_resume(ctx, out)
        if trained is not None and state is not None:
            _echo_once(_resuming(out, trained.epochs, state))
        train(train_config=trained, out=out, resume=True, progress=not quiet)
        _report_checkpoint(out)
        return
    photos = given_photos(data_dir, csv_file)
    if photos and model_kind not in ("saccade", "proxy-cnn"):
        raise click.BadParameter(
            "photos train the saccade model or the proxy-only CNN", param_hint="--model"
        )
    if test_data and not photos:
        raise click.UsageError("--test-data needs --data-dir or --csv")
    task = "photo" if photos else given_task
    train_config = TrainConfig(
        **{
            **training,
            "photos": photos,
            "photo_test": str(test_data.resolve()) if test_data else None,
        }
    )
    start = load(init) if init else None
    if start is not None and getattr(start, "kind", "saccade") != model_kind:
        raise click.BadParameter(
            f"{init} holds a {getattr(start, 'kind', 'saccade')} model, not {model_kind}",
            param_hint="--init",
        )
    # A digit model keeps its task on photos labelled with its classes: its head reads them.
    kept = photos and start is not None and set(photo_classes(photos)) <= set(start.config.classes)
    if start is not None and model_kind == "saccade" and start.config.task != task and not kept:
        start = for_task(start, task, "--init")
    # --set also applies to an --init model; the other model options are its own.
    if start is not None and model_kind == "saccade" and settings:
        try:
            start = with_config(start, **settings)
        except (TypeError, ValueError) as error:
            raise click.UsageError(str(error)) from error
    if not photos:
        try:  # e.g. digits larger than the canvas
            canvases(train_config, task, "test", 1)
        except ValueError as error:
            raise click.UsageError(str(error)) from error
    model_config = None
    if model_kind == "saccade":
        try:
            if start is not None:
                model_config = start.config
            else:
                data = default_model_config(task, photos)  # the data's classes and channels
                model_config = SaccadeConfig(
                    **{
                        "classes": data.classes,
                        "task": data.task,
                        "channels": data.channels,
                        **model,
                        "prior_args": dict(prior_args),
                    }
                )
                model_config = updated(model_config, settings)
            make_prior(model_config.prior, model_config.hidden, model_config.prior_args)
        except (TypeError, ValueError) as error:  # TypeError: a --set key that is no field
            raise click.UsageError(str(error)) from error
        if not photos:
            try:
                model_config.check_image(model_config.channels, *train_config.canvas)
            except ValueError as error:
                raise click.BadParameter(str(error), param_hint="--canvas") from error
    if (out / CHECKPOINT).exists():  # starting anew would overwrite that run
        raise click.BadParameter(
            f"{out} holds a run already: continue it with --resume, or choose another directory",
            param_hint="--out",
        )
    if resume:
        _echo_once(f"starting the run in {out}: no checkpoint to resume yet")
    if model_config is None:
        train_baseline(
            model_kind,
            train_config,
            out=out,
            progress=not quiet,
            model=start,
            proxy=model["proxy"],
            task=task,
        )
    else:
        train(model_config, train_config, out=out, progress=not quiet, model=start)
    _report_checkpoint(out)


# Options that --recipe leaves to the command: where the run goes and how it shows, not what it is.
_RECIPE_OPTIONS = {"recipe", "out", "resume", "quiet", "device"}


def _given(ctx: click.Context) -> set[str]:
    """The options given on the command line."""
    from click.core import ParameterSource

    return {
        name for name in ctx.params if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }


# Options that pick a shipped recipe: what the model is for.
_PICKS_RECIPE = {"task", "canvas", "background"}


def _recipe_of_task(ctx: click.Context, task: str, training: dict) -> str | None:
    """The shipped recipe that --task and --canvas (and --background) name when they are all
    that is given."""
    from ..recipes import recipe_for

    given = _given(ctx)
    if not {"task", "canvas"} <= given or given - _RECIPE_OPTIONS - _PICKS_RECIPE:
        return None
    return recipe_for(task, training["canvas"], training["background"])


def _run_recipe(
    ctx: click.Context, name: str, out: Path, resume: bool, quiet: bool, device: str
) -> None:
    """Make the model of recipe ``name`` in ``out`` (recipes.run_recipe)."""
    from ..recipes import describe, load_recipe, run_recipe

    others = sorted(_given(ctx) - _RECIPE_OPTIONS)
    if "recipe" in _given(ctx) and others:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in others)
        raise click.UsageError(
            f"--recipe sets the run's settings ({flags} given): copy the recipe file and change "
            "it there"
        )
    try:
        recipe = load_recipe(name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--recipe") from error
    if any(out.iterdir() if out.is_dir() else ()) and not resume:
        raise click.BadParameter(
            f"{out} holds a run already: continue it with --resume, or choose another directory",
            param_hint="--out",
        )
    _echo_once(describe(recipe))
    command = f"saccade train --recipe {name} --out {out}"
    try:
        run_recipe(name, out, progress=not quiet, command=command, device=device)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    _report_checkpoint(out)


def _echo_once(text: str) -> None:
    """Print once, from the first process, when torchrun starts several."""
    if os.environ.get("RANK", "0") == "0":
        click.echo(text)


def _report_checkpoint(out: Path) -> None:
    """Say where the model is."""
    from ..checkpoint import CHECKPOINT

    _echo_once(f"checkpoint: {out / CHECKPOINT}")


def _resuming(out: Path, epochs: int, state: dict) -> str:
    """One line on where a resumed run continues, from its checkpoint's training state."""
    done, steps = state["epoch"], state["step"]
    if done >= epochs:
        return f"the run in {out} has finished its {epochs} epochs: nothing left to train"
    step = f", step {steps + 1}" if steps else ""
    return f"resuming the run in {out} at epoch {done + 1} of {epochs}{step}"


# Options that set no field of SaccadeConfig or TrainConfig, by the setting of a run they give.
_RUN_SETTINGS = {
    "data_dir": "photos",
    "csv_file": "photos",
    "test_data": "photo_test",
    "model_kind": "kind",
    "prior_args": "prior_args",
}
_MISSING = object()


def _check_resume(ctx: click.Context, out: Path) -> tuple[object, dict | None]:
    """The TrainConfig of the run in ``out`` that --resume continues (None for a checkpoint
    without one) and its ``TrainState`` as a dict (None for a model without one): as it was
    configured, so an option given again must repeat the run's value, since another one would
    silently not apply."""
    import json

    from click.core import ParameterSource

    from ..checkpoint import CHECKPOINT, read_checkpoint, trained_config
    from ..config import SaccadeConfig
    from ..errors import CheckpointError

    payload = read_checkpoint(out / CHECKPOINT)
    kind = payload.get("kind", "saccade")
    text, model = payload.get("train_config"), json.loads(payload["config"])
    parsed = None  # the run's SaccadeConfig; None for a baseline
    try:  # in the fields of this version
        trained = trained_config(payload) if text else None
        if kind == "saccade":
            parsed = SaccadeConfig.from_dict(model)
            model = parsed.to_dict()
    except ValueError as error:
        raise CheckpointError(
            f"{out / CHECKPOINT}: a config that this version cannot read ({error})"
        ) from error
    saved = {**(trained.to_dict() if trained else {}), **model, "kind": kind}
    for param in ctx.command.params:
        name = param.name
        # --init gives a run its first weights only: a repeated command may keep it.
        if name in ("out", "resume", "quiet", "init"):
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        if name == "settings":  # --set KEY=VALUE: each must repeat the run's model config
            for key, setting in ctx.params[name].items():
                if not _repeats(parsed, model, key, setting):
                    was = _run_value(key, setting, saved.get(key))
                    raise _not_as_configured(out, was, ctx, param)
            continue
        setting, given, was = _setting(param, ctx.params[name], saved)
        if given != was:
            was = "no such setting" if was is _MISSING else f"{setting}={was!r}"
            raise _not_as_configured(out, was, ctx, param)
    return trained, payload.get("train_state")


def _repeats(parsed: object, config: dict, key: str, setting: object) -> bool:
    """Whether --set KEY=SETTING leaves a run's saved model ``config`` (``parsed``: as a
    SaccadeConfig, None for a baseline's) as it is, applied as ``config.updated`` applies it: a
    section merged into the run's own."""
    from ..config import updated

    if parsed is not None:
        try:
            return updated(parsed, {key: setting}) == parsed
        except (TypeError, ValueError):  # a field SaccadeConfig lacks
            pass
    return config.get(key, _MISSING) == setting


def _run_value(key: str, setting: object, was: object) -> str:
    """``KEY=VALUE`` of the run's value that --set KEY=SETTING does not repeat: in a section,
    that of the first field given otherwise (``where.learn=False``)."""
    if isinstance(setting, dict) and isinstance(was, dict):
        for field, value in setting.items():
            if value != was.get(field, _MISSING):
                return _run_value(f"{key}.{field}", value, was.get(field))
    return f"{key}={was!r}"


def _setting(
    param: click.Parameter, value: object, saved: dict[str, object]
) -> tuple[str, object, object]:
    """The setting of a run that option ``param`` gives: its name, ``value`` as a run saves
    it, and the run's own value (_MISSING if it has none)."""
    if isinstance(param, LibraryOption):
        return param.field, param.field_value(value), saved.get(param.field, _MISSING)
    name = _RUN_SETTINGS[param.name]
    if isinstance(value, Path):
        value = str(value.resolve())
    elif isinstance(value, tuple):  # --prior-arg (key, value) pairs
        value = dict(value)
    return name, value, saved.get(name, _MISSING)


def _not_as_configured(
    out: Path, was: str, ctx: click.Context, param: click.Parameter
) -> click.BadParameter:
    return click.BadParameter(
        f"the run in {out} has {was}; --resume continues it as it was configured",
        ctx=ctx,
        param=param,
    )
