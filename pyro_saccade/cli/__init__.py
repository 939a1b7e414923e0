"""The ``saccade`` command line: the ``main`` group and how it reports errors.

A module a command (or a family of them): ``train``, ``evaluate``, ``predict`` (with
``posterior`` and ``visualize``), ``demo`` (what it runs: ``demo_run``), ``data``,
``benchmark`` (which runs the checkout's ``benchmarks/saccade_benchmark``); ``params`` holds
what they share. torch and pyro are imported inside command bodies so that ``saccade --help``
answers instantly. Options show the library's defaults (``params.library_option``): those of
SaccadeConfig and TrainConfig, whose modules import no torch, and those of API functions, read
when a command's --help or arguments need them, which imports torch.
"""

from __future__ import annotations

import os
import warnings

import click

from .benchmark import benchmark_command
from .calibrate import calibrate_command
from .data import data
from .demo import demo
from .evaluate import evaluate_command
from .export import export_command
from .params import PRETRAINED_NAMES
from .predict import _unique_stems as _unique_stems
from .predict import describe_prediction, posterior_command, predict_command, visualize_command
from .train import train_command

__all__ = ["PRETRAINED_NAMES", "describe_prediction", "main", "train_command"]


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
            # Ctrl-C is the user's choice, not an error: one line, the shell's exit code for
            # SIGINT. Training's says where it saved ("interrupted; checkpoint saved in ...").
            click.echo(_interrupted(error), err=True)
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
    from ..errors import SaccadeError

    return isinstance(error, (SaccadeError, ValueError, OSError, RuntimeError))


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or error.__class__.__name__


def _interrupted(error: KeyboardInterrupt) -> str:
    """The line a Ctrl-C prints: "Interrupted", or the interrupt's own message capitalised."""
    message = " ".join(str(error).split()) or "interrupted"
    return message[0].upper() + message[1:]


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """A warning as one line "Warning: ..." on stderr, without the source line (see --debug)."""
    click.echo(f"Warning: {_one_line(Exception(message))}", err=True)


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


for command in (
    data,
    train_command,
    evaluate_command,
    calibrate_command,
    export_command,
    predict_command,
    posterior_command,
    visualize_command,
    demo,
    benchmark_command,
):
    main.add_command(command)
