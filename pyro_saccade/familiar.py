"""A one-line warning when an input is unlike what a model was trained on.

A model answers any image it can crop, with confidence, even one unlike its training data (a
photo, noise, a canvas twice the trained size). :func:`warn_unfamiliar` lists in one line every
reason an input is unlike the training images:

- its channels (a colour photo for a gray model), from ``model.trained_on``;
- its size: a canvas drawn like the training ones keeps its objects' pixel size, so on a canvas
  whose shorter side is ``SIDE_FACTOR`` times the trained one they are that many times smaller
  on the proxy (which keeps the image's aspect, ``data.proxy_shape``); and its shape, an aspect
  ratio ``ASPECT_FACTOR`` times the trained one;
- and, for a model with a profile of held-out canvases (``model.familiar``, made by
  :func:`profile`), three comparisons with it. Each fits a diagonal Gaussian to statistics of the
  held-out canvases, scores an image by the mean squared z-score of its own, and flags it beyond
  ``MARGIN`` times the held-out canvases' ``QUANTILE`` of their own scores:

  - the proxy's intensities: log mean, log standard deviation and the log counts of a histogram
    of its pixels (another background, noise, a photo, an empty image);
  - the proxy's detail: the share of its energy at each level of a Laplacian pyramid, which moves
    to finer levels when objects are smaller on the proxy and to coarser ones when larger;
  - the glimpses of the prediction: the crop features (``Prediction.features``) of each glimpse
    against those of the same glimpse on the held-out canvases; flagged when no glimpse found
    anything like what the model was trained to read (the smallest score over the glimpses).

The glimpses comparison also lowers the probabilities (:func:`read_probability`): a model with
a profile predicts with the mixture

    p(y | x) = r(x) p_model(y | x) + (1 - r(x)) u(y),

r(x) the probability that its glimpses read something of the training kind and u uniform over
the classes, so that it is unsure where its glimpses found nothing it knows. Only the glimpses
tell: the model still reads canvases whose proxy intensities or detail are unlike the training
ones (a white background, other sides within limits), but not those where no glimpse found
anything familiar.

``checkpoint.model_from_checkpoint`` sets ``model.trained_on`` and, from a checkpoint's
``"familiar"`` entry (a profile as JSON), ``model.familiar``. ``prediction.infer`` warns after a
prediction, with its glimpses; ``posterior.sample_posterior`` checks an image and its proxy.
The thresholds come from measurements in docs/results.md ("Inputs unlike the training images").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Megapixel-majority's accuracy holds at 1.25 times its trained side and falls by 3 points at 1.5
# times (identify-2528-28px's holds to 1.75 times): the factor lies between (docs/results.md,
# "Inputs unlike the training images").
SIDE_FACTOR = 1.4  # warn when the image's shorter side is more than this far from the trained one
ASPECT_FACTOR = 1.5  # ... or its aspect ratio more than this far from the trained one
QUANTILE = 0.99  # of the held-out canvases' own scores, kept in the profile
# Times that quantile, the score beyond which an image is unlike the held-out canvases: those of
# other seeds vary more than the profile's own (Megapixel MNIST draws its scribbles per seed).
MARGIN = 1.5
BINS = 16  # of the proxy's intensity histogram over [0, 1]
LEVELS = 4  # of the Laplacian pyramid whose energies describe the proxy's detail
# The least standard deviation of a statistic in the profile (the statistics of intensity and
# detail are logs: 0.5 is a factor of 1.6). Megapixel canvases all hold 55 objects, so that their
# mean intensity varies by 3%: without a floor, most canvases 1.17 times larger or smaller than
# the trained side would be flagged for their intensities; with this one, few are.
STD_FLOOR = {"intensity": 0.5, "detail": 0.1, "glimpses": 0.05}
# The least probability that a prediction's glimpses read something familiar. Far from the profile
# the posterior of :func:`read_probability` underflows, and at r = 0 every class would tie at the
# uniform u: the smaller r, the larger the differences of probability that single-precision
# rounding of u + r (p - u) erases (at 1e-3, about 1e-5), while p stays within 1e-3 of u.
READ_FLOOR = 1e-3
PROFILE_VERSION = 1


def trained_on(channels: int, canvas: list[int] | None) -> tuple[int, int | None, int | None]:
    """(channels, height, width) of a model's training input; no size for photos of any size."""
    height, width = canvas if canvas else (None, None)
    return channels, height, width


