"""Posterior samples of the glimpses, as ArviZ data.

For a batch of images this draws S samples of z_0..z_{T-1} from the guide q(z | c), the class
probabilities and labels the model predicts from them (the posterior predictive: the model run
on each draw of the guide, as ``pyro.infer.Predictive`` runs it), and S samples from the prior
p(z_t | h_{t-1}) to compare against. The groups and variables of the ArviZ data are

    posterior             z, crop [image, glimpse, coord]    box [image, glimpse, corner]
                          where [image, glimpse]             (cells models)
                          where_q, where_p [image, glimpse, cell_row, cell_col]
    posterior_predictive  probs [image, class]               label [image] ([image, class] for mark)
    prior                 z, crop, box (where, where_p)
    prior_predictive      probs, label
    observed_data         label (when every image's true label is known)

``z`` is the latent itself (coord = scale, x, y before squashing). ``crop`` is the same glimpse in
units that do not depend on the image size: scale = crop side / shorter image side, x and y = crop
centre / image width and height. ``box`` is the crop in the image's pixels (x0, y0, x1, y1).
SVI draws are independent (one chain, no warm-up), so summarise them with means and intervals;
convergence diagnostics such as R-hat do not apply.

The ``where`` variables belong to models with ``where="cells"`` (``where.Cells``), whose glimpse t
first chooses a cell where_t of the proxy's G x G' grid (G' = G on a square image; the proxy
keeps the image's aspect, ``data.proxy_shape``): ``where`` is that cell's index, row * G' +
col. ``where_q`` is the guide's q(where_t | c, h_{t-1}) over the cells and ``where_p``
the model's p(where_t | c, h_{t-1}), both at the h_{t-1} of the group's draw: in the posterior,
the same h_{t-1} for both; in the prior, along the prior's own draws (it has no ``where_q``).
Cells that earlier glimpses marked as read have probability 0 (until every cell is read, when
all open again). ``where_p`` is the model's where-prior (where_priors.py): with the default,
the attention itself, it equals ``where_q``; with a belief of its own, the two maps show how far
the attention departs from it. Images of different aspect ratios, whose grids differ in shape,
leave the two maps out (with a warning).
``cell_row`` and ``cell_col`` are the cells' centres over the image height and width, in (0, 1)
as ``crop``'s y and x: the grid stretches over the whole image. A free model
(``where="free"``) has no where_t and none of these variables.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from pathlib import Path

import numpy as np
import torch
from pyro import poutine
from pyro.poutine import Trace
from torch import Tensor

from .data import Photo, as_batch
from .familiar import warn_unfamiliar
from .labels import label_name, predicted
from .model import SaccadeConfig, SaccadeModel
from .prediction import ImageNoise, checked_proxies
from .training.batches import prepare
from .where import Cells, cell_grid
from .where import boxes as glimpse_boxes

COORDS = ("scale", "x", "y")
CORNERS = ("x0", "y0", "x1", "y1")
WHERE = ("where", "where_q", "where_p")  # a cells model's variables (module docstring)
CELL_MAP = ["image", "glimpse", "cell_row", "cell_col"]


@dataclass
class Draws:
    """S draws for N images: z [S, N, T, 3], probs [S, N, K], labels [S, N] ([S, N, K] for mark),
    and for a model with ``where="cells"`` the centres its glimpses aimed at [S, N, T, 2], the
    cells they chose [S, N, T] and the probabilities of those choices over the G x G cells
    [S, N, T, G, G] under the guide (posterior draws only) and under the model."""

    z: Tensor
    probs: Tensor
    labels: Tensor
    centres: Tensor | None = None
    where: Tensor | None = None
    where_q: Tensor | None = None
    where_p: Tensor | None = None


@dataclass
class GlimpsePosterior:
    """Posterior and prior draws of the glimpses of N images, with what is needed to name them."""

    config: SaccadeConfig
    names: list[str]
    sizes: list[tuple[int, int]]  # (height, width) of each image
    posterior: Draws
    prior: Draws
    observed: Tensor | None = None  # [N] class indices, or [N, K] multi-hot for mark

    @property
    def samples(self) -> int:
        return self.posterior.z.shape[0]

    def boxes(self, draws: Draws) -> Tensor:
        """Pixel boxes (x0, y0, x1, y1) of the draws' glimpses, [S, N, T, 4]."""
        centres = draws.centres
        return torch.stack(
            [
                glimpse_boxes(
                    self.config, draws.z[:, n], h, w, None if centres is None else centres[:, n]
                )
                for n, (h, w) in enumerate(self.sizes)
            ],
            1,
        )

    def crops(self, draws: Draws) -> Tensor:
        """(scale, x, y) of the draws' glimpses in image-size-free units, [S, N, T, 3]:
        crop side over the shorter image side, centre over the width and the height."""
        boxes = self.boxes(draws)
        sizes = torch.tensor(self.sizes, dtype=boxes.dtype)  # [N, 2] (height, width)
        height, width = sizes[None, :, None, 0], sizes[None, :, None, 1]
        x0, y0, x1, y1 = boxes.unbind(-1)
        short = torch.minimum(height, width)
        return torch.stack(
            [(x1 - x0) / short, (x0 + x1) / (2 * width), (y0 + y1) / (2 * height)], -1
        )

    def to_arviz(self) -> object:
        """ArviZ InferenceData (ArviZ < 1) or DataTree (ArviZ >= 1) with named dims and coords."""
        groups = {
            "posterior": self._latents(self.posterior),
            "posterior_predictive": _predictions(self.posterior),
            "prior": self._latents(self.prior),
            "prior_predictive": _predictions(self.prior),
        }
        if self.observed is not None:
            groups["observed_data"] = {"label": self.observed.cpu().numpy()}
        per_glimpse = ["image", "glimpse", "coord"]
        dims = {
            "z": per_glimpse,
            "crop": per_glimpse,
            "box": ["image", "glimpse", "corner"],
            "probs": ["image", "class"],
            "label": ["image", "class"] if self.config.multilabel else ["image"],
        }
        coords = {
            "image": list(self.names),
            "glimpse": list(range(self.config.glimpses)),
            "coord": list(COORDS),
            "corner": list(CORNERS),
            "class": list(self.config.classes),
        }
        if self.posterior.where is not None:
            dims.update(where=["image", "glimpse"])
        if self.posterior.where_p is not None:
            rows, cols = self.posterior.where_p.shape[-2:]
            dims.update(where_q=CELL_MAP, where_p=CELL_MAP)
            coords.update(  # the cells' centres over the height, the width
                cell_row=((np.arange(rows) + 0.5) / rows).tolist(),
                cell_col=((np.arange(cols) + 0.5) / cols).tolist(),
            )
        return from_dict(groups, dims, coords)

    def summary(self, interval: float = 0.9) -> str:
        """Per image: predicted class and its posterior probability, then each glimpse's crop
        coordinates as posterior mean [equal-tailed interval]."""
        cfg = self.config
        tail = (1 - interval) / 2
        crops = self.crops(self.posterior)
        low, high = torch.quantile(crops, torch.tensor([tail, 1 - tail]), dim=0)
        mean = crops.mean(0)
        probs = self.posterior.probs.mean(0)
        lines = [
            f"{self.samples} posterior draws per image; mean [{interval:.0%} interval] of "
            "scale = crop side / shorter image side, x, y = crop centre / image width, height"
        ]
        for n, name in enumerate(self.names):
            label, probability = predicted(probs[n], cfg.classes, cfg.multilabel)
            line = f"{name}: predicted {label} (posterior probability {probability:.3f})"
            if self.observed is not None:
                line += f", true {label_name(self.observed[n], cfg.classes, cfg.multilabel)}"
            lines.append(line)
            for t in range(cfg.glimpses):
                cells = [
                    f"{coord} {mean[n, t, i]:.3f} [{low[n, t, i]:.3f}, {high[n, t, i]:.3f}]"
                    for i, coord in enumerate(COORDS)
                ]
                lines.append(f"  glimpse {t}: " + "  ".join(cells))
        return "\n".join(lines)

    def _latents(self, draws: Draws) -> dict[str, np.ndarray]:
        where = {name: getattr(draws, name) for name in WHERE}
        return {
            "z": _numpy(draws.z),
            "crop": _numpy(self.crops(draws)),
            "box": _numpy(self.boxes(draws)),
            **{name: _numpy(values) for name, values in where.items() if values is not None},
        }


