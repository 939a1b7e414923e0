"""Probabilities that mean what they say: calibration measures and the temperature that fits.

A model is calibrated when, of the answers it gives with probability about p, a share p is
right. ``scores`` measures it on labelled images: the negative log-likelihood of the true
labels, the expected calibration error (ECE: the gap between confidence and accuracy, averaged
over ten bins of confidence, weighted by their share of answers) and the Brier score. A trained
model's prediction, the average of its posterior draws' probabilities, is tempered by
``SaccadeConfig.temperature`` T (p^(1/T), normalised), which keeps every answer;
``fit_temperature`` finds the T under which it is best calibrated on held-out labels. A model
with a profile of held-out canvases then mixes the tempered probabilities with the uniform by the
probability that its glimpses read something familiar (``prediction.unsure``), which keeps every
answer too; the temperature is fitted on the model's probabilities alone (``saccade
calibrate``), where that probability is nearly 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import with_config
from .familiar import profile, read_probability
from .model import SaccadeModel
from .prediction import Prediction, infer, joined, temper, unsure
from .training.batches import collate, prepare

BINS = 10


@dataclass
class Scores:
    """Negative log-likelihood per image, expected calibration error and Brier score."""

    nll: float
    ece: float
    brier: float

    def to_dict(self) -> dict[str, float]:
        return {"nll": self.nll, "ece": self.ece, "brier": self.brier}


def confidences(probs: Tensor, labels: Tensor, multilabel: bool) -> tuple[Tensor, Tensor]:
    """The probability of each answer and whether it is right: the most probable class of each
    image, or for a multi-label model each of the K yes/no answers."""
    if multilabel:
        answers = probs > 0.5
        return torch.where(answers, probs, 1 - probs).flatten(), (
            answers == labels.bool()
        ).flatten()
    confidence, answer = probs.max(-1)
    return confidence, answer == labels


def reliability(
    probs: Tensor, labels: Tensor, multilabel: bool, bins: int = BINS
) -> tuple[Tensor, Tensor, Tensor]:
    """Per bin of confidence (``bins`` equal bins of [0, 1]): the mean confidence, the
    accuracy (NaN in an empty bin) and the number of answers."""
    confidence, right = confidences(probs, labels, multilabel)
    index = (confidence * bins).long().clamp(max=bins - 1)
    counts = torch.bincount(index, minlength=bins).double()
    mean = torch.bincount(index, confidence.double(), bins) / counts
    accuracy = torch.bincount(index, right.double(), bins) / counts
    return mean, accuracy, counts


def scores(probs: Tensor, labels: Tensor, multilabel: bool, bins: int = BINS) -> Scores:
    """NLL, ECE and Brier score of class probabilities [N, K] for labels [N] (class indices)
    or, multi-label, [N, K] (0/1)."""
    probs = probs.double()
    tiny = torch.finfo(probs.dtype).tiny
    if multilabel:
        target = labels.double()
        likely = torch.where(target > 0.5, probs, 1 - probs)
        nll = -likely.clamp(min=tiny).log().sum(-1).mean()
    else:
        target = torch.nn.functional.one_hot(labels, probs.shape[-1]).double()
        nll = -probs.gather(-1, labels[:, None]).clamp(min=tiny).log().mean()
    brier = (probs - target).pow(2).sum(-1).mean()
    ece = calibration_error(*reliability(probs, labels, multilabel, bins))
    return Scores(float(nll), ece, float(brier))


def calibration_error(mean: Tensor, accuracy: Tensor, counts: Tensor) -> float:
    """The expected calibration error of a reliability diagram (``reliability``): the gap
    between mean confidence and accuracy, averaged over the bins weighted by their answers."""
    held = counts > 0
    return float(((mean - accuracy).abs()[held] * counts[held]).sum() / counts.sum())


def averaged_probs(logits: Tensor, temperature: float | Tensor, multilabel: bool) -> Tensor:
    """A prediction's probabilities [N, K] from its draws' logits [S, N, K]: the mean over draws
    of each draw's probabilities, tempered by ``temperature`` (``prediction.temper``)."""
    probs = torch.sigmoid(logits) if multilabel else logits.softmax(-1)
    return temper(probs.mean(0), temperature, multilabel)


