"""Priors p(where_t | c, h_{t-1}) over the cells a glimpse may choose (``where="cells"``).

A where-prior is a ``torch.nn.Module`` whose ``forward(context)`` returns logits [B, G * G] over
the proxy's G x G cells, row by row, from a :class:`WhereContext`: the step, the learned
attention's own logits, the proxy's contrast around each cell, the cells' centres and h_{t-1}.
The cells already looked at are masked afterwards, for the prior as for the guide, so its logits
need only be finite. The model draws where_t from it, and the guide is the prior's belief
updated by the learned attention, q(where_t) ∝ p(where_t) exp(attention): a belief steers the
glimpses from the first step, and training teaches the attention where the images say
otherwise. The bound holds KL(q(where_t) || p(where_t)), exact over the cells (where.cells_kl).

The default, ``attention``, is the attention itself, prior and guide: a KL of zero. To add your own,
subclass :class:`WherePrior` and register it with :func:`register_where_prior`, so that
``CellsWhere(prior=name, prior_args={...})`` builds it and a checkpoint names it (register it
again before loading that checkpoint in a new process). Arguments must be JSON values; on the
command line, ``saccade train --set where.prior=position --set where.prior_args.y=-1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .priors import build_registered


class WhereContext(NamedTuple):
    """What a where-prior may read at step ``t``: the learned attention's logits [B, G * G], the
    proxy's mean contrast around each cell [B, G * G] (its ink; contrast.py), the cells' centres
    (x, y) [G * G, 2] in normalised coordinates (-1 top/left, 1 bottom/right), and h_{t-1}
    [B, H]."""

    t: int
    attention: Tensor
    contrast: Tensor
    centres: Tensor
    h: Tensor


class WherePrior(nn.Module):
    """Interface: ``forward(context: WhereContext) -> logits [B, G * G]``."""

    # Whether the guide is this belief updated by the attention (q ∝ p exp(attention)), rather
    # than the attention alone: not for a prior that is the attention.
    informs_guide = True

    def forward(self, context: WhereContext) -> Tensor:
        raise NotImplementedError


class AttentionPrior(WherePrior):
    """The learned attention, both prior and guide: KL(q(where_t) || p(where_t)) = 0."""

    informs_guide = False

    def forward(self, context: WhereContext) -> Tensor:
        return context.attention


class UniformPrior(WherePrior):
    """Every cell not yet looked at alike."""

    def forward(self, context: WhereContext) -> Tensor:
        return torch.zeros_like(context.attention)


def gaussian_logits(squared: Tensor, spread: float, context: WhereContext) -> Tensor:
    """-d^2 / (2 spread^2) [B, G * G] from each cell's squared distance d^2 [G * G], the same
    for every image."""
    logits = -squared / (2 * spread**2)
    return logits.to(context.attention.dtype).expand_as(context.attention)


class PositionPrior(WherePrior):
    """Cells near a place: log p = -d^2 / (2 spread^2) for the distance d (normalised
    coordinates) from (``x``, ``y``) along the axes given; None leaves an axis free. ``y=-1``
    says objects sit near the top edge."""

    def __init__(self, x: float | None = None, y: float | None = None, spread: float = 0.5) -> None:
        super().__init__()
        if spread <= 0:
            raise ValueError(f"spread must be positive, got {spread}")
        self.place = (x, y)
        self.spread = spread

    def forward(self, context: WhereContext) -> Tensor:
        squared = torch.zeros_like(context.centres[:, 0])
        for axis, value in enumerate(self.place):
            if value is not None:
                squared = squared + (context.centres[:, axis] - value) ** 2
        return gaussian_logits(squared, self.spread, context)


class ScanPrior(WherePrior):
    """A scan across the image, one band per glimpse: glimpse t of ``glimpses`` prefers the
    cells near the t-th of evenly spaced lines along ``axis`` ("x": left to right, "y": top to
    bottom), log p = -d^2 / (2 spread^2)."""

    def __init__(self, glimpses: int, axis: str = "x", spread: float = 0.3) -> None:
        super().__init__()
        if axis not in ("x", "y") or glimpses < 1 or spread <= 0:
            raise ValueError(
                f"need axis 'x' or 'y', glimpses >= 1 and spread > 0, got {axis!r}, "
                f"{glimpses}, {spread}"
            )
        self.glimpses, self.axis, self.spread = glimpses, "xy".index(axis), spread

    def forward(self, context: WhereContext) -> Tensor:
        line = -1 + 2 * (min(context.t, self.glimpses - 1) + 0.5) / self.glimpses
        return gaussian_logits((context.centres[:, self.axis] - line) ** 2, self.spread, context)


class ContrastPrior(WherePrior):
    """Where the proxy differs from its local background: log p = ``weight`` * log(contrast +
    ``floor``), either sign of contrast alike (contrast.py)."""

    def __init__(self, weight: float = 1.0, floor: float = 1e-4) -> None:
        super().__init__()
        if floor <= 0:
            raise ValueError(f"floor must be positive, got {floor}")
        self.weight, self.floor = weight, floor

    def forward(self, context: WhereContext) -> Tensor:
        return self.weight * (context.contrast + self.floor).log()


WHERE_PRIORS: dict[str, Callable[..., WherePrior]] = {
    "attention": AttentionPrior,
    "uniform": UniformPrior,
    "position": PositionPrior,
    "scan": ScanPrior,
    "contrast": ContrastPrior,
}


def register_where_prior(name: str, factory: Callable[..., WherePrior]) -> None:
    """Make ``factory(**args)`` available as ``CellsWhere(prior=name)``."""
    WHERE_PRIORS[name] = factory


def make_where_prior(name: str, args: dict | None = None) -> WherePrior:
    """Build the where-prior registered as ``name``."""
    return build_registered(
        WHERE_PRIORS, "where-prior", "register_where_prior", name, **(args or {})
    )
