"""What ``saccade demo`` runs (:mod:`.demo` holds its options): the shipped models on held-out
canvases in under a minute, or a short training run (``--train``).

The models shown are the files in ``pyro_saccade/pretrained/``: a model shipped there joins the
demo with no change here. Each is shown on canvases like those it was trained on (its
checkpoint's TrainConfig), drawn from digits no model saw in training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..baselines import TiledResNet18
from ..checkpoint import (
    CHECKPOINT,
    model_from_checkpoint,
    pretrained_names,
    read_checkpoint,
    trained_config,
)
from ..data import class_names
from ..model import SaccadeModel
from ..prediction import predict
from ..training import LAZY_SIDE, METRICS, TrainConfig, canvases, train
from ..training.batches import collate, correct, prepare

# Canvases per model: the --n given for canvases up to LAZY_SIDE, fewer for larger ones, whose
# canvases take longer to make and to read.
LARGE_SHARE, LARGE_MIN = 10, 10
BATCH = 20  # canvases predicted together (a batch of 2528x2528 canvases is cropped lazily)
PICTURE_CLOUD = 16  # posterior draws drawn as faint boxes
# Training canvases per second of the --train run (batch 64, 100x100 canvases, one thread),
# measured at 34 on a 2-core machine busy with two other trainings; an evaluated canvas costs
# about a quarter of a trained one.
TRAIN_CANVASES_PER_SECOND = 30.0
SHIPPED_TRAINING = "68.3 minutes on 2 cores, docs/results.md"


@dataclass
class Shown:
    """One shipped model on its held-out canvases."""

    name: str
    task: str
    canvas: tuple[int, int]
    n: int
    accuracy: float
    chance: float | None  # None for multi-label tasks
    seconds_per_image: float
    resnet_seconds_per_image: float
    picture: Path


def canvases_for(canvas: list[int], n: int) -> int:
    """How many held-out canvases a model of this canvas is shown on."""
    return n if max(canvas) <= LAZY_SIDE else max(LARGE_MIN, n // LARGE_SHARE)


def resnet_seconds(canvas: tuple[int, int], channels: int, classes: list[str]) -> float:
    """Seconds of one forward pass of the tiled resnet18 baseline (untrained weights: timing
    only) on one image of this size, after a warm-up pass on one tile."""
    model = TiledResNet18(classes, channels=channels).eval()
    with torch.no_grad():
        model(torch.rand(1, channels, 224, 224))
        image = torch.rand(1, channels, *canvas)
        started = time.perf_counter()
        model(image)
    return time.perf_counter() - started


def show_model(name: str, n: int, seed: int, out: Path, resnet: dict[tuple, float]) -> Shown | None:
    """Predict ``n`` held-out canvases with a shipped model, timing the prediction alone (the
    proxy included, making the canvases not), and draw its glimpses on the first one. None for
    a model that is no saccade model on canvases (a baseline, or trained on photos)."""
    payload = read_checkpoint(name)
    model = model_from_checkpoint(payload, name).eval()
    trained = trained_config(payload)
    if not isinstance(model, SaccadeModel) or trained.photos:
        return None
    c = model.config
    config = dataclasses.replace(trained, seed=seed)
    count = canvases_for(config.canvas, n)
    # The model's own task: sum-100 is identify-100's training saved for the sum task.
    dataset = canvases(config, c.task, "test", count)
    hits, seconds = 0, 0.0
    for images, labels in batches(dataset):
        started = time.perf_counter()
        probs = predict(model, *prepare(images, torch.device("cpu"), c.proxy_side))
        seconds += time.perf_counter() - started
        hits += int(correct(probs, labels, c.multilabel).sum())
    canvas = tuple(config.canvas)
    if canvas not in resnet:
        resnet[canvas] = resnet_seconds(canvas, c.channels, c.classes)
    picture = out / f"{name}_glimpses.png"
    draw(model, dataset, picture)
    return Shown(
        name=name,
        task=c.task,
        canvas=canvas,
        n=count,
        accuracy=hits / count,
        chance=None if c.multilabel else 1 / c.num_classes,
        seconds_per_image=seconds / count,
        resnet_seconds_per_image=resnet[canvas],
        picture=picture,
    )


def batches(dataset: object) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) of a dataset: in batches of BATCH, or, for large canvases kept as their
    patches, drawn whole one at a time, as the tiled resnet18 is timed on them."""
    if not dataset.lazy:
        yield from DataLoader(dataset, batch_size=BATCH, collate_fn=collate(dataset))
        return
    for i in range(len(dataset)):
        canvas, label = dataset[i]
        yield canvas.dense()[None], label[None]