def fit_temperature(logits: Tensor, labels: Tensor, multilabel: bool) -> float:
    """The temperature T whose probabilities ``averaged_probs(logits, T)`` have the least
    expected calibration error on ``labels``, the smallest negative log-likelihood among those
    within 1e-4 of it; ``logits`` [S, N, K] at temperature 1. T is searched on a grid of 400
    values from 0.02 to 50: around its optimum the likelihood is nearly flat where the
    calibration error is not (docs/results.md, "Calibration")."""
    logits = logits.double()
    grid = torch.logspace(math.log10(0.02), math.log10(50.0), 400, dtype=torch.float64)
    measured = [scores(averaged_probs(logits, t, multilabel), labels, multilabel) for t in grid]
    ece = torch.tensor([m.ece for m in measured])
    nll = torch.tensor([m.nll for m in measured])
    near = ece <= ece.min() + 1e-4
    return float(grid[near][nll[near].argmin()])


@torch.no_grad()
def held_out(
    model: SaccadeModel, dataset: Dataset, batch_size: int = 50, seed: int = 0
) -> tuple[Tensor, Prediction, Tensor]:
    """The proxies [N, C, J, J], the prediction (``prediction.infer`` with the model's own
    draws and ``seed``) and the labels of every image of a labelled ``dataset``."""
    device = next(model.parameters()).device
    batches = DataLoader(dataset, batch_size=batch_size, collate_fn=collate(dataset))
    proxies, parts, labels = [], [], []
    for images, answers in tqdm(batches, desc="held-out", leave=False, disable=None):
        images, batch_proxies = prepare(images, device, model.config.proxy_side)
        parts.append(infer(model, images, batch_proxies, seed=seed, warn=False))
        proxies.append(batch_proxies.cpu())
        labels.append(answers)
    return torch.cat(proxies), joined(parts), torch.cat(labels)


@dataclass
class Calibration:
    """A model with its fitted ``temperature``, the profile of the canvases it was fitted on
    (``familiar.profile``, a checkpoint's ``"familiar"`` entry), and the scores of its
    prediction on them ``before`` and ``after``: the model as it was, without a profile, and the
    calibrated model, tempered and mixed by its new profile."""

    model: SaccadeModel
    temperature: float
    familiar: dict
    before: Scores
    after: Scores


def calibrate(
    model: SaccadeModel, dataset: Dataset, batch_size: int = 50, seed: int = 0
) -> Calibration:
    """Fit ``model``'s temperature on a labelled ``dataset`` of held-out canvases, its posterior
    draws from ``seed``, and profile the canvases. In this order: the model's own profile, if
    any, is set aside, as it would mix the probabilities read here; the canvases are read; the
    temperature is fitted on the model's probabilities alone, where the mixture leaves them
    nearly whole (fitted on the mixed ones it would also answer for the few canvases whose
    glimpses the profile finds unusual); the new profile is made from the same reading."""
    model.familiar = None
    proxies, prediction, labels = held_out(model, dataset, batch_size, seed)
    multilabel = model.config.multilabel
    temperature = fit_temperature(prediction.logits, labels, multilabel)
    calibrated = with_config(model, temperature=temperature)
    familiar = profile(calibrated, proxies, prediction)
    probs = unsure(
        averaged_probs(prediction.logits, temperature, multilabel),
        read_probability(familiar, prediction.features),
        multilabel,
    )
    return Calibration(
        calibrated,
        temperature,
        familiar,
        scores(prediction.probs, labels, multilabel),
        scores(probs, labels, multilabel),
    )
