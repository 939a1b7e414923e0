"""Prediction with a trained model: class probabilities, glimpses and their boxes.

A prediction runs the guide, q(z_t | c, h_{t-1}), without gradients: its posterior-mean
glimpses, or S posterior draws whose class probabilities are averaged (the Monte-Carlo posterior
predictive). The probabilities are the model's ``probs`` site for those glimpses, read from the
guide's own crops and states; replaying the model would add only its prior and proxy decoder,
which do not change them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from torch import Tensor, nn

from . import where
from .checkpoint import load
from .data import proxies_of as image_proxies
from .familiar import warn_unfamiliar
from .labels import predicted
from .model import SaccadeModel, Step


@dataclass
class Prediction:
    """Class probabilities [B, K], glimpses z [S, B, T, 3] (S = 1 for the posterior mean) and,
    for a model with ``where="cells"``, the centres (x, y) [S, B, T, 2] its glimpses aimed at
    in normalised coordinates (``boxes`` takes them)."""

    probs: Tensor
    z: Tensor
    centres: Tensor | None = None


def check_images(model: SaccadeModel, images: Tensor) -> None:
    """Raise ValueError unless ``images`` is a [B, C, H, W] batch that suits the model (see
    ``SaccadeConfig.check_image``); ``infer`` checks the values through the proxies."""
    if images.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {list(images.shape)}")
    try:
        model.config.check_image(*images.shape[1:])
    except ValueError as error:
        raise ValueError(f"images {list(images.shape)}: {error}") from None


def check_finite(values: Tensor, what: str) -> None:
    if not torch.isfinite(values).all():
        raise ValueError(f"{what} contain NaN or infinite values")


def proxies_of(model: SaccadeModel, images: Tensor, proxies: Tensor | None = None) -> Tensor:
    """``proxies`` if given, else the images' own at the model's proxy size."""
    return image_proxies(images, model.config.proxy) if proxies is None else proxies


def samples_for(model: SaccadeModel, samples: int | None) -> int:
    """The posterior draws a prediction asked for ``samples`` averages: the model's own
    ``predict_samples`` for None (0: the posterior-mean glimpses)."""
    return model.config.predict_samples if samples is None else samples


@torch.no_grad()
def infer(
    model: SaccadeModel,
    images: Tensor,
    proxies: Tensor | None = None,
    samples: int | None = None,
    random: bool = False,
) -> Prediction:
    """Probabilities and glimpses: posterior mean (``samples=0``) or S samples averaged
    (None: the model's ``predict_samples``); ``random=True`` puts the glimpses at random
    places instead (see ``SaccadeModel.guide``).
    ``images`` is a tensor [B, C, H, W], photos on disk (``data.as_batch``) or canvases
    drawn from their patches (``data.CanvasBatch``)."""
    if isinstance(images, Tensor):  # photos on disk (PhotoBatch) are checked when opened
        check_images(model, images)
    warn_unfamiliar(model, images)
    proxies = proxies_of(model, images, proxies)
    # An area average is NaN or infinite whenever a pixel is: checking the small proxy
    # costs nothing, where checking a 2528x2528 image costs twice the whole prediction.
    check_finite(proxies, "images")
    was_training = model.training
    model.eval()
    samples = samples_for(model, samples)
    draws, batch = max(samples, 1), proxies.shape[0]
    try:
        # The inputs are checked above; Pyro's checks of every site's arguments would add
        # about 3-10% to a prediction's CPU time.
        with pyro.validation_enabled(False):
            steps: list[Step] = []
            model.guide(images, proxies, steps=steps, mean=samples <= 0, random=random, draws=draws)
    finally:
        model.train(was_training)
    probs = model.read(steps).view(draws, batch, -1).mean(0)
    check_finite(probs, "the glimpsed parts of the images")
    z = torch.stack([step.z for step in steps], -2)
    z = z.view(draws, batch, *z.shape[1:])
    centres = None
    if steps[0].centre is not None:
        centres = torch.stack([step.centre for step in steps], -2)
        centres = centres.view(draws, batch, *centres.shape[1:])
    return Prediction(probs=probs, z=z, centres=centres)


def predict(
    model: nn.Module | str | Path,
    images: Tensor,
    proxies: Tensor | None = None,
    samples: int | None = None,
    random: bool = False,
) -> Tensor:
    """Class probabilities [B, K] for images [B, C, H, W] (or one [C, H, W]) of any size, from
    a model, a baseline or a checkpoint (``load``); ``samples`` and ``random`` as ``infer``
    takes them."""
    if isinstance(model, (str, Path)):
        model = load(model)
    if isinstance(images, Tensor) and images.dim() == 3:
        images = images.unsqueeze(0)
    if isinstance(images, Tensor):
        images = images.to(next(model.parameters()).device)
    if not isinstance(model, SaccadeModel):  # a baseline reads the whole image or its proxy
        return model.predict(images, proxies)
    return infer(model, images, proxies, samples, random).probs


def shown(
    model: SaccadeModel,
    images: Tensor,
    proxies: Tensor | None = None,
    samples: int | None = None,
) -> tuple[Tensor, Prediction]:
    """The class probabilities [B, K] a prediction gives (``samples`` as ``infer`` takes
    them) and the posterior-mean glimpses to show with them: draws may look in different
    cells, so an average of their boxes is nowhere the model looked."""
    proxies = proxies_of(model, images, proxies)  # built once for both passes
    mean = infer(model, images, proxies, samples=0)
    if samples_for(model, samples) == 0:
        return mean.probs, mean
    return infer(model, images, proxies, samples).probs, mean


def labels(model: nn.Module, probs: Tensor) -> list[str]:
    """Class names of probabilities [B, K] (or one [K]) from ``predict``: the most probable
    class, or for a multi-label model the classes above 0.5 joined by "+" ("3+7")."""
    rows, cfg = probs.reshape(-1, probs.shape[-1]), model.config
    return [predicted(row, cfg.classes, cfg.multilabel)[0] for row in rows]


def boxes(
    model: SaccadeModel, z: Tensor, height: int, width: int, centres: Tensor | None = None
) -> Tensor:
    """Pixel boxes (x0, y0, x1, y1) of glimpses z [..., T, 3] on an image of the given size;
    a model with ``where="cells"`` also needs the ``centres`` [..., T, 2] they aimed at
    (``Prediction.centres``)."""
    return where.boxes(model.config, z, height, width, centres)