def _predictions(draws: Draws) -> dict[str, np.ndarray]:
    return {"probs": _numpy(draws.probs), "label": _numpy(draws.labels.long())}


def _numpy(draws: Tensor) -> np.ndarray:
    """[S, ...] draws as [chain = 1, draw = S, ...], ArviZ's sample dimensions."""
    return draws.detach().cpu()[None].numpy()


# -- sampling ---------------------------------------------------------------------------------


@torch.no_grad()
def draw(
    model: SaccadeModel,
    image: Tensor,
    proxy: Tensor,
    samples: int,
    posterior: bool = True,
    seed: int = 0,
) -> Draws:
    """S draws for one image [1, C, H, W] from the posterior or, with ``posterior=False``, the
    prior (then the glimpses follow p(z_t | h_{t-1})), their noise from ``seed`` alone
    (``prediction.ImageNoise``)."""
    with ImageNoise(seed, "posterior" if posterior else "prior"):
        draws = [_draw_once(model, image, proxy, posterior) for _ in range(samples)]
    return _joined(draws, lambda parts: torch.stack(parts).cpu())


def _draw_once(model: SaccadeModel, image: Tensor, proxy: Tensor, posterior: bool) -> Draws:
    """One draw [1, ...] (the image's row): the guide's trace when ``posterior``, then the
    model's on the guide's values, as ``pyro.infer.Predictive`` runs them; the traces keep the
    distributions of where_t, not only its value."""
    guide = poutine.trace(model.guide).get_trace(image, proxy) if posterior else None
    program = model.model if guide is None else poutine.replay(model.model, trace=guide)
    trace = poutine.trace(program).get_trace(image, proxy)
    cfg = model.config
    label = "y" if cfg.likelihood == "aggregate" else f"y_{cfg.glimpses - 1}"
    one = Draws(
        _per_glimpse(trace, "z", cfg.glimpses),
        trace.nodes["probs"]["value"],
        trace.nodes[label]["value"],
    )
    if isinstance(model.where, Cells):
        one.centres = _per_glimpse(trace, "centre", cfg.glimpses)
        one.where = _per_glimpse(trace, "where", cfg.glimpses)
        grid = cell_grid(cfg, *image.shape[-2:])
        one.where_p = _cell_probs(trace, cfg, grid)
        one.where_q = None if guide is None else _cell_probs(guide, cfg, grid)
    return one