def draw(model: SaccadeModel, dataset: object, target: Path) -> None:
    """The glimpse picture of the dataset's first canvas, with its true label."""
    from ..viz import glimpse_figure

    image, _ = dataset[0]
    if dataset.lazy:  # a large canvas kept as its patches
        image = image.dense()
    label = dataset.describe(0)["label"]
    glimpse_figure(model, image, PICTURE_CLOUD, label).savefig(target, dpi=100)


def table(shown: list[Shown]) -> list[str]:
    """The demo's results, one line per model."""
    width = max([len("model"), *(len(s.name) for s in shown)])
    lines = [
        f"{'model':<{width}} {'task':<9} {'canvas':>10} {'canvases':>8} {'accuracy':>8} "
        f"{'chance':>6} {'saccade':>9} {'tiled resnet18':>14}"
    ]
    for s in shown:
        chance = "-" if s.chance is None else f"{s.chance:.1%}"
        lines.append(
            f"{s.name:<{width}} {s.task:<9} {'x'.join(map(str, s.canvas)):>10} {s.n:>8} "
            f"{s.accuracy:>8.1%} {chance:>6} {_ms(s.seconds_per_image):>9} "
            f"{_ms(s.resnet_seconds_per_image):>14}"
        )
    return lines


def _threads() -> str:
    """The torch threads the timings ran on, in words."""
    threads = torch.get_num_threads()
    return f"{threads} thread{'s' if threads != 1 else ''}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def run_demo(n: int, seed: int, out: Path, echo: Callable[[str], None]) -> list[Shown]:
    """Show every shipped model; ``echo`` prints a line."""
    names = pretrained_names()
    if not names:
        echo("no pretrained models are shipped with this installation: try saccade demo --train")
        return []
    echo(
        f"predicting held-out canvases (digits never seen in training) with the shipped models: "
        f"{', '.join(names)}"
    )
    out.mkdir(parents=True, exist_ok=True)
    resnet: dict[tuple, float] = {}
    shown = [s for name in names if (s := show_model(name, n, seed, out, resnet)) is not None]
    for line in table(shown):
        echo(line)
    echo(
        f"saccade and tiled resnet18: time per image on {_threads()}, the whole canvas in memory "
        f"(saccade: the proxy included, in batches of {BATCH} up to {LAZY_SIDE} px, one by one "
        "above; tiled resnet18: one forward pass on one canvas of that size, untrained "
        "weights, timing only)"
    )
    for s in shown:
        echo(f"where {s.name} looked: {s.picture}")
    return shown


def training_minutes(epochs: int, train_size: int, test_size: int) -> float:
    """Estimated wall time of ``run_training`` in minutes (at least one)."""
    seconds = epochs * (train_size + test_size / 4) / TRAIN_CANVASES_PER_SECOND
    return max(1.0, seconds / 60)


def run_training(
    epochs: int, train_size: int, seed: int, out: Path, progress: bool, echo: Callable[[str], None]
) -> float:
    """Train a model on 100x100 canvases briefly and draw its glimpses; returns its held-out
    accuracy (evaluated by ``train`` after the last epoch)."""
    import json

    test_size = 500
    config = TrainConfig(
        epochs=epochs, train_size=train_size, test_size=test_size, workers=1, seed=seed
    )
    chance = 1 / len(class_names("identify"))
    echo(
        f"training {epochs} epoch{'s' if epochs != 1 else ''} of {train_size} fresh 100x100 "
        "canvases (two digits, 8 distractors, 55 classes) on the bundled MNIST digits: about "
        f"{training_minutes(epochs, train_size, test_size):.0f} minutes on one thread (fewer "
        "with more)"
    )
    echo(
        f"a run this short stays far below the shipped identify-100 (trained for "
        f"{SHIPPED_TRAINING}): expect a held-out accuracy a little above chance ({chance:.1%})"
    )
    model = train(train_config=config, out=out, progress=progress)
    last = (out / METRICS).read_text().splitlines()[-1]
    accuracy = json.loads(last)["test_accuracy"]
    held_out = canvases(config, model.config.task, "test", 1)
    echo(f"held-out accuracy {accuracy:.1%} on {test_size} canvases (chance {chance:.1%})")
    picture = out / "glimpses.png"
    draw(model, held_out, picture)
    echo(f"checkpoint: {out / CHECKPOINT}")
    echo(f"where it looked: {picture}")
    return accuracy
