"""``saccade benchmark``: latency and memory of the saccade model against the baselines."""

from __future__ import annotations

from pathlib import Path

import click

from .params import DEVICE, check_device, library_option, writable

BENCHMARK = "benchmark:run_benchmark"


def _comma_list(numbers: tuple[int, ...]) -> str:
    """Numbers as _int_list reads them: "100,512,1024"."""
    return ",".join(map(str, numbers))


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
@library_option(
    BENCHMARK,
    "--sizes",
    type=str,
    form=_comma_list,
    callback=_int_list,
    help="Square canvas sides, comma-separated.",
)
@library_option(
    BENCHMARK,
    "--batch-sizes",
    type=str,
    form=_comma_list,
    callback=_int_list,
    help="Comma-separated.",
)
@library_option(
    BENCHMARK,
    "--repeats",
    type=click.IntRange(min=1),
    help="Timed runs after the warm-up (median reported).",
)
@library_option(
    BENCHMARK,
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    help="Wall-clock seconds per measurement: fewer repeats beyond it; cells whose warm-up and "
    "one run are estimated to overrun it are skipped.",
)
@library_option(
    BENCHMARK,
    "--threads",
    type=click.IntRange(min=1),
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
    estimated to overrun --budget or --memory-limit are skipped, with reasons.
    """
    from ..benchmark import default_checkpoint, run_benchmark, saccade_model
    from ..benchmark_report import write
    from ..checkpoint import resolve

    check_device(device)
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
