"""Priors p(z_t | h_{t-1}) over glimpse coordinates z = (scale, x, y).

A prior is a ``torch.nn.Module`` whose ``forward(h, t)`` returns a Pyro distribution with batch
shape [B] and event shape [3] (use ``.to_event(1)``). ``h`` is the recurrent state after the
previous glimpse (zeros before the first one) and ``t`` the step. To add your own, subclass
:class:`GlimpsePrior`; pass an instance to ``SaccadeModel(config, prior=...)``, or register it with
:func:`register_prior` so that ``SaccadeConfig(prior=name, prior_args={...})`` builds it and a
checkpoint names it (register it again before loading that checkpoint in a new process). Prior
arguments must be JSON values; on the command line, ``saccade train --prior fixed --prior-arg
loc=0,0,0 --prior-arg scale=0.5,1,1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from .networks import GaussianHead

LATENT = 3


class GlimpsePrior(nn.Module):
    """Interface: ``forward(h [B, H], t) -> Distribution`` with event shape [3]."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, h: Tensor, t: int) -> dist.Distribution:
        raise NotImplementedError


class LearnedPrior(GlimpsePrior):
    """The VRNN prior: N(mu(h_{t-1}), sigma^2(h_{t-1})), learned jointly with the model."""

    def __init__(self, hidden: int) -> None:
        super().__init__(hidden)
        self.net = GaussianHead(hidden, hidden, LATENT)

    def forward(self, h: Tensor, t: int) -> dist.Distribution:
        loc, scale = self.net(h)
        return dist.Normal(loc, scale).to_event(1)


class FixedGaussianPrior(GlimpsePrior):
    """A fixed N(loc, scale^2) in z space, the same at every step."""

    def __init__(
        self,
        hidden: int,
        loc: Sequence[float] | float = (0.0, 0.0, 0.0),
        scale: Sequence[float] | float = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__(hidden)
        loc, scale = _vector(loc, "loc"), _vector(scale, "scale")
        if not (scale > 0).all():
            raise ValueError(f"scale must be positive, got {scale.tolist()}")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    def forward(self, h: Tensor, t: int) -> dist.Distribution:
        loc = self.loc.to(h.dtype).expand(h.shape[0], LATENT)
        scale = self.scale.to(h.dtype).expand(h.shape[0], LATENT)
        return dist.Normal(loc, scale).to_event(1)


def _vector(values: Sequence[float] | float, name: str) -> Tensor:
    """One value per coordinate (scale, x, y); a single number applies to all three."""
    vector = torch.as_tensor(values, dtype=torch.float32).reshape(-1).clone()
    if vector.numel() == 1:
        vector = vector.expand(LATENT).clone()
    if vector.numel() != LATENT:
        raise ValueError(f"{name} needs 1 or {LATENT} values (scale, x, y), got {vector.tolist()}")
    return vector


class StandardNormalPrior(FixedGaussianPrior):
    """N(0, I): the non-informative prior of a plain VAE."""

    def __init__(self, hidden: int) -> None:
        super().__init__(hidden)


class CentreBiasedPrior(FixedGaussianPrior):
    """Small crops near the image centre: a strong belief that pulls glimpses inwards.

    Photographers centre their subject; on cluttered canvases, where digits can be anywhere,
    this prior costs accuracy unless the data outweigh it, which makes it a useful contrast.
    """

    def __init__(self, hidden: int, spread: float = 0.3) -> None:
        super().__init__(hidden, loc=(-1.0, 0.0, 0.0), scale=(1.0, spread, spread))


PRIORS: dict[str, Callable[..., GlimpsePrior]] = {
    "vrnn": LearnedPrior,
    "normal": StandardNormalPrior,
    "fixed": FixedGaussianPrior,
    "centre": CentreBiasedPrior,
}


def register_prior(name: str, factory: Callable[..., GlimpsePrior]) -> None:
    """Make ``factory(hidden, **args)`` available as ``SaccadeConfig(prior=name)``."""
    PRIORS[name] = factory


def make_prior(name: str, hidden: int, args: dict | None = None) -> GlimpsePrior:
    """Build the prior registered as ``name``."""
    return build_registered(PRIORS, "prior", "register_prior", name, hidden, **(args or {}))


def build_registered(
    registry: dict[str, Callable], kind: str, register: str, name: str, *args, **kwargs
) -> nn.Module:
    """``registry[name](*args, **kwargs)``; ValueError naming the ``kind`` of module for a name
    not registered (with the ``register`` function) or an argument it does not take."""
    if name not in registry:
        raise ValueError(
            f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))} "
            f"(a custom {kind} must be registered with {register} before use or loading)"
        )
    try:
        return registry[name](*args, **kwargs)
    except TypeError as error:  # an argument the module does not take
        raise ValueError(f"{kind} {name!r}: {error}") from error
