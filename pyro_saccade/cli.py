"""The ``saccade`` command line.

torch and pyro are imported inside command bodies so that ``saccade --help`` answers instantly.
"""

from __future__ import annotations

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


class SaccadeGroup(click.Group):
    """A click group that prints expected errors as one line on stderr, without a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt as error:
            click.echo(f"Error: {error or 'interrupted'}", err=True)
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


@click.group(cls=SaccadeGroup)
@click.version_option(package_name="pyro_saccade")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Variational saccading: classify very large images from a few small crops."""
    ctx.obj = {"debug": debug}


@main.group()
def data() -> None:
    """Generate and export datasets."""


@data.command("export")
# The task names mirror data.TASKS, spelled out so that --help does not have to import torch.
@click.option(
    "--task",
    type=click.Choice(["identify", "sum", "mark"]),
    default="identify",
    show_default=True,
    help="Label: unordered digit pair, digit sum, or digits present.",
)
@click.option(
    "--canvas",
    type=CanvasType(),
    default="100",
    show_default=True,
    help="Canvas size, H or HxW pixels.",
)
@click.option("--n", "n", type=click.IntRange(min=1), required=True, help="Number of canvases.")
@click.option(
    "--distractors",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Number of 8x8 digit fragments (scaled with the canvas).",
)
@click.option(
    "--digit-size",
    type=click.IntRange(min=1),
    default=None,
    help="Digit side in pixels [default: 28 per 100 pixels of the shorter side].",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="train",
    show_default=True,
    help="Digit pool; train and test canvases never share a digit.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Output directory (created if missing).",
)
def export(
    task: str,
    canvas: tuple[int, int],
    n: int,
    distractors: int,
    digit_size: int | None,
    split: str,
    seed: int,
    out: Path,
) -> None:
    """Write two-digit cluttered MNIST canvases as PNGs plus labels.csv.

    Files are 000000.png, 000001.png, ...; labels.csv has the header "file,label" where the label
    is the class name ("3-7" for identify, "10" for sum) or, for mark, the sorted digits joined by
    "+" ("3+7", "4+4").
    """
    import csv

    from tqdm import tqdm

    from .data import TwoDigitCluttered, save_image

    try:
        dataset = TwoDigitCluttered(
            task, canvas, n, distractors=distractors, digit_size=digit_size, split=split, seed=seed
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
TASK = click.option(
    "--task",
    type=click.Choice(["identify", "sum", "mark"]),
    default="identify",
    show_default=True,
    help="Label: digit pair, digit sum, or digits present.",
)


@main.command("train")
@TASK
@click.option(
    "--canvas",
    type=CanvasType(),
    default="100",
    show_default=True,
    help="Canvas size, H or HxW pixels.",
)
@click.option("--distractors", type=click.IntRange(min=0), default=8, show_default=True)
@click.option(
    "--digit-size",
    type=click.IntRange(min=1),
    default=None,
    help="Digit side in pixels [default: scales with the canvas].",
)
@click.option("--epochs", type=click.IntRange(min=0), default=20, show_default=True)
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
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Peak learning rate (cosine decay).",
)
@click.option(
    "--glimpses",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Number of glimpses T.",
)
@click.option(
    "--crop",
    type=click.IntRange(min=4),
    default=32,
    show_default=True,
    help="Crop side L in pixels.",
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
    type=click.Choice(["aggregate", "per_glimpse"]),
    default="aggregate",
    show_default=True,
)
@click.option(
    "--kl-weight", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True
)
@click.option(
    "--prior",
    default="vrnn",
    show_default=True,
    help="Glimpse prior: vrnn, normal, fixed, centre or a registered name.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Data-loader worker processes.",
)
@DEVICE
@SEED
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option(
    "--init",
    "init",
    default=None,
    help="Start from the weights of this checkpoint or pretrained name (fine-tuning).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run directory: checkpoint.pt, config.json, metrics.jsonl.",
)
def train_command(
    task: str,
    canvas: tuple[int, int],
    distractors: int,
    digit_size: int | None,
    epochs: int,
    train_size: int,
    test_size: int,
    batch_size: int,
    lr: float,
    glimpses: int,
    crop: int,
    proxy: int,
    proxy_noise: float,
    likelihood: str,
    kl_weight: float,
    prior: str,
    workers: int,
    device: str,
    seed: int,
    resume: bool,
    init: str | None,
    quiet: bool,
    out: Path,
) -> None:
    """Train a variational saccading model on generated cluttered-MNIST canvases."""
    from .data import class_names
    from .model import SaccadeConfig
    from .train import TrainConfig, load, train

    _check_device(device)
    train_config = TrainConfig(
        task=task,
        canvas=list(canvas),
        distractors=distractors,
        digit_size=digit_size,
        epochs=epochs,
        train_size=train_size,
        test_size=test_size,
        batch_size=batch_size,
        lr=lr,
        proxy_noise=proxy_noise,
        seed=seed,
        device=device,
        workers=workers,
    )
    start = load(init) if init else None
    model_config = (
        start.config
        if start
        else SaccadeConfig(
            classes=class_names(task),
            task=task,
            glimpses=glimpses,
            crop=crop,
            proxy=proxy,
            likelihood=likelihood,
            kl_weight=kl_weight,
            prior=prior,
        )
    )
    train(model_config, train_config, out=out, resume=resume, progress=not quiet, model=start)
    click.echo(f"checkpoint: {out / 'checkpoint.pt'}")


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
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Test-canvas seed.")
@DEVICE
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_command(
    checkpoint: str,
    canvas: tuple[int, int] | None,
    distractors: int | None,
    n: int,
    samples: int,
    proxy_noise: float | None,
    batch_size: int,
    seed: int,
    device: str,
    as_json: bool,
) -> None:
    """Accuracy on canvases built from held-out digits only."""
    import dataclasses
    import json
    import time

    from .train import TrainConfig, canvases, evaluate, load, read_checkpoint

    _check_device(device)
    payload = read_checkpoint(checkpoint)
    trained = (
        TrainConfig(**json.loads(payload["train_config"]))
        if payload.get("train_config")
        else TrainConfig()
    )
    model = load(checkpoint, device)
    config = dataclasses.replace(
        trained,
        seed=seed,
        canvas=list(canvas) if canvas else trained.canvas,
        distractors=trained.distractors if distractors is None else distractors,
    )
    noise = trained.proxy_noise if proxy_noise is None else proxy_noise
    started = time.perf_counter()
    accuracy = evaluate(
        model,
        canvases(config, "test", n),
        batch_size=batch_size,
        samples=samples,
        noise=noise,
        progress=not as_json,
    )
    result = {
        "checkpoint": str(checkpoint),
        "task": config.task,
        "canvas": "x".join(map(str, config.canvas)),
        "distractors": config.distractors,
        "n": n,
        "samples": samples,
        "proxy_noise": noise,
        "accuracy": accuracy,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"accuracy {accuracy:.4f} on {n} held-out {result['canvas']} canvases "
            f"({config.task}, {config.distractors} distractors)"
        )


