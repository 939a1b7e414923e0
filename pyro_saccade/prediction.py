"""Prediction with a trained model: class probabilities, glimpses and their boxes.

A prediction runs the guide, q(z_t | c, h_{t-1}), without gradients: its posterior-mean
glimpses, or S posterior draws whose class probabilities are averaged (the Monte-Carlo posterior
predictive). The probabilities are the model's ``probs`` site for those glimpses, read from the
guide's own crops and states; replaying the model would add only its prior and proxy decoder,
which do not change them. They are tempered by the model's temperature (``tempered``) and, for
a model with a profile of held-out canvases (``model.familiar``), mixed with the uniform by the
probability that the glimpses read something familiar (``unsure``): the predictive

    p(y | x) = r(x) p_model(y | x) + (1 - r(x)) u(y),

r(x) = ``familiar.read_probability`` and u uniform over the K classes (multi-label: 1/2 for each
label). Both keep every answer: they keep the order of an image's classes.

Images are read one at a time, and the draws take their randomness from ``ImageNoise``: the
noise of draw s at a site depends on the seed, the site and s alone, so that a prediction is a
function of the model, the image and the seed, whatever else is in the batch.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor, nn

from . import where
from .checkpoint import load
from .data import CanvasBatch, PhotoBatch
from .data import proxies_of as image_proxies
from .familiar import read_probability, warn_unfamiliar
from .labels import predicted
from .model import SaccadeModel, Step


@dataclass
class Prediction:
    """Class probabilities [B, K], the average over draws of each draw's, tempered and mixed
    with the uniform by ``read`` (module docstring); per draw, the class logits [S, B, K], the
    glimpses z [S, B, T, 3] (S = 1 for the posterior mean) and the crops' features [S, B, T, F];
    for a model with ``where="cells"``, the centres (x, y) [S, B, T, 2] its glimpses aimed at
    in normalised coordinates (``boxes`` takes them); and for a model with a profile, r(x) [B],
    the probability that the glimpses read something familiar (``familiar.read_probability``;
    None without a profile or with random glimpses)."""

    probs: Tensor
    logits: Tensor
    z: Tensor
    features: Tensor
    centres: Tensor | None = None
    read: Tensor | None = None


class ImageNoise(Messenger):
    """Draw every unobserved sample site of one image's draws (one row each, as
    ``SaccadeModel.guide`` lays them out) from noise of its own: draw s of a site from a stream
    seeded by (``seed``, ``stream``, the site's name, s). Each draw keeps its distribution: a
    Normal is loc + scale * eps, a Uniform low + (high - low) * u, a Categorical the argmax of
    its logits plus Gumbel noise, a Bernoulli u < p."""

    def __init__(self, seed: int, stream: str = "posterior") -> None:
        super().__init__()
        self.key = f"{seed}/{stream}"
        self.drawn: Counter[str] = Counter()  # draws taken so far at each site (Predictive)

    def noise(self, name: str, like: Tensor, normal: bool) -> Tensor:
        """Standard normal or uniform noise shaped as ``like`` [S, ...], for the next S draws
        of a site."""
        first = self.drawn[name]
        self.drawn[name] += len(like)
        draw = torch.randn if normal else torch.rand
        noise = [
            draw(like.shape[1:], generator=torch.Generator().manual_seed(self.seed_of(name, s)))
            for s in range(first, first + len(like))
        ]
        return torch.stack(noise).to(like.device, like.dtype)

    def seed_of(self, name: str, draw: int) -> int:
        return zlib.crc32(f"{self.key}/{name}/{draw}".encode())

    def _pyro_sample(self, msg: Message) -> None:
        if msg["is_observed"] or msg["value"] is not None:
            return
        fn, name = msg["fn"], msg["name"]
        base = fn.base_dist if isinstance(fn, dist.Independent) else fn
        if isinstance(base, (dist.Delta, _Subsample)):  # no noise; a plate's indices
            return
        if isinstance(base, dist.Normal):
            loc, scale = base.loc.expand(fn.shape()), base.scale.expand(fn.shape())
            value = loc + scale * self.noise(name, loc, normal=True)
        elif isinstance(base, dist.Uniform):
            low, high = base.low.expand(fn.shape()), base.high.expand(fn.shape())
            value = low + (high - low) * self.noise(name, low, normal=False)
        elif isinstance(base, dist.Categorical):
            logits = base.logits
            u = self.noise(name, logits, normal=False)
            gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))
            value = (logits + gumbel).argmax(-1)
        elif isinstance(base, dist.Bernoulli):
            probs = base.probs.expand(fn.shape())
            value = (self.noise(name, probs, normal=False) < probs).to(probs)
        else:
            raise NotImplementedError(f"{name}: no per-image noise for {type(base).__name__}")
        msg["value"] = value


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


def checked_proxies(model: SaccadeModel, images: Tensor, proxies: Tensor | None = None) -> Tensor:
    """The images' proxies (``proxies_of``), once the images are checked to suit the model and
    to hold finite values; ValueError otherwise."""
    if isinstance(images, Tensor):  # photos on disk (PhotoBatch) are checked when opened
        check_images(model, images)
    proxies = proxies_of(model, images, proxies)
    # An area average is NaN or infinite whenever a pixel is: checking the small proxy
    # costs nothing, where checking a 2528x2528 image costs twice the whole prediction.
    check_finite(proxies, "images")
    return proxies


def proxies_of(model: SaccadeModel, images: Tensor, proxies: Tensor | None = None) -> Tensor:
    """``proxies`` if given, else the images' own at the model's proxy side for their size."""
    return image_proxies(images, model.config.proxy_side) if proxies is None else proxies


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
    seed: int = 0,
    warn: bool = True,
) -> Prediction:
    """Probabilities and glimpses: posterior mean (``samples=0``) or S samples averaged
    (None: the model's ``predict_samples``), drawn by ``ImageNoise`` from ``seed``;
    ``random=True`` puts the glimpses at random places instead (see ``SaccadeModel.guide``).
    ``images`` is a tensor [B, C, H, W], photos on disk (``data.as_batch``) or canvases
    drawn from their patches (``data.CanvasBatch``). With ``warn``, a warning lists every
    reason an image is unlike the training images (``familiar.warn_unfamiliar``)."""
    if isinstance(images, PhotoBatch) and images.mixed:  # proxies of different shapes
        photos = each_image(images)
        parts = [infer(model, one, None, samples, random, seed, warn=False) for one in photos]
        prediction = joined(parts)
        if warn:
            proxies = [one.proxies for one in photos]
            warn_unfamiliar(model, images, proxies, None if random else prediction)
        return prediction
    proxies = checked_proxies(model, images, proxies)
    was_training = model.training
    if was_training:  # a walk over every module: not at every prediction of an eval model
        model.eval()
    samples = samples_for(model, samples)
    draws, mean = max(samples, 1), samples <= 0
    try:
        # Image by image: a matrix product's rounding depends on how many rows it multiplies,
        # so that a batch would change an image's probabilities in their last bits.
        parts = [
            one_image(model, image, proxy, draws, mean, random, seed)
            for image, proxy in zip(each_image(images), proxies.split(1), strict=True)
        ]
    finally:
        if was_training:
            model.train()
    prediction = joined(parts)
    check_finite(prediction.probs, "the glimpsed parts of the images")
    if warn:  # random glimpses are not the model's: what they found says nothing of the image
        warn_unfamiliar(model, images, proxies, None if random else prediction)
    return prediction


def joined(parts: list[Prediction]) -> Prediction:
    """The predictions of consecutive batches as one: images along the batch dimension."""
    fields = {}
    for name in ("probs", "logits", "z", "features", "centres", "read"):
        values = [getattr(part, name) for part in parts]
        batch = 0 if name in ("probs", "read") else 1  # the others are per draw: [S, B, ...]
        fields[name] = None if values[0] is None else torch.cat(values, batch)
    return Prediction(**fields)


def one_image(
    model: SaccadeModel,
    image: Tensor,
    proxy: Tensor,
    draws: int,
    mean: bool,
    random: bool,
    seed: int,
) -> Prediction:
    """``infer`` for one image [1, C, H, W]: its ``draws`` glimpse sequences in one batch."""
    steps: list[Step] = []
    # The inputs are checked by ``infer``; Pyro's checks of every site's arguments would add
    # about 3-10% to a prediction's CPU time.
    # Random glimpses draw from a stream of their own: the posterior's noise would tie them to
    # the places the guide chose.
    noise = ImageNoise(seed, "random" if random else "posterior")
    with pyro.validation_enabled(False), noise:
        model.guide(image, proxy, steps=steps, mean=mean, random=random, draws=draws)
    logits = model.read(steps)  # [S, K]
    probs = tempered(model.class_probs(logits).mean(0, keepdim=True), model)

    def per_draw(values: list[Tensor]) -> Tensor:  # T x [S, ...] -> [S, 1, T, ...]
        return torch.stack(values, 1).unsqueeze(1)

    z, features = per_draw([s.z for s in steps]), per_draw([s.features for s in steps])
    centres = None if steps[0].centre is None else per_draw([s.centre for s in steps])
    read = None
    familiar = getattr(model, "familiar", None)
    if familiar and not random:  # random glimpses are not the model's reading of the image
        read = read_probability(familiar, features)
        probs = unsure(probs, read, model.config.multilabel)
        read = read.to(probs.device, probs.dtype)
    return Prediction(probs, logits.unsqueeze(1), z, features, centres, read)


def unsure(probs: Tensor, read: Tensor, multilabel: bool) -> Tensor:
    """Probabilities [B, K] mixed with the uniform u by the probability ``read`` [B] that the
    glimpses read something familiar: u + r (p - u), u = 1/K, or 1/2 for each label of a
    multi-label model. With r > 0 every answer stays (the order of the classes, each label's
    side of 1/2), up to single-precision rounding: at r = ``familiar.READ_FLOOR``, classes
    whose probabilities differ by less than about 1e-5 may tie. r = 1 leaves the probabilities
    as they are, to the bit."""
    u = 0.5 if multilabel else 1 / probs.shape[-1]
    # In double precision, rounded once to the probabilities' own; on the CPU, as not every
    # device computes in double.
    mixed = u + read.double().cpu()[:, None] * (probs.double().cpu() - u)
    return mixed.to(probs.dtype).to(probs.device)


def tempered(probs: Tensor, model: SaccadeModel) -> Tensor:
    """The model's prediction from its draws' averaged probabilities [B, K]: tempered by its
    ``temperature`` (``temper``), which keeps every answer and makes the probabilities
    calibrated (calibration.py)."""
    return temper(probs, model.config.temperature, model.config.multilabel)


def temper(probs: Tensor, temperature: float | Tensor, multilabel: bool) -> Tensor:
    """Probabilities [..., K] tempered: p^(1/T) normalised over the classes, or for multi-label
    probabilities each yes/no pair on its own (the logit divided by T)."""
    if isinstance(temperature, float) and temperature == 1.0:
        return probs
    tiny = torch.finfo(probs.dtype).tiny
    if multilabel:
        return torch.sigmoid(torch.logit(probs.clamp(tiny, 1 - 1e-7)) / temperature)
    return (probs.clamp(min=tiny).log() / temperature).softmax(-1)


def each_image(images: Tensor) -> list[Tensor]:
    """The images of a batch one by one, each a batch of one: tensor rows, or a PhotoBatch's or
    CanvasBatch's own sources."""
    if isinstance(images, Tensor):
        return list(images.split(1))
    if isinstance(images, PhotoBatch):
        return [
            PhotoBatch([photo], images.proxy_of(i), images.device)
            for i, photo in enumerate(images.photos)
        ]
    return [CanvasBatch([canvas], images.device) for canvas in images.canvases]


def predict(
    model: nn.Module | str | Path,
    images: Tensor,
    proxies: Tensor | None = None,
    samples: int | None = None,
    random: bool = False,
    seed: int = 0,
) -> Tensor:
    """Class probabilities [B, K] for images [B, C, H, W] (or one [C, H, W]) of any size, from
    a model, a baseline or a checkpoint (``load``); ``samples``, ``random`` and ``seed`` as
    ``infer`` takes them."""
    if isinstance(model, (str, Path)):
        model = load(model)
    if isinstance(images, Tensor) and images.dim() == 3:
        images = images.unsqueeze(0)
    if isinstance(images, Tensor):
        images = images.to(next(model.parameters()).device)
    if not isinstance(model, SaccadeModel):  # a baseline reads the whole image or its proxy
        if isinstance(images, PhotoBatch) and images.mixed:  # proxies of different shapes
            return torch.cat([model.predict(one, None) for one in each_image(images)])
        return model.predict(images, proxies)
    return infer(model, images, proxies, samples, random, seed).probs


def shown(
    model: SaccadeModel,
    images: Tensor,
    proxies: Tensor | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Prediction]:
    """The class probabilities [B, K] a prediction gives (``samples`` as ``infer`` takes
    them) and the posterior-mean glimpses to show with them: draws may look in different
    cells, so an average of their boxes is nowhere the model looked."""
    proxies = proxies_of(model, images, proxies)  # built once for both passes
    # One warning, for the pass whose probabilities are shown.
    mean = infer(model, images, proxies, samples=0, warn=samples_for(model, samples) == 0)
    if samples_for(model, samples) == 0:
        return mean.probs, mean
    return infer(model, images, proxies, samples, seed=seed).probs, mean


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
