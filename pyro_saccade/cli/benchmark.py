"""``saccade benchmark``: latency and memory of the saccade model against the baselines.

The benchmark's code is not library code: it is the package ``saccade_benchmark`` in the
``benchmarks/`` directory of the source checkout, which this command imports when it runs. The
command holds the defaults of its settings, so that --help needs neither that code nor torch.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import click

from .params import DEVICE, check_device, writable

# The checkout's benchmarks/, beside the pyro_saccade package (an editable install).
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
PACKAGE = "saccade_benchmark"


def benchmark_code() -> ModuleType:
    """The benchmark's package, imported from the checkout's benchmarks/ directory, or a
    one-line error when this installation has no source checkout."""
    if not (BENCHMARKS / PACKAGE / "__init__.py").is_file():
        raise click.ClickException(
            f"the benchmark's code is not installed: it is in benchmarks/{PACKAGE} of a source "
            "checkout of pyro_saccade (pip install -e CHECKOUT), and this installation has no "
            f"{BENCHMARKS / PACKAGE}"
        )
    # On sys.path, the measuring processes also find it: multiprocessing starts each with its
    # parent's sys.path and imports the benchmark's functions by module name.
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(PACKAGE)


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """Parse "100,512,1024" into positive integers."""
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"expected positive integers separated by commas, got {value!r}")
    return numbers


@click.command("benchmark")
@click.option(
    "--sizes",
    default="100,512,1024,2528,4096",
    show_default=True,
    callback=_int_list,
    help="Square canvas sides, comma-separated.",
)
@click.option(
    "--batch-sizes",
    default="1,16",
    show_default=True,
    callback=_int_list,
    help="Comma-separated.",
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
    callback=writable,
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
    estimated to overrun --budget or --memory-limit are skipped, with reasons. The benchmark's
    code is in benchmarks/ of the source checkout, which an installation from it needs.
    """
    code = benchmark_code()
    check_device(device)
    report = code.run_benchmark(
        sizes,
        batch_sizes,
        repeats=repeats,
        budget=budget,
        memory_limit_gb=memory_limit,
        threads=threads,
        device=device,
        checkpoint=checkpoint,
        progress=not quiet,
        lazy=lazy,
    )
    paths = code.write(report, out)
    click.echo(paths["md"].read_text())
    click.echo(f"wrote {paths['json']}, {paths['md']} and {paths['png']}")
