"""Variational saccading as a Pyro program (Ramapuram et al., BMVC 2019, Eq. 6 and 7).

For each image x with proxy c and label y, T glimpses z_t = (scale, x, y) are drawn. The model is

    h_{-1} = 0
    for t in 0..T-1:
        w_t ~ p(w_t | c, h_{t-1})                 where="cells" only: which proxy cell to look at
                                                  (pluggable, see where_priors.py)
        z_t ~ p(z_t | h_{t-1})                    learned VRNN prior (pluggable, see priors.py)
        c   ~ p(c | z_t, h_{t-1})                 proxy decoder, observed at every step
        o_t = f(x, z_t, w_t)                      spatial-transformer crop of the full image
        h_t = LSTM([g(o_t), e(z_t), e(c)], h_{t-1})  what was seen steers the next glimpse
        y   ~ p(y | o_0..o_t)                     per glimpse (Eq. 6), or once at the end
and the guide is q(w_t, z_t | c, h_{t-1}) (where.py). Trace_ELBO on this pair estimates, per
image, the bound of Eq. 6 with two weights and an annealing factor:

    sum_t  log p(y | o_0..o_t)  +  proxy_weight * log p(c | z_t, h_{t-1})
           - annealing * kl_weight * KL(q(z_t | c, h_{t-1}, w_t) || p(z_t | h_{t-1}))
           - KL(q(w_t | c, h_{t-1}) || p(w_t | c, h_{t-1}))

with o_t a Dirac whose term is constant. The KL of w_t is exact, a sum over the cells that
where.Cells adds as a factor in place of Trace_ELBO's log p(w_t) - log q(w_t) at the guide's
draw. With the default where-prior, the attention itself, it is zero (Trace_ELBO still gives
the attention a score-function gradient); with a belief about where to look of another kind,
q(w_t) ∝ p(w_t) exp(attention) and the KL measures how far the attention moves the belief
(where_priors.py). ``likelihood="aggregate"`` keeps only the
last label term. ``proxy_weight`` (0.001) and ``kl_weight`` (0.05) rescale terms that Eq. 6
weighs equally: the proxy term sums J x J pixels and would drown the label's, as DMM's
``annealing`` does for its KL. p(y | o_0..o_t) reads the class evidence from h_t
(``evidence="state"``), sums per-crop evidence (``"crops"``), or multiplies, per crop, the
likelihood that it shows one of the digits the label holds (``"mixture"``), or reads what each
crop shows, a digit or nothing, and where (``"shown"``; networks.DigitPairHead).

Deviations from the paper. The scale is squashed smoothly into its range so that it is learned.
The crop's features enter the recurrence, so step t+1 depends on what step t saw. With
``where="cells"`` (small objects on large images) a discrete w_t chooses among the cells of the
proxy's feature map (where.Cells). A proxy larger than 32 x 32 is decoded at 32 x 32. The image
and its proxy are read as their contrast against the local background (contrast.py), the same
on a black canvas, so that marks darker or brighter than their surroundings read alike.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import Tensor, nn

from .config import DECODED_PROXY, CellsWhere, SaccadeConfig
from .contrast import against, local_background, window_of
from .data.megapixel import TARGET_SHARE
from .glimpse import image_sides, repeat_images, repeat_rows
from .networks import CropEncoder, DigitPairHead, LinearHead, ProxyDecoder, ProxyEncoder
from .priors import LATENT, GlimpsePrior, make_prior
from .where import Aim, make_where


class Step(NamedTuple):
    """What one glimpse leaves behind: the glimpse z_t, the new recurrent state (h_t, and the
    LSTM's (h_t, c_t)), the crop's features, where a cells glimpse aimed [B, 2], and the height
    of its box's centre [B] (normalised, -1 the top edge)."""

    z: Tensor
    h: Tensor
    state: tuple[Tensor, Tensor]
    features: Tensor
    centre: Tensor | None = None
    y: Tensor | None = None


class SaccadeModel(nn.Module):
    """Model and guide of variational saccading, as two methods of one module."""

    def __init__(self, config: SaccadeConfig, prior: GlimpsePrior | None = None) -> None:
        super().__init__()
        self.config = cfg = config
        self.crop_encoder = CropEncoder(cfg.channels, cfg.crop_width, cfg.crop_features)
        crop_features = self.crop_encoder.outputs
        # A large proxy is there to find small objects: its first layer halves it.
        strided = isinstance(cfg.where, CellsWhere)
        self.proxy_encoder = ProxyEncoder(
            cfg.channels, cfg.proxy_width, cfg.proxy_features, strided=strided
        )
        self.z_embed = nn.Sequential(nn.Linear(LATENT, cfg.z_features), nn.ReLU(inplace=True))
        self.rnn = nn.LSTMCell(crop_features + cfg.z_features + cfg.proxy_features, cfg.hidden)
        evidence_inputs = cfg.hidden if cfg.evidence == "state" else crop_features
        if cfg.head == "digit_pairs":
            share = TARGET_SHARE if cfg.task == "majority" else None
            self.classifier = DigitPairHead(evidence_inputs, cfg.task, cfg.evidence, share)
        else:
            self.classifier = LinearHead(evidence_inputs, cfg.num_classes)
        self.proxy_decoder = ProxyDecoder(
            LATENT, cfg.hidden, cfg.channels, min(cfg.proxy, DECODED_PROXY), cfg.proxy_width
        )
        self.where = make_where(cfg)
        self.prior = (
            prior if prior is not None else make_prior(cfg.prior, cfg.hidden, cfg.prior_args)
        )

    # -- the deterministic pieces shared by model and guide ------------------------------------

    def initial(self, batch: int, like: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """h_{-1} = 0 and the LSTM's zero state, on ``like``'s device and dtype."""
        h = like.new_zeros(batch, self.config.hidden)
        return h, (h, h.clone())

    def step(
        self,
        images: Tensor,
        z: Tensor,
        aim: Aim | None,
        proxy_features: Tensor,
        state: tuple[Tensor, Tensor],
        background: Tensor,
    ) -> Step:
        """Crop the image at z_t (near the aim of cell where_t) against its ``background``,
        encode the crop and update the recurrent state to h_t."""
        centre = None if aim is None else aim.centre
        crops, placed, y = self.where.glimpse(images, z, centre, background)
        features = self.where.weighted(self.crop_encoder(crops), aim)
        h, c = self.rnn(torch.cat([features, self.z_embed(placed), proxy_features], -1), state)
        return Step(z, h, (h, c), features, centre, y)

    @staticmethod
    def replayed(steps: list[Step] | None, t: int, z: Tensor) -> Step | None:
        """The guide's step t when the model replays the guide's very z_t (Trace_ELBO runs the
        guide, then the model with its values): its crop, features and h_t are the model's too,
        and are not computed twice. None otherwise."""
        if steps is not None and t < len(steps) and steps[t].z is z:
            return steps[t]
        return None

    def evidence(self, step: Step, total: Tensor | None) -> Tensor:
        """Class evidence after a glimpse: that of the crops so far (``accumulate``), or read
        from h_t."""
        if self.config.evidence == "state":
            return self.classifier.read(step.h)
        evidence = self.classifier.read(step.features, step.y)
        return evidence if total is None else self.classifier.accumulate(total, evidence)

    def read(self, steps: list[Step]) -> Tensor:
        """Class logits [B, K] after the glimpses ``steps``, those of the model's ``probs``
        site, which depend on the glimpses alone, not on the prior or the proxy decoder."""
        total = None
        for step in steps:
            total = self.evidence(step, total)
        return self.classifier.combine(total)

    def proxy_distribution(self, z: Tensor, h: Tensor) -> dist.Distribution:
        """p(c | z_t, h_{t-1}) over the whole J x J proxy: continuous targets in [0, 1], the
        cross-entropy of the authors' code as a density."""
        logits = self.proxy_decoder(z, h)
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(3)

    def label_distribution(self, logits: Tensor) -> dist.Distribution:
        if self.config.multilabel:
            return dist.Bernoulli(logits=logits).to_event(1)
        return dist.Categorical(logits=logits)

    def class_probs(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.config.multilabel else logits.softmax(-1)

    def register(self) -> None:
        """``pyro.module`` for this model. Parameters held fixed on purpose (an attention that
        does not learn) are left out of the param store, as they should be, without Pyro's
        warning. Under ``torch.no_grad()`` (prediction) no step can follow: nothing is
        registered."""
        if not torch.is_grad_enabled():
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not registered in the param store")
            pyro.module("saccade", self)

    def contrast(self, images: Tensor, proxies: Tensor) -> tuple[Tensor, Tensor]:
        """The local background [B, C, J, J] of the images' proxies and the proxies' contrast
        against it, what the model reads of them (contrast.py)."""
        shortest = min(float(torch.as_tensor(side).min()) for side in image_sides(images))
        background = local_background(proxies, window_of(self.config, shortest))
        return background, against(proxies, background)

    # -- the probabilistic program ------------------------------------------------------------

    def model(
        self,
        images: Tensor,
        proxies: Tensor,
        labels: Tensor | None = None,
        annealing: float = 1.0,
        steps: list[Step] | None = None,
    ) -> Tensor:
        """p(y, c, w, z | x) with the learned prior; ``annealing`` scales the KL term. ``steps``:
        the glimpses the guide took for the same images (see ``replayed``)."""
        self.register()
        cfg = self.config
        batch = images.shape[0]
        background, proxies = self.contrast(images, proxies)
        proxy_features, maps = self.proxy_encoder.encode(proxies)
        view = self.where.start(images, proxies, maps)
        decoded = F.adaptive_avg_pool2d(proxies, min(cfg.proxy, DECODED_PROXY))
        h, state = self.initial(batch, proxy_features)
        total = None
        with pyro.plate("data", batch, device=images.device):
            for t in pyro.markov(range(cfg.glimpses)):
                # w_t ~ p(w_t | c, h_{t-1}): which cell of the proxy to look at (cells only)
                aim, view = self.where.sample(t, view, h, "prior")
                # z_t ~ p(z_t | h_{t-1}): the prior of the KL term
                with poutine.scale(scale=annealing * cfg.kl_weight):
                    z = pyro.sample(f"z_{t}", self.prior(h, t))
                # log p(c | z_t, h_{t-1}): the proxy decoder
                with poutine.scale(scale=cfg.proxy_weight):
                    pyro.sample(f"c_{t}", self.proxy_distribution(z, h), obs=decoded)
                # o_t = f(x, z_t, w_t) and h_t
                step = self.replayed(steps, t, z) or self.step(
                    images, z, aim, proxy_features, state, background
                )
                h, state = step.h, step.state
                total = self.evidence(step, total)
                logits = self.classifier.combine(total)
                # log p(y | o_0..o_t)
                if cfg.likelihood == "per_glimpse":
                    pyro.sample(f"y_{t}", self.label_distribution(logits), obs=labels)
            probs = pyro.deterministic("probs", self.class_probs(logits), event_dim=1)
            if cfg.likelihood == "aggregate":
                pyro.sample("y", self.label_distribution(logits), obs=labels)
        return probs

    def guide(
        self,
        images: Tensor,
        proxies: Tensor,
        labels: Tensor | None = None,
        annealing: float = 1.0,
        steps: list[Step] | None = None,
        mean: bool = False,
        random: bool = False,
        draws: int = 1,
    ) -> None:
        """q(w_t, z_t | c, h_{t-1}); with ``mean=True`` every glimpse is the posterior mean
        (the attention's mode). With ``random=True`` each glimpse goes to a place drawn
        uniformly at random (a cell not yet looked at, or a centre keeping the crop inside the
        image), its size as q has it: the baseline that shows what the learned policy adds.
        Each glimpse's ``Step`` is appended to ``steps``. ``draws`` > 1 glimpses each image that
        many times in one batch, draw s of image b at row s * B + b."""
        self.register()
        cfg = self.config
        background, proxies = self.contrast(images, proxies)
        proxy_features, maps = self.proxy_encoder.encode(proxies)
        view = self.where.start(images, proxies, maps)
        if draws > 1:  # the proxy is encoded once, whatever the number of draws
            images = repeat_images(images, draws)
            background = repeat_rows(background, draws)
            proxy_features = repeat_rows(proxy_features, draws)
            view = self.where.repeat(view, draws)
        batch = images.shape[0]
        h, state = self.initial(batch, proxy_features)
        mode = "random" if random else "mean" if mean else "posterior"
        with pyro.plate("data", batch, device=images.device):
            for t in pyro.markov(range(cfg.glimpses)):
                # w_t ~ q(w_t | c, h_{t-1}), the attention itself (cells only)
                aim, view = self.where.sample(t, view, h, mode)
                # z_t ~ q(z_t | c, h_{t-1}, w_t)
                loc, scale = self.where.posterior(t, proxy_features, view, h, aim, random)
                q = dist.Delta(loc) if mean else dist.Normal(loc, scale)
                with poutine.scale(scale=annealing * cfg.kl_weight):
                    z = pyro.sample(f"z_{t}", q.to_event(1))
                step = self.step(images, z, aim, proxy_features, state, background)
                h, state = step.h, step.state
                if steps is not None:
                    steps.append(step)