def _per_glimpse(
    trace: Trace, site: str, glimpses: int, read: Callable[[dict], Tensor] = itemgetter("value")
) -> Tensor:
    """``read`` of the trace's nodes ``{site}_0`` .. ``{site}_{T-1}``, stacked [B, T, ...]."""
    return torch.stack([read(trace.nodes[f"{site}_{t}"]) for t in range(glimpses)], 1)


def _cell_probs(trace: Trace, config: SaccadeConfig, grid: tuple[int, int]) -> Tensor:
    """The probabilities of where_t's distribution in ``trace`` as maps [B, T, G, G'] over the
    ``grid`` of cells (cell index row * G' + col, as ``where.Cells`` numbers them); 0 on the
    cells it masks."""
    probs = _per_glimpse(trace, "where", config.glimpses, lambda node: node["fn"].probs)
    return probs.unflatten(-1, grid)


@torch.no_grad()
def sample_posterior(
    model: SaccadeModel,
    images: Sequence[Tensor] | Sequence[Photo],
    samples: int = 64,
    names: Sequence[str] | None = None,
    labels: Tensor | None = None,
    seed: int = 0,
) -> GlimpsePosterior:
    """Posterior and prior draws of the glimpses of images [C, H, W] (sizes may differ), or of
    photos on disk (``data.Photo``, read only where the glimpses and the proxy need them). An
    image's draws depend on the model, the image and ``seed`` alone.

    ``labels`` (optional) are the true labels, class indices [N] or multi-hot [N, K]; ``names``
    label the images (default ``"0"``, ``"1"``, ...).
    """
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    if len(images) == 0:
        raise ValueError("no images given")
    names = [str(i) for i in range(len(images))] if names is None else list(names)
    if len(names) != len(images) or (labels is not None and len(labels) != len(images)):
        raise ValueError("need one name and one label per image")
    # Images of other aspect ratios have grids of cells of other shapes, whose maps of where_t
    # do not stack: they are left out.
    grids = {cell_grid(model.config, *image.shape[-2:]) for image in images}
    maps = isinstance(model.where, Cells) and len(grids) == 1
    device, proxy = next(model.parameters()).device, model.config.proxy_side
    was_training = model.training
    model.eval()
    posterior, prior = [], []
    try:
        for image in images:
            batch, proxies = prepare(as_batch([image], proxy), device, proxy)
            proxies = checked_proxies(model, batch, proxies)
            # As infer warns, but for the glimpses: these draws keep no crop features.
            warn_unfamiliar(model, batch, proxies)
            posterior.append(draw(model, batch, proxies, samples, seed=seed))
            prior.append(draw(model, batch, proxies, samples, posterior=False, seed=seed))
    finally:
        model.train(was_training)
    if isinstance(model.where, Cells) and not maps:
        warnings.warn(
            "images of different aspect ratios: their maps of where_t over the cells "
            "(where_q, where_p) differ in shape and are left out; sample each shape on its own",
            stacklevel=2,
        )
        for part in (*posterior, *prior):
            part.where_q = part.where_p = None
    return GlimpsePosterior(
        config=model.config,
        names=names,
        sizes=[tuple(image.shape[-2:]) for image in images],
        posterior=_joined(posterior, partial(torch.cat, dim=1)),
        prior=_joined(prior, partial(torch.cat, dim=1)),
        observed=labels,
    )