def unfamiliar(
    trained: tuple[int, int | None, int | None],
    channels: int,
    height: int,
    width: int,
    scale: float = 1.0,
) -> list[str]:
    """Why an input of this shape is far from the training input: its channels, its size.
    ``scale`` is how many times J the model's proxy side is on this image
    (``SaccadeConfig.proxy_side``): a proxy that grows with the image keeps its objects' size."""
    trained_channels, trained_height, trained_width = trained
    reasons = []
    if channels != trained_channels:
        colour = {1: "gray", 3: "colour"}
        reasons.append(
            f"a {colour.get(channels, channels)} image for a model trained on "
            f"{colour.get(trained_channels, trained_channels)} ones (converted)"
        )
    if trained_height is None or trained_width is None or height < 1 or width < 1:
        return reasons
    # The proxy is J pixels across the shorter side: that side sets an object's size on it.
    side = min(height, width) / min(trained_height, trained_width) / scale
    aspect = (height / width) / (trained_height / trained_width)
    image = f"a {height}x{width} image for a model trained on {trained_height}x{trained_width}"
    if max(side, 1 / side) > SIDE_FACTOR:
        reasons.append(
            f"{image} canvases (an object of the trained pixel size {1 / side:.2g} times as "
            "large on the proxy)"
        )
    elif max(aspect, 1 / aspect) > ASPECT_FACTOR:
        reasons.append(f"{image} canvases (another shape, its objects of the trained size)")
    return reasons


# -- statistics -------------------------------------------------------------------------------


def intensity_statistics(proxies: Tensor) -> Tensor:
    """[N, 2 + BINS] for proxies [N, C, J, I] (channels averaged): the log of the mean and of the
    standard deviation of the pixels and log(1 + count) of the pixels in each of ``BINS`` equal
    bins of [0, 1], counted as in a J x J proxy (that of a square image). Logs, so that an empty
    canvas differs from a nearly empty one as a full one from a half-full one."""
    side = min(proxies.shape[-2:])
    gray = proxies.float().mean(1).flatten(1)
    bins = (gray * BINS).long().clamp(0, BINS - 1)
    counts = torch.zeros(len(gray), BINS).scatter_add_(1, bins, torch.ones_like(gray))
    counts = counts * (side * side / gray.shape[1])  # another shape's share, in J x J pixels
    moments = torch.stack([gray.mean(1), gray.std(1, unbiased=False)], 1)
    return torch.cat([torch.log(moments + 1e-6), torch.log1p(counts)], 1)


def detail_statistics(proxies: Tensor) -> Tensor:
    """[N, LEVELS + 1] for proxies [N, C, J, J] (channels averaged): the log share of the energy
    at each of ``LEVELS`` levels of a Laplacian pyramid (the squared difference of a level and
    the next coarser one), finest first, and in the coarsest level's own variation; NaN for a
    flat proxy, which has no detail to share."""
    level = proxies.float().mean(1, keepdim=True)
    energies = []
    for _ in range(LEVELS):
        coarser = F.avg_pool2d(level, 2, ceil_mode=True)
        back = F.interpolate(coarser, size=level.shape[-2:], mode="nearest")
        energies.append((level - back).pow(2).flatten(1).mean(1))
        level = coarser
    energies.append((level - level.mean((2, 3), keepdim=True)).pow(2).flatten(1).mean(1))
    energy = torch.stack(energies, 1)
    total = energy.sum(1, keepdim=True)
    shares = torch.log(energy / total.clamp_min(1e-30) + 1e-4)
    return shares.masked_fill(total < 1e-10, math.nan)