@main.command("predict")
@click.argument("checkpoint")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--samples",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Posterior samples averaged (0: posterior-mean glimpses).",
)
@DEVICE
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def predict_command(
    checkpoint: str, images: tuple[Path, ...], samples: int, device: str, as_json: bool
) -> None:
    """Classify image files (PNG, JPEG, .npy) of any size."""
    import json

    from .data import load_image
    from .train import load

    _check_device(device)
    model = load(checkpoint, device)
    for path in images:
        image = load_image(path, channels=model.config.channels)
        result = describe_prediction(model, image, samples)
        if as_json:
            click.echo(json.dumps({"path": str(path), **result}))
        else:
            click.echo(f"{path}: {result['label']} (p={result['probability']:.3f})")


def describe_prediction(model: object, image: object, samples: int = 0) -> dict:
    """Label, probability and glimpses (z and pixel boxes) of one image [C, H, W]."""
    import torch

    device = next(model.parameters()).device
    height, width = image.shape[-2:]
    prediction = model.infer(image.unsqueeze(0).to(device), samples=samples)
    probs = prediction.probs[0]
    z = prediction.z.mean(0)[0]  # [T, 3]: mean over posterior samples
    boxes = model.boxes(z, height, width)
    scale = model.config.scale_min + (
        model.config.scale_max - model.config.scale_min
    ) * torch.sigmoid(z[:, 0])
    if model.config.multilabel:
        names = model.config.classes
        marks = [name for name, p in zip(names, probs.tolist(), strict=True) if p > 0.5]
        label, probability = "+".join(marks), float(probs.max())
    else:
        index = int(probs.argmax())
        label, probability = model.config.classes[index], float(probs[index])
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
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--train-size", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default="runs/demo",
    show_default=True,
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(epochs: int, train_size: int, out: Path, quiet: bool) -> None:
    """Train briefly on the bundled digits, evaluate, and classify three canvases."""
    from .data import TwoDigitCluttered
    from .train import TrainConfig, canvases, evaluate, train

    config = TrainConfig(epochs=epochs, train_size=train_size, test_size=500)
    click.echo(
        f"training {epochs} epochs of {train_size} fresh 100x100 canvases "
        "(two digits, 8 distractors, 55 classes) on the bundled MNIST digits"
    )
    model = train(train_config=config, out=out, progress=not quiet)
    accuracy = evaluate(model, canvases(config, "test", 1000), progress=not quiet)
    click.echo(
        f"held-out accuracy: {accuracy:.4f} on 1000 canvases of unseen digits "
        f"(chance: {1 / 55:.4f}); the pretrained identify-100 model reaches far more"
    )
    examples = TwoDigitCluttered("identify", 100, 3, split="test", seed=7)
    for i in range(3):
        image, _ = examples[i]
        result = describe_prediction(model, image)
        click.echo(
            f"canvas {i}: true {examples.describe(i)['label']}, predicted "
            f"{result['label']} (p={result['probability']:.2f})"
        )
    click.echo(f"checkpoint: {out / 'checkpoint.pt'}")