def _joined(parts: list[Draws], join: Callable[[list[Tensor]], Tensor]) -> Draws:
    """One ``Draws`` of the parts', each field ``join`` of theirs (None where they have none)."""
    return Draws(
        *(
            None if getattr(parts[0], f) is None else join([getattr(p, f) for p in parts])
            for f in Draws.__dataclass_fields__
        )
    )


# -- ArviZ ------------------------------------------------------------------------------------


def from_dict(
    groups: dict[str, dict], dims: dict[str, list[str]], coords: dict[str, list]
) -> object:
    """``{group: {variable: array [chain, draw, ...]}}`` as ArviZ data: InferenceData with
    ArviZ 0.x, DataTree with ArviZ 1.x (whose converters live in ``arviz_base``)."""
    try:
        from arviz_base import from_dict as datatree_from_dict
    except ImportError:
        return _arviz().from_dict(**groups, dims=dims, coords=coords)
    return datatree_from_dict(groups, dims=dims, coords=coords)


def read_posterior(path: str | Path) -> object:
    """Open a file written by ``saccade posterior``: InferenceData (ArviZ 0.x) or DataTree."""
    try:
        import arviz_base  # noqa: F401  (ArviZ 1.x: plain xarray DataTree)
    except ImportError:
        return _arviz().from_netcdf(str(path))
    import xarray

    return xarray.open_datatree(str(path))


def _arviz() -> object:
    with warnings.catch_warnings():
        # ArviZ 0.23 announces its 1.0 refactor on import; that is not news to our users.
        warnings.simplefilter("ignore", FutureWarning)
        import arviz
    return arviz
