"""The warning on inputs unlike the training images, measured: how often it fires on each kind of
input, and the accuracy where the input has a label (docs/results.md, "Inputs unlike the
training images").

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/unfamiliar.py \
        megapixel-majority identify-2528-28px identify-100

For each model, a profile of ``--profile-n`` held-out canvases of its task drawn with
``--profile-seed`` (``familiar.profile``, what ``saccade calibrate`` stores) is attached to it,
or with ``--profile-n 0`` the checkpoint keeps its own; then the model predicts, as ``saccade
predict`` does (its own ``predict_samples``), each kind of input. Each row gives the mean
probability of the answers, as the model gives them (tempered and mixed with the uniform by the
probability that its glimpses read something familiar, ``familiar.read_probability``) and as
the model alone would (tempered only), and the accuracy on the labelled inputs whose glimpses
warned, where the mixture's probabilities are near the uniform's; an answer the mixture changed
(a rounding tie) is reported on stderr. The inputs:

- held-out canvases as trained (seed ``--seed``, other canvases than the profile's): the
  warnings there are false alarms;
- canvases twice the trained side, objects of the trained pixel size (Megapixel MNIST and
  identify-2528-28px, whose digits keep 28 px);
- a 2528x2528 canvas of large digits, each 28/100 of the side as identify-2528 draws them, for
  identify-2528-28px, trained on 28-px digits;
- canvases on a white background (1 - x) and on a smooth random background (x + 0.5 b, b a
  bicubic upsampling of 6x6 uniform noise, clipped to [0, 1]);
- 640x480 colour photos (``data.synthetic_photo``: a smooth colour background, shapes and
  grain), read from PNG files as ``saccade predict`` reads them;
- uniform noise and a blank image of the trained size.

With ``--side-factors``, the accuracy and the warnings on held-out canvases of other sides
(``--sweep-n`` of each, objects of the trained pixel size), which ``familiar.SIDE_FACTOR`` is
chosen from.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from pyro_saccade import familiar
from pyro_saccade.calibration import averaged_probs, held_out
from pyro_saccade.checkpoint import model_from_checkpoint, read_checkpoint, trained_config
from pyro_saccade.data import MEGAPIXEL_TASKS, Photo, as_batch, synthetic_photo
from pyro_saccade.data.proxy import ProxySide
from pyro_saccade.prediction import infer
from pyro_saccade.training.batches import collate, correct, prepare
from pyro_saccade.training.data import canvases

BATCH = 10
# The reasons as the table names them: the start of each reason's text.
KINDS = {
    "colour image": "channels",
    "gray image": "channels",
    "image for a model trained on": "size",
    "proxy intensities": "intensities",
    "detail than the training": "detail",
    "glimpses that found nothing": "glimpses",
}

Batch = tuple[object, Tensor | None]  # images (tensor, CanvasBatch or PhotoBatch), labels


def kind(reason: str) -> str:
    return next(name for words, name in KINDS.items() if words in reason)


def canvas_batches(
    config: object, task: str, seed: int, n: int, transform: Callable | None = None, **changes
) -> Iterator[Batch]:
    """``n`` held-out canvases of ``task`` drawn with ``config`` (and ``changes``), in batches,
    drawn dense and passed through ``transform`` when one is given."""
    data = canvases(dataclasses.replace(config, seed=seed, **changes), task, "test", n)
    join = collate(data) or torch.utils.data.default_collate
    for start in range(0, n, BATCH):
        images, labels = join([data[i] for i in range(start, min(n, start + BATCH))])
        if transform is not None:
            images = transform(images.dense() if hasattr(images, "dense") else images)
        yield images, labels


def smooth_background(images: Tensor, generator: torch.Generator) -> Tensor:
    """Images on a smooth random background: x + 0.5 b clipped to [0, 1], b a bicubic upsampling
    of 6x6 uniform noise."""
    field = torch.rand(len(images), 1, 6, 6, generator=generator)
    field = F.interpolate(field, size=images.shape[-2:], mode="bicubic", align_corners=False)
    return (images + 0.5 * field.clamp(0, 1)).clamp(0, 1)


def photo_batches(folder: Path, n: int, channels: int, proxy: ProxySide) -> Iterator[Batch]:
    """``n`` synthetic 640x480 colour photos, written as PNG and read as ``saccade predict``
    reads them (converted to the model's channels)."""
    photos = []
    for k in range(n):
        path = folder / f"photo_{k}.png"
        synthetic_photo(k, 640, 480, seed=k).save(path)
        photos.append(Photo(path, channels=channels))
    for start in range(0, n, BATCH):
        yield as_batch(photos[start : start + BATCH], proxy), None


def measure(model: object, batches: Iterator[Batch]) -> dict:
    """The share of images warned about and of each reason, the accuracy (where labelled) and
    the mean probability of the answers."""
    reasons: Counter[str] = Counter()
    warned = hits = labelled = changed = unread = unread_hits = n = 0
    confidence = alone = 0.0
    cfg = model.config
    for images, labels in batches:
        images, proxies = prepare(images, torch.device("cpu"), cfg.proxy_side)
        prediction = infer(model, images, proxies, warn=False)
        found = familiar.reasons_for(model, images, proxies, prediction)
        for own in found:
            warned += bool(own)
            reasons.update({kind(reason) for reason in own})
        if labels is not None:
            right = correct(prediction.probs, labels, cfg.multilabel)
            hits += int(right.sum())
            labelled += len(labels)
            # Where the glimpses warned, the mixture's probabilities are near the uniform's.
            for own, hit in zip(found, right.tolist(), strict=True):
                if any(kind(reason) == "glimpses" for reason in own):
                    unread += 1
                    unread_hits += hit
        confidence += float(prediction.probs.max(-1).values.sum())
        tempered = averaged_probs(prediction.logits, cfg.temperature, cfg.multilabel)
        alone += float(tempered.max(-1).values.sum())
        changed += int((prediction.probs.argmax(-1) != tempered.argmax(-1)).sum())
        n += len(prediction.probs)
    return {
        "n": n,
        "warned": warned / n,
        "reasons": {
            name: count / n for name, count in sorted(reasons.items(), key=lambda r: (-r[1], r[0]))
        },
        "accuracy": hits / labelled if labelled else None,
        "unread": (unread_hits / unread, unread) if unread else None,
        "confidence": confidence / n,
        "alone": alone / n,
        "changed": changed,
    }


def percent(share: float) -> str:
    """A share as a whole percentage, or to a tenth below 1% (one image in a few hundred)."""
    return f"{share:.0%}" if share == 0 or share >= 0.01 else f"{share:.1%}"


def row(model_name: str, what: str, result: dict) -> str:
    reasons = ", ".join(f"{name} {percent(share)}" for name, share in result["reasons"].items())
    accuracy = "–" if result["accuracy"] is None else f"{result['accuracy']:.1%}"
    unread = "–" if result["unread"] is None else "{:.1%} of {}".format(*result["unread"])
    cells = [model_name, what, result["n"], percent(result["warned"]), reasons or "–", accuracy]
    cells.append(unread)
    if result["changed"]:  # the mixture keeps every answer but for rounding ties
        print(f"{model_name}, {what}: {result['changed']} answers changed", file=sys.stderr)
    means = f" | {result['alone']:.2f} | {result['confidence']:.2f} |"
    return "| " + " | ".join(map(str, cells)) + means


def profiled(name: str, n: int, seed: int) -> tuple[object, object]:
    """A model and its training config, with the profile (``familiar.profile``) of ``n``
    held-out canvases drawn with ``seed`` attached, their posterior draws made with seed 0;
    with ``n`` = 0, the checkpoint's own profile (ValueError if it keeps none)."""
    payload = read_checkpoint(name)
    model = model_from_checkpoint(payload, name).eval()
    trained = trained_config(payload)
    if n == 0:
        if not model.familiar:
            raise ValueError(f"{name} keeps no profile: give --profile-n")
        return model, trained
    data = canvases(dataclasses.replace(trained, seed=seed), model.config.task, "test", n)
    proxies, held, _ = held_out(model, data, BATCH, 0)
    model.familiar = familiar.profile(model, proxies, held)
    return model, trained


def cases(
    model: object, trained: object, args: argparse.Namespace, folder: Path
) -> Iterator[tuple[str, Iterator[Batch]]]:
    """Each kind of input (module docstring) for ``model``: its name and its batches."""
    task, channels = model.config.task, model.config.channels
    height, width = trained.canvas
    noise = torch.Generator().manual_seed(args.seed)

    def test_canvases(n: int, transform: Callable | None = None, **changes) -> Iterator[Batch]:
        return canvas_batches(trained, task, args.seed, n, transform, **changes)

    yield f"held-out canvas as trained ({height}x{width})", test_canvases(args.held_out_n)
    if trained.digit_size or task in MEGAPIXEL_TASKS:  # objects of a fixed pixel size
        double = [2 * height, 2 * width]
        yield f"{double[0]}x{double[1]} canvas", test_canvases(args.n, canvas=double)
    if trained.digit_size:
        yield f"{height}x{width} canvas of large digits", test_canvases(args.n, digit_size=None)
    yield "white background (1 - x)", test_canvases(args.n, background="white")
    yield "smooth random background", test_canvases(args.n, lambda x: smooth_background(x, noise))
    yield (
        "640x480 colour photo",
        photo_batches(folder, args.unlabelled_n, channels, model.config.proxy_side),
    )
    shape = (channels, height, width)
    yield (
        f"uniform noise ({height}x{width})",
        (
            (torch.rand(min(BATCH, args.unlabelled_n - s), *shape, generator=noise), None)
            for s in range(0, args.unlabelled_n, BATCH)
        ),
    )
    yield f"blank ({height}x{width})", iter([(torch.zeros(1, *shape), None)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="checkpoints or shipped model names")
    parser.add_argument("--n", type=int, default=100, help="canvases of each labelled kind")
    parser.add_argument("--held-out-n", type=int, default=300, help="canvases as trained")
    parser.add_argument("--unlabelled-n", type=int, default=20, help="photos and noise images")
    parser.add_argument(
        "--profile-n", type=int, default=300, help="0: the checkpoint's own profile"
    )
    parser.add_argument("--profile-seed", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="of the canvases measured")
    parser.add_argument(
        "--side-factors",
        default="",
        help="canvas sides to sweep, as factors of the trained side, e.g. 0.5,2",
    )
    parser.add_argument("--sweep-n", type=int, default=200, help="canvases of each side")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # counted per image instead
    header = (
        "| model | input | n | warned | reasons (share of inputs) | accuracy "
        "| accuracy where the glimpses warned | mean p, model alone | mean p |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    print(header)
    sweeps = []
    for name in args.models:
        model, trained = profiled(name, args.profile_n, args.profile_seed)
        with tempfile.TemporaryDirectory() as folder:
            for what, batches in cases(model, trained, args, Path(folder)):
                print(row(name, what, measure(model, batches)), flush=True)
        if not (trained.digit_size or model.config.task in MEGAPIXEL_TASKS):
            continue  # its digits grow with the canvas: the proxy shows them alike
        for factor in [float(f) for f in args.side_factors.split(",") if f]:
            side = [round(factor * s) for s in trained.canvas]
            batches = canvas_batches(
                trained, model.config.task, args.seed, args.sweep_n, canvas=side
            )
            sweeps.append(row(name, f"{side[0]}x{side[1]} canvas", measure(model, batches)))
    if sweeps:
        print(f"\n{header}\n" + "\n".join(sweeps))


if __name__ == "__main__":
    main()
