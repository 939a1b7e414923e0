"""What several commands share: parameter types, options, and the checks that turn a bad value
into a usage error.

Nothing here imports torch at import time, so that ``saccade --help`` answers instantly.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..config import SaccadeConfig
from ..settings import nest, parse_setting
from ..training.config import TrainConfig


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


def canvas_text(canvas: list[int]) -> str:
    """A canvas ``[height, width]`` as CanvasType reads it: ``100``, or ``300x500``."""
    height, width = canvas
    return str(height) if height == width else f"{height}x{width}"


class KeyValueType(click.ParamType):
    """``KEY=VALUE`` as ``(key, value)``, read by ``settings.parse_setting``: a number, a list of
    comma-separated numbers, true, false, none, JSON, or else text; a dotted KEY names a field
    of a nested section (``settings.nest``)."""

    name = "key=value"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, object]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_setting(str(value))
        except ValueError as error:
            self.fail(str(error))


def nested_settings(
    ctx: click.Context, param: click.Parameter, pairs: tuple[tuple[str, object], ...]
) -> dict[str, object]:
    """The callback of a repeatable KeyValueType option: its pairs as one dict, a dotted key as
    a nested section (``settings.nest``)."""
    try:
        return nest(pairs)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


# -- defaults from the library -------------------------------------------------------------------

# The configurations whose fields the options set. Their modules import no torch: the defaults
# are read when an option is declared.
MODEL = SaccadeConfig
TRAINING = TrainConfig


def library_default(source: type | str, name: str) -> object:
    """The default of field ``name`` of the configuration dataclass ``source``, or of parameter
    ``name`` of the function that ``source`` names as ``"module:function"`` in pyro_saccade."""
    if dataclasses.is_dataclass(source):
        field = source.__dataclass_fields__[name]
        return field.default_factory() if field.default is dataclasses.MISSING else field.default
    module, _, attribute = source.partition(":")
    function = getattr(importlib.import_module(f"pyro_saccade.{module}"), attribute)
    default = inspect.signature(function).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{source} has no default for {name!r}")
    return default


class LibraryOption(click.Option):
    """An option whose default is the library's: that of a field of a configuration dataclass
    (``field``: the option's name unless given), or of a parameter of an API function, so that
    the command line holds no copy of it. ``form`` turns the library's value into the
    option's (a canvas [100, 100] into "100").

    A function's default is read on first use, when the command parses its arguments or shows
    its help: the modules of those functions (metrics, posterior, viz) import torch, which
    ``saccade --help`` must not pay for.
    """

    def __init__(
        self,
        *decls: Any,
        source: type | str,
        field: str | None = None,
        form: Callable[[Any], Any] | None = None,
        **attrs: Any,
    ) -> None:
        if "default" in attrs:
            name = getattr(source, "__name__", source)
            raise TypeError(f"{decls}: the default of a library option is {name}'s")
        super().__init__(*decls, **attrs)
        self.source, self.form = source, form
        self.field = field or self.name
        self._read = False
        if dataclasses.is_dataclass(source):
            self._read_default()

    def _read_default(self) -> None:
        default = library_default(self.source, self.field)
        self.default = self.form(default) if self.form else default
        self._read = True

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        if not self._read:
            self._read_default()
        return super().get_default(ctx, call=call)

    def field_value(self, value: object) -> object:
        """The option's value as a saved config holds it: tuples as lists."""
        return list(value) if isinstance(value, tuple) else value


def library_option(source: type | str, *decls: str, **attrs: Any) -> Callable:
    """``click.option`` with its default (shown in --help) from ``source`` (MODEL, TRAINING, or
    a function as ``"module:function"``); the field or parameter is the option's name unless
    ``field`` names another."""
    attrs.setdefault("show_default", True)
    return click.option(*decls, cls=LibraryOption, source=source, **attrs)


def given_fields(ctx: click.Context, source: type) -> dict[str, object]:
    """The fields of ``source`` (MODEL, TRAINING) as the options of ``ctx``'s command set
    them, given or by default."""
    values: dict[str, object] = {}
    for param in ctx.command.params:
        if isinstance(param, LibraryOption) and param.source == source:
            values[param.field] = param.field_value(ctx.params[param.name])
    return values


# -- options of several commands -----------------------------------------------------------------

BACKGROUND_HELP = (
    "What the canvases' digits and scribbles are painted on: black (the original), white (the "
    "canvas inverted, 1 - x), or clutter (a smooth random field drawn anew for every canvas, its "
    "marks all black or all white, so that brightness alone does not say where they are)."
)


def writable(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
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


# Listed from the files, as training.pretrained_names() does, so that --help needs no torch.
PRETRAINED_NAMES = sorted(
    path.stem for path in (Path(__file__).parents[1] / "pretrained").glob("*.pt")
)
# The same for the shipped recipes (recipes.recipe_names()).
RECIPE_NAMES = sorted(path.stem for path in (Path(__file__).parents[1] / "recipes").glob("*.toml"))
CHECKPOINT_HELP = (
    "CHECKPOINT is a checkpoint file, a run directory (its checkpoint.pt) or the name of a "
    f"pretrained model: {', '.join(PRETRAINED_NAMES) or 'none shipped'}."
)


def takes_checkpoint(command: Callable) -> Callable:
    """Add CHECKPOINT_HELP to a command's help (apply below the @click.command decorator)."""
    command.__doc__ = f"{command.__doc__.rstrip()}\n\n    {CHECKPOINT_HELP}\n"
    return command


def settings_option(help: str) -> Callable:
    """--set KEY=VALUE, repeatable, as one dict of SaccadeConfig settings (``nested_settings``)."""
    return click.option(
        "--set",
        "settings",
        type=KeyValueType(),
        multiple=True,
        callback=nested_settings,
        help=help,
    )


MODEL_OUT = click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=writable,
    required=True,
    help="The model it writes: a checkpoint of weights and configs, like a shipped one.",
)
DEVICE_HELP = "torch device: cpu, cuda, cuda:1, ..."
# --samples unset: as many as the model's config says (SaccadeConfig.predict_samples).
SAMPLES_DEFAULT = "the model's predict_samples"
DEVICE = click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
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


def use_threads(threads: int) -> None:
    """Run torch's operations on ``threads`` threads (0 leaves torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


IMAGES = click.argument(
    "images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
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


def given_photos(data_dir: Path | None, csv_file: Path | None) -> str | None:
    """The photo source given by --data-dir or --csv, as an absolute path (or None)."""
    if data_dir and csv_file:
        raise click.UsageError("give --data-dir or --csv, not both")
    source = data_dir or csv_file
    return str(source.resolve()) if source else None


# -- checks --------------------------------------------------------------------------------------


def check_device(device: str) -> None:
    """A usage error unless ``device`` names a torch device this machine has."""
    import torch

    try:
        torch.device(device)
    except RuntimeError as error:
        raise click.BadParameter(f"unknown device {device!r}", param_hint="--device") from error
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")


def for_task(model: object, task: str, param_hint: str) -> object:
    """The model answering another two-digit task (``checkpoint.for_task``), or a usage
    error naming ``param_hint`` when it cannot."""
    from ..checkpoint import for_task as moved
    from ..model import SaccadeModel

    if not isinstance(model, SaccadeModel):
        raise click.BadParameter(
            f"a {type(model).__name__} answers {model.config.task!r} only", param_hint=param_hint
        )
    try:
        return moved(model, task)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=param_hint) from error