def glimpse_scores(features: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """[B] for the crop features [S, B, T, F] of a prediction against each glimpse's held-out
    mean and standard deviation [T, F]: the mean squared z-score of a glimpse's features,
    averaged over the draws; the smallest over the glimpses, so that one glimpse that found
    something familiar is enough."""
    z = (features.float() - mean) / std
    return z.pow(2).mean(-1).mean(0).min(-1).values


def glimpse_score(familiar: dict, features: Tensor) -> Tensor | None:
    """[B]: :func:`glimpse_scores` of the crop features [S, B, T, F] of a prediction against
    the profile ``familiar``; None for features of another number of glimpses or features than
    the profile's, which cannot be compared."""
    glimpses = familiar["glimpses"]
    mean, std = (torch.as_tensor(glimpses[k]) for k in ("mean", "std"))
    if tuple(features.shape[-2:]) != tuple(mean.shape):
        return None
    return glimpse_scores(features.detach().cpu(), mean, std)


def read_probability(familiar: dict | None, features: Tensor) -> Tensor:
    """[B] (double): r(x), the posterior probability that a prediction's glimpses (crop features
    [S, B, T, F]) read something of the kind the model was trained on, which
    ``prediction.infer`` mixes the model's probabilities with the uniform by:

        p(y | x) = r(x) p_model(y | x) + (1 - r(x)) u(y).

    Two components explain the features of a glimpse: "familiar", the profile's diagonal Gaussian
    of that glimpse's F features on held-out canvases, whose log density is -F/2 s up to a
    constant for a mean squared z-score s; and "unfamiliar", a flat density at the height the
    Gaussian has at the warning's threshold s* = ``MARGIN`` times the profile's quantile. With
    even prior odds the log odds of familiar are F/2 (s* - s), so

        r = sigmoid(F/2 (s* - s)),

    1/2 exactly where the glimpse warning fires, s the image's score as :func:`glimpse_scores`
    makes it (the best glimpse's, averaged over the draws). r is at least ``READ_FLOOR``. Ones
    without a profile or for features it cannot be compared with (:func:`glimpse_score`)."""
    found = None if not familiar else glimpse_score(familiar, features)
    if found is None:
        return torch.ones(features.shape[1], dtype=torch.float64)
    threshold = MARGIN * familiar["glimpses"]["quantile"]
    log_odds = features.shape[-1] / 2 * (threshold - found.double())
    return torch.sigmoid(log_odds).clamp_min(READ_FLOOR)


def with_tensors(familiar: dict) -> dict:
    """A profile with its Gaussians' means and standard deviations as tensors, for a loaded
    model: read as lists of floats, the glimpses' thousands of numbers cost more than the
    comparison itself at every prediction."""
    return {
        key: {**value, **{k: torch.tensor(value[k]) for k in ("mean", "std")}}
        if isinstance(value, dict) and "mean" in value
        else value
        for key, value in familiar.items()
    }


def score(values: Tensor, gaussian: dict) -> Tensor:
    """[N]: the mean squared z-score of statistics [N, D] under a diagonal Gaussian (a dict
    with ``mean`` and ``std``, lists or tensors)."""
    mean, std = (torch.as_tensor(gaussian[k], dtype=values.dtype) for k in ("mean", "std"))
    return ((values - mean) / std).pow(2).mean(-1)


def fitted(values: Tensor, floor: float) -> dict:
    """The diagonal Gaussian of statistics [N, D] (standard deviations at least ``floor``) and
    the ``QUANTILE`` of the N values' own scores, as lists of floats and a float."""
    gaussian = {
        "mean": values.mean(0).tolist(),
        "std": values.std(0, unbiased=False).clamp_min(floor).tolist(),
    }
    return {**gaussian, "quantile": torch.quantile(score(values, gaussian), QUANTILE).item()}


def profile(model: object, proxies: Tensor, prediction: object) -> dict:
    """The statistics of N held-out canvases of a model's own task, drawn as in training, that
    :func:`warn_unfamiliar` compares an input with. ``proxies`` [N, C, J, J] are their proxies
    and ``prediction`` the model's ``prediction.infer`` of them (its ``features`` [S, N, T, F]).
    Returns a JSON-serialisable dict (lists of floats), which ``checkpoint`` keeps as the
    checkpoint's ``"familiar"`` entry and loads as ``model.familiar``."""
    features = prediction.features.detach().float().cpu()
    proxies = proxies.detach().float().cpu()
    if proxies.dim() != 4 or len(proxies) != features.shape[1]:
        raise ValueError(
            f"proxies {list(proxies.shape)} for a prediction of {features.shape[1]} images"
        )
    side = getattr(getattr(model, "config", None), "proxy", proxies.shape[-1])
    if proxies.shape[-2:] != (side, side):
        raise ValueError(f"proxies {list(proxies.shape)} for a model with {side}x{side} proxies")
    if len(proxies) < 2:
        raise ValueError("a profile needs at least two held-out canvases")
    detail = detail_statistics(proxies)
    detail = detail[~detail.isnan().any(1)]
    if len(detail) < 2:
        raise ValueError("the held-out proxies are flat: they have no detail to profile")
    # Glimpse t against glimpse t: a model's first glimpses survey the canvas, its last ones
    # read a digit.
    mean = features.mean((0, 1))
    std = features.std((0, 1), unbiased=False).clamp_min(STD_FLOOR["glimpses"])
    own = glimpse_scores(features, mean, std)
    return {
        "version": PROFILE_VERSION,
        "images": len(proxies),
        "proxy": side,
        "mean_intensity": proxies.mean().item(),
        "intensity": fitted(intensity_statistics(proxies), STD_FLOOR["intensity"]),
        "detail": fitted(detail, STD_FLOOR["detail"]),
        "glimpses": {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "quantile": torch.quantile(own, QUANTILE).item(),
        },
    }


def profile_reasons(
    familiar: dict, proxies: Tensor | None = None, features: Tensor | None = None
) -> list[list[str]]:
    """Per image, why its proxy [B, C, J, J] or the crop features [S, B, T, F] of its
    prediction are unlike the held-out canvases of ``familiar`` (a :func:`profile`). Proxies of
    another side than the profile's, or features of another number of glimpses, are not
    compared."""
    count = len(proxies) if proxies is not None else features.shape[1]
    reasons: list[list[str]] = [[] for _ in range(count)]
    if proxies is not None and min(proxies.shape[-2:]) == familiar["proxy"]:
        proxies = proxies.detach().float().cpu()
        intensity = score(intensity_statistics(proxies), familiar["intensity"])
        brighter = proxies.mean((1, 2, 3)) > familiar["mean_intensity"]
        for b in (intensity > MARGIN * familiar["intensity"]["quantile"]).nonzero()[:, 0]:
            reasons[b].append(
                "proxy intensities unlike the training proxies' "
                f"({'brighter' if brighter[b] else 'darker'} on average: another background?)"
            )
        detail = detail_statistics(proxies)
        flat = detail.isnan().any(1)  # no detail at all: its intensities tell
        detail = detail.nan_to_num(0.0)
        unlike = score(detail, familiar["detail"]).masked_fill(flat, 0.0)
        # Which way the energy moved: the mean level it sits at, 0 the finest.
        levels = torch.arange(LEVELS + 1, dtype=detail.dtype)
        trained_level = (torch.as_tensor(familiar["detail"]["mean"]).exp() * levels).sum()
        finer = (detail.exp() * levels).sum(1) < trained_level
        for b in (unlike > MARGIN * familiar["detail"]["quantile"]).nonzero()[:, 0]:
            reasons[b].append(
                f"{'finer' if finer[b] else 'coarser'} detail than the training proxies' "
                f"({'smaller' if finer[b] else 'larger'} objects, or another texture)"
            )
    found = None if features is None else glimpse_score(familiar, features)
    if found is not None:
        for b in (found > MARGIN * familiar["glimpses"]["quantile"]).nonzero()[:, 0]:
            reasons[b].append("glimpses that found nothing like what the model was trained to read")
    return reasons


# -- the warning ------------------------------------------------------------------------------


def shapes_of(images: object) -> list[tuple[int, int, int]]:
    """(channels, height, width) of each image of a tensor [B, C, H, W], a CanvasBatch or a
    PhotoBatch (a photo's own channels, before it is converted for the model)."""
    photos = getattr(images, "photos", None)
    if photos is not None:
        return [(photo.native_channels, photo.height, photo.width) for photo in photos]
    return [tuple(images.shape[1:])] * len(images)


def reasons_for(
    model: object,
    images: object,
    proxies: Tensor | None = None,
    prediction: object | None = None,
) -> list[list[str]]:
    """Per image of ``images`` (a tensor [B, C, H, W], a CanvasBatch or a PhotoBatch), every
    reason it is unlike what ``model`` was trained on: its shape (``model.trained_on``) and,
    for a model with a profile (``model.familiar``), its proxy [B, C, J, J] and the glimpses of
    its ``prediction`` (a ``prediction.Prediction``), when given; ``proxies`` may also be a
    list of [1, C, J, I], one per image, for images of different shapes."""
    trained = getattr(model, "trained_on", None)
    config = getattr(model, "config", None)

    def scale(height: int, width: int) -> float:  # J itself unless the proxy grows with the image
        return config.proxy_side(height, width) / config.proxy if config is not None else 1.0

    reasons = [
        unfamiliar(trained, *shape, scale=scale(*shape[1:])) if trained else []
        for shape in shapes_of(images)
    ]
    familiar = getattr(model, "familiar", None)
    features = None if prediction is None else prediction.features
    if familiar and isinstance(proxies, list):  # proxies of different shapes: one by one
        for b, (own, proxy) in enumerate(zip(reasons, proxies, strict=True)):
            one = None if features is None else features[:, b : b + 1]
            own.extend(profile_reasons(familiar, proxy, one)[0])
    elif familiar and (proxies is not None or features is not None):
        for own, more in zip(reasons, profile_reasons(familiar, proxies, features), strict=True):
            own.extend(more)
    return reasons


def summary(reasons: Sequence[list[str]]) -> str | None:
    """The warning for a batch whose images have these ``reasons``, one line, or None when
    none has any: each reason once, and with several images how many have it."""
    flagged = sum(1 for own in reasons if own)
    if not flagged:
        return None
    counts: dict[str, int] = {}
    for own in reasons:
        for reason in own:
            counts[reason] = counts.get(reason, 0) + 1
    listed = "; ".join(
        reason if len(reasons) == 1 else f"{reason} ({count} of {len(reasons)} images)"
        for reason, count in counts.items()
    )
    answers = "its answer" if flagged == 1 else "their answers"
    return f"unlike the training images: {listed}: {answers} may be unreliable"


def warn_unfamiliar(
    model: object,
    images: object,
    proxies: Tensor | None = None,
    prediction: object | None = None,
) -> None:
    """Warn once per batch, in one line, with every reason an image of ``images`` is unlike what
    ``model`` was trained on (``proxies`` and ``prediction`` as :func:`reasons_for` takes them).
    Models not loaded from a checkpoint carry neither ``trained_on`` nor ``familiar`` and are
    not checked."""
    if getattr(model, "trained_on", None) is None and not getattr(model, "familiar", None):
        return
    line = summary(reasons_for(model, images, proxies, prediction))
    if line:
        warnings.warn(line, stacklevel=2)
