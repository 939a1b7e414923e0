"""``saccade evaluate``: accuracy and what the glimpses read, on held-out canvases or photos."""

from __future__ import annotations

from pathlib import Path

import click

from ..training.config import BACKGROUNDS
from .params import (
    BACKGROUND_HELP,
    DEVICE,
    PHOTO_CSV,
    PHOTO_DIR,
    SAMPLES_DEFAULT,
    THREADS,
    CanvasType,
    check_device,
    for_task,
    given_photos,
    library_option,
    takes_checkpoint,
    use_threads,
)

EVALUATION = "metrics:evaluate_glimpses"


@click.command("evaluate")
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
    "--background",
    type=click.Choice(BACKGROUNDS),
    default=None,
    help=f"{BACKGROUND_HELP} [default: as trained]",
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
@library_option(
    EVALUATION,
    "--samples",
    type=click.IntRange(min=0),
    show_default=SAMPLES_DEFAULT,
    help="Posterior samples averaged per image (0: posterior-mean glimpses).",
)
@click.option(
    "--proxy-noise",
    type=click.FloatRange(min=0),
    default=None,
    help="Std of proxy noise [default: as trained].",
)
@library_option(
    EVALUATION,
    "--batch-size",
    type=click.IntRange(min=1),
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
@click.option(
    "--reliability",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the model's reliability diagram (accuracy against confidence) to this PNG.",
)
@takes_checkpoint
def evaluate_command(
    checkpoint: str,
    canvas: tuple[int, int] | None,
    distractors: int | None,
    background: str | None,
    task: str | None,
    n: int,
    samples: int | None,
    proxy_noise: float | None,
    batch_size: int,
    seed: int,
    proxy_baseline: str | None,
    data_dir: Path | None,
    csv_file: Path | None,
    device: str,
    threads: int,
    as_json: bool,
    reliability: Path | None,
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

    from ..checkpoint import load, model_from_checkpoint, read_checkpoint, trained_config
    from ..data import MEGAPIXEL_TASKS
    from ..metrics import evaluate_glimpses, glimpse_lines
    from ..model import SaccadeModel
    from ..prediction import samples_for
    from ..training import canvases

    check_device(device)
    use_threads(threads)
    payload = read_checkpoint(checkpoint)
    model = model_from_checkpoint(payload, checkpoint).to(device).eval()
    trained = trained_config(payload)
    if isinstance(model, SaccadeModel):  # None: the model's own number, reported as such
        samples = samples_for(model, samples)
    pyro.set_rng_seed(seed)  # noisy proxies, for a model trained with them
    noise = trained.proxy_noise if proxy_noise is None else proxy_noise
    baseline = load(proxy_baseline, device) if proxy_baseline else None
    photos = given_photos(data_dir, csv_file)
    if photos or trained.photos:
        _evaluate_photos(
            model,
            trained,
            photos,
            batch_size,
            samples,
            noise,
            seed,
            as_json,
            baseline,
            proxy_baseline,
        )
        return
    # The model's own task, which is the trained one unless the model was moved to another
    # (checkpoint.for_task) and saved, as sum-100 is.
    answers = model.config.task
    task = task or answers
    config = dataclasses.replace(
        trained,
        seed=seed,
        canvas=list(canvas) if canvas else trained.canvas,
        distractors=trained.distractors if distractors is None else distractors,
        background=background or trained.background,
    )
    if task != answers:
        model = for_task(model, task, "--task")
    try:
        if isinstance(model, SaccadeModel):
            model.config.check_image(model.config.channels, *config.canvas)
        test_set = canvases(config, task, "test", n)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--canvas") from error
    if baseline is not None and baseline.config.classes != model.config.classes:
        raise click.BadParameter(
            f"answers {baseline.config.task!r}, not {task!r}", param_hint="--proxy-baseline"
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
    if reliability is not None:
        from ..viz import reliability_figure

        reliability_figure({Path(checkpoint).stem: measured.reliability}, reliability)
    megapixel = task in MEGAPIXEL_TASKS
    result = {
        "checkpoint": str(checkpoint),
        "task": task,
        "canvas": "x".join(map(str, config.canvas)),
        **({"noise": config.noise} if megapixel else {"distractors": config.distractors}),
        "background": config.background,
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
        f"({task}, {clutter}, {config.background} background)"
    )
    for line in glimpse_lines(measured, proxy_baseline):
        click.echo(line)


def _evaluate_photos(
    model: object,
    trained: object,
    photos: str | None,
    batch_size: int,
    samples: int | None,
    noise: float,
    seed: int,
    as_json: bool,
    baseline: object | None,
    proxy_baseline: str | None,
) -> None:
    """Accuracy and what the glimpses read on every photo of ``photos``, or on the held-out
    photos of the run; coverage where a boxes.csv says where the deciding objects are, and
    ``baseline`` (the model of the checkpoint ``proxy_baseline`` names) beside."""
    import dataclasses
    import json
    import time

    from ..metrics import evaluate_glimpses, glimpse_lines
    from ..training import photo_set

    if baseline is not None and baseline.config.classes != model.config.classes:
        raise click.BadParameter(
            f"classes {baseline.config.classes}, not the model's {model.config.classes}",
            param_hint="--proxy-baseline",
        )
    # Photos given: all of them, as a run's own held-out folder is read.
    source_config = dataclasses.replace(trained, photo_test=photos) if photos else trained
    dataset = photo_set(source_config, model.config, "test", progress=not as_json)
    started = time.perf_counter()
    measured = evaluate_glimpses(
        model,
        dataset,
        batch_size=batch_size,
        samples=samples,
        noise=noise,
        seed=seed,
        proxy_baseline=baseline,
        progress=None if as_json else True,
    )
    source = photos or trained.photo_test or f"{trained.photos} (held-out split)"
    result = {
        "photos": source,
        "skipped": len(dataset.skipped),
        "samples": samples,
        "proxy_noise": noise,
        **measured.to_dict(),
        "proxy_baseline": proxy_baseline,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"accuracy {measured.accuracy:.4f} on {measured.n} photos of {source}")
    for line in glimpse_lines(measured, proxy_baseline):
        click.echo(line)
