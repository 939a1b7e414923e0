"""Variational saccading as a Pyro program (Ramapuram et al., BMVC 2019, Eq. 6 and 7).

For each image x with proxy c and label y, T glimpses z_t = (scale, x, y) are drawn. The model is

    h_{-1} = 0
    for t in 0..T-1:
        w_t ~ p(w_t | c, h_{t-1})                 where="cells" only: which proxy cell to look at
        z_t ~ p(z_t | h_{t-1})                    learned VRNN prior (pluggable, see priors.py)
        c   ~ p(c | z_t, h_{t-1})                 proxy decoder, observed at every step
        o_t = f(x, z_t, w_t)                      spatial-transformer crop of the full image
        h_t = RNN([g(o_t), e(z_t), e(c)], h_{t-1})  what was seen steers the next glimpse
        y   ~ p(y | h_t)                          per-glimpse likelihood (Eq. 6), or once at the end
and the guide is q(w_t, z_t | c, h_{t-1}). Trace_ELBO on this pair is the bound of Eq. 6:
sum_t E[log p(y | o_t, z_t, c, x) + log p(c | z_t)] - KL(q(z_t | c) || p(z_t)), with o_t a Dirac
whose term is constant.

Deviations from the paper. The scale is squashed smoothly into its range so that it is learned.
The crop's features enter the recurrence, so step t+1 depends on what step t saw. With
``where="cells"`` (small objects on large images) a discrete w_t chooses among the cells of the
proxy's feature map and z_t places a box of ``box_min``..``box_max`` pixels near the ink of that
cell: a continuous z alone gets no gradient towards an object its crop does not touch. The
attention over cells is both the prior and the guide of w_t (both see c and h_{t-1}), so its KL
term is zero; Trace_ELBO gives it a score-function gradient, and ``attention_weights`` adds the
pathwise gradient of attention sampling (Katharopoulos & Fleuret, 2019). A proxy larger than
32 x 32 is decoded at 32 x 32.
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

from .config import DECODED_PROXY, SaccadeConfig
from .glimpse import (
    aim,
    cell_box,
    cell_centres,
    extract_glimpse,
    glimpse_boxes,
    image_sides,
    pixel_boxes,
    repeat_images,
    sample_box,
)
from .networks import (
    CellAttention,
    CropEncoder,
    DigitPairHead,
    GaussianHead,
    LinearHead,
    ProxyDecoder,
    ProxyEncoder,
    Recurrence,
    SaliencyHead,
)
from .priors import LATENT, GlimpsePrior, make_prior


class Step(NamedTuple):
    """What one glimpse leaves behind: the glimpse z_t, the new recurrent state and the crop's
    features."""

    z: Tensor
    h: Tensor
    state: tuple[Tensor, Tensor]
    features: Tensor
    centre: Tensor | None = None  # where a cells glimpse aimed, [B, 2]


class Look(NamedTuple):
    """The proxy as the attention over cells sees it: its feature map [B, C, G, G], the terms of
    the attention that depend on it alone [B, G * G], where a glimpse in each cell aims
    [B, G * G, 2], and the cells already looked at [B, G * G]."""

    maps: Tensor
    base: Tensor
    aims: Tensor
    visited: Tensor


class SaccadeModel(nn.Module):
    """Model and guide of variational saccading, as two methods of one module."""

    def __init__(self, config: SaccadeConfig, prior: GlimpsePrior | None = None) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.crop_encoder = CropEncoder(
            cfg.channels, cfg.crop_width, cfg.crop_features, mean=cfg.crop_pool == "max_mean"
        )
        crop_features = self.crop_encoder.outputs
        self.proxy_encoder = ProxyEncoder(
            cfg.channels, cfg.proxy_width, cfg.proxy_features, strided=cfg.where == "cells"
        )
        self.z_embed = nn.Sequential(nn.Linear(LATENT, cfg.z_features), nn.ReLU(inplace=True))
        self.rnn = Recurrence(
            crop_features + cfg.z_features + cfg.proxy_features, cfg.hidden, cfg.rnn_layers
        )
        evidence_inputs = cfg.hidden if cfg.evidence == "state" else crop_features
        self.classifier = (
            DigitPairHead(evidence_inputs, cfg.task, mixture=cfg.evidence == "mixture")
            if cfg.head == "digit_pairs"
            else LinearHead(evidence_inputs, cfg.num_classes)
        )
        self.proxy_decoder = ProxyDecoder(
            LATENT, cfg.hidden, cfg.channels, min(cfg.proxy, DECODED_PROXY), cfg.proxy_width
        )
        self.proxy_log_scale = nn.Parameter(torch.zeros(cfg.channels, 1, 1))
        inputs = cfg.proxy_features + cfg.hidden
        posterior_std = (cfg.posterior_std, cfg.posterior_std_max)
        if cfg.where == "cells":  # z_t refines a chosen cell: read that cell's features too
            self.posterior_net = GaussianHead(
                inputs + 2 * cfg.proxy_width, cfg.hidden, LATENT, *posterior_std
            )
        elif cfg.posterior == "saliency":
            self.posterior_net = SaliencyHead(
                2 * cfg.proxy_width, cfg.proxy // 4, inputs, cfg.hidden, LATENT, *posterior_std
            )
        else:
            self.posterior_net = GaussianHead(inputs, cfg.hidden, LATENT, *posterior_std)
        self.prior = (
            prior if prior is not None else make_prior(cfg.prior, cfg.hidden, cfg.prior_args)
        )
        if cfg.where == "cells":
            self.attention_net = CellAttention(2 * cfg.proxy_width, cfg.hidden)
            self.attention_net.requires_grad_(cfg.learn_where)
            self.register_buffer("centres", cell_centres(cfg.cells, cfg.cells), persistent=False)

    # -- the deterministic pieces shared by model and guide ------------------------------------

    def step(
        self,
        images: Tensor,
        z: Tensor,
        proxy_features: Tensor,
        state: tuple[Tensor, Tensor],
        centre: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Step:
        """Crop the image at z_t (near ``centre`` [B, 2], the aim of cell where_t), encode the
        crop and update the recurrent state to h_t. ``weight`` [B] multiplies the crop's
        features."""
        cfg = self.config
        if centre is None:
            crop, placed = self.crop(images, z), z
        else:
            _, width = sides = image_sides(images)
            box = self.cell_box(z, centre, *sides)
            crop = sample_box(images, box, cfg.crop, cfg.antialias)
            # The state learns where it looked and how wide: box side over box_max, centre.
            sx, _, cx, cy = box
            placed = torch.stack([sx * (width / cfg.box_max), cx, cy], -1)
        features = self.crop_encoder(crop)
        if weight is not None:
            features = features * weight.unsqueeze(-1)
        h, state = self.rnn(torch.cat([features, self.z_embed(placed), proxy_features], -1), state)
        return Step(z, h, state, features, centre)

    def crop(self, images: Tensor, z: Tensor, centre: Tensor | None = None) -> Tensor:
        """The L x L crops [B, C, L, L] of a glimpse at z [B, 3] (aimed at ``centre`` [B, 2] in
        a model with ``where="cells"``)."""
        cfg = self.config
        if centre is None:
            return extract_glimpse(images, z, cfg.crop, cfg.scale_min, cfg.scale_max, cfg.antialias)
        box = self.cell_box(z, centre, *image_sides(images))
        return sample_box(images, box, cfg.crop, cfg.antialias)

    def cell_box(
        self, z: Tensor, centre: Tensor, height: int | Tensor, width: int | Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The normalised box (sx, sy, cx, cy) of glimpse z aimed at ``centre`` on images of
        ``height`` x ``width`` pixels (ints, or [B] for images of different sizes)."""
        cfg = self.config
        grid = (cfg.cells, cfg.cells)
        return cell_box(z, centre, grid, height, width, cfg.box_min, cfg.box_max)

    def look(self, proxies: Tensor, maps: Tensor) -> Look:
        """The attention's view of the proxy before the first glimpse.

        Each cell's ink is the proxy's mean over a window of twice the cell's side around it,
        so that an object across a cell border counts whole in the cell nearest its centre, and
        a glimpse in the cell aims at the centroid of that window's ink (the cell's centre where
        there is none): z_t then refines an aim that is already on the object.
        """
        ink = proxies.mean(1, keepdim=True)
        side = ink.shape[-1]
        coords = (torch.arange(side, device=ink.device, dtype=ink.dtype) + 0.5) / side * 2 - 1

        def window(values: Tensor) -> Tensor:  # [B, 1, J, J] -> [B, G * G]
            return F.avg_pool2d(values, 8, stride=4, padding=2).flatten(1)

        mass = window(ink)
        centroid = torch.stack([window(ink * coords), window(ink * coords[:, None])], -1)
        held = (mass > 1e-6).unsqueeze(-1)
        aims = torch.where(held, centroid / mass.clamp(min=1e-6).unsqueeze(-1), self.centres)
        base = self.attention_net.base(maps, mass, self.config.ink_floor)
        return Look(maps, base, aims, torch.zeros_like(base, dtype=torch.bool))

    @staticmethod
    def aim(look: Look, where: Tensor) -> Tensor:
        """The centres [B, 2] that the glimpses in cells ``where`` [B] aim at."""
        return look.aims.gather(1, where[:, None, None].expand(-1, 1, 2))[:, 0]

    def attention(self, look: Look, h: Tensor, uniform: bool = False) -> dist.Categorical:
        """p(where_t | c, h_{t-1}) over the cells not yet looked at, which is also q; with
        ``uniform``, the same cells equally likely."""
        logits = self.attention_net(look.base, look.maps, h)
        if uniform:
            logits = torch.zeros_like(logits)
        return dist.Categorical(logits=logits.masked_fill(look.visited, float("-inf")))

    def looked_at(self, look: Look, where: Tensor) -> Look:
        """``look`` with the chosen cells and their 8 neighbours marked as visited: a 28-pixel
        digit spans at most two cells, and a glimpse there has read it."""
        g = self.config.cells
        lines = torch.arange(g, device=where.device)
        rows = (lines - (where // g).unsqueeze(-1)).abs() <= 1  # [B, G]
        cols = (lines - (where % g).unsqueeze(-1)).abs() <= 1
        near = (rows.unsqueeze(-1) & cols.unsqueeze(-2)).flatten(1)
        return look._replace(visited=look.visited | near)

    def attention_weight(self, attention: dist.Categorical, where: Tensor) -> Tensor | None:
        """q(where_t) / q(where_t) held constant: 1, with the pathwise gradient of attention
        sampling for the attention (None without ``attention_weights``)."""
        if not self.config.attention_weights:
            return None
        p = attention.probs.gather(-1, where.unsqueeze(-1))[..., 0]
        return p / p.detach()

    def evidence(self, step: Step, total: Tensor | None) -> Tensor:
        """Class evidence after a glimpse: summed over crops so far, or read from h_t."""
        if self.config.evidence == "state":
            return self.classifier.read(step.h)
        evidence = self.classifier.read(step.features)
        return evidence if total is None else total + evidence

    def proxy_distribution(self, z: Tensor, h: Tensor) -> dist.Distribution:
        """p(c | z_t, h_{t-1}) over the whole J x J proxy."""
        out = self.proxy_decoder(z, h)
        if self.config.proxy_likelihood == "bernoulli":
            # Continuous targets in [0, 1]: the cross-entropy of the authors' code, as a density.
            return dist.Bernoulli(logits=out, validate_args=False).to_event(3)
        return dist.Normal(out, self.proxy_log_scale.exp().expand_as(out)).to_event(3)

    def label_distribution(self, logits: Tensor) -> dist.Distribution:
        if self.config.multilabel:
            return dist.Bernoulli(logits=logits).to_event(1)
        return dist.Categorical(logits=logits)

    def class_probs(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.config.multilabel else logits.softmax(-1)

    def posterior(
        self, features: Tensor, maps: Tensor, h: Tensor, where: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """loc and scale of q(z_t | c, h_{t-1}) (and where_t) from the proxy's features and map."""
        cfg = self.config
        if where is not None:  # the features of cell where_t; draw s of image b at row s * B + b
            cells = maps.flatten(2)
            image = torch.arange(where.shape[0], device=where.device) % cells.shape[0]
            return self.posterior_net(torch.cat([features, h, cells[image, :, where]], -1))
        if cfg.posterior == "mlp":
            return self.posterior_net(torch.cat([features, h], -1))
        loc, scale, centre = self.posterior_net(maps, features, h)
        return aim(loc[..., 0], centre, cfg.scale_min, cfg.scale_max), scale

    def register(self) -> None:
        """``pyro.module`` for this model. Parameters held fixed on purpose (``learn_where``
        off) are left out of the param store, as they should be, without Pyro's warning. Under
        ``torch.no_grad()`` (prediction) no step can follow, so nothing is registered."""
        if not torch.is_grad_enabled():
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not registered in the param store")
            pyro.module("saccade", self)

    # -- the probabilistic program ------------------------------------------------------------

    def model(
        self,
        images: Tensor,
        proxies: Tensor,
        labels: Tensor | None = None,
        annealing: float = 1.0,
        steps: list[Step] | None = None,
    ) -> Tensor:
        """p(y, c, z | x) with the learned prior; ``annealing`` scales the KL term. ``steps``:
        the glimpses the guide took for the same images (see ``guide``)."""
        self.register()
        cfg = self.config
        batch = images.shape[0]
        proxy_features, maps = self.proxy_encoder.encode(proxies)
        look = self.look(proxies, maps) if cfg.where == "cells" else None
        decoded = F.adaptive_avg_pool2d(proxies, min(cfg.proxy, DECODED_PROXY))
        state = self.rnn.initial(batch, proxy_features)
        h, total = state[0][-1], None
        where = weight = centre = None
        with pyro.plate("data", batch, device=images.device):
            for t in pyro.markov(range(cfg.glimpses)):
                if look is not None:
                    # where_t ~ p(where_t | c, h_{t-1}): which cell of the proxy to look at
                    attention = self.attention(look, h)
                    where = pyro.sample(f"where_{t}", attention)
                    weight = self.attention_weight(attention, where)
                    centre = pyro.deterministic(f"centre_{t}", self.aim(look, where), event_dim=1)
                    look = self.looked_at(look, where)
                # z_t ~ p(z_t | h_{t-1}): the KL term of the bound
                with poutine.scale(scale=annealing * cfg.kl_weight):
                    z = pyro.sample(f"z_{t}", self.prior(h, t))
                # log p(c | z_t, h_{t-1}): the proxy decoder
                with poutine.scale(scale=cfg.proxy_weight):
                    pyro.sample(f"c_{t}", self.proxy_distribution(z, h), obs=decoded)
                # Replaying the guide, z_t is the guide's very tensor: so are the crop, its
                # features and h_t, which are taken from the guide instead of computed again.
                if steps is not None and t < len(steps) and steps[t].z is z:
                    step = steps[t]
                else:
                    step = self.step(images, z, proxy_features, state, centre, weight)
                h, state = step.h, step.state
                total = self.evidence(step, total)
                logits = self.classifier.combine(total)
                if cfg.likelihood == "per_glimpse":
                    with poutine.scale(scale=cfg.label_weight):
                        pyro.sample(f"y_{t}", self.label_distribution(logits), obs=labels)
            probs = pyro.deterministic("probs", self.class_probs(logits), event_dim=1)
            if cfg.likelihood == "aggregate":
                with poutine.scale(scale=cfg.label_weight):
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
        """q(z_t | c, h_{t-1}); with ``mean=True`` every glimpse is the posterior mean. With
        ``random=True`` each glimpse goes to a place drawn uniformly at random (a cell not yet
        looked at, or a centre keeping the crop inside the image), its size as q has it: the
        baseline that shows what the learned policy adds. Each glimpse's ``Step`` is appended to
        ``steps``, for the model's replay and for ``read``. ``draws`` > 1 glimpses each image
        that many times in one batch, draw s of image b at row s * B + b."""
        self.register()
        cfg = self.config
        proxy_features, proxy_maps = self.proxy_encoder.encode(proxies)
        look = self.look(proxies, proxy_maps) if cfg.where == "cells" else None
        if draws > 1:  # the proxy is encoded once, whatever the number of draws
            images, proxy_features, proxy_maps, look = self.repeated(
                draws, images, proxy_features, proxy_maps, look
            )
        batch = images.shape[0]
        state = self.rnn.initial(batch, proxy_features)
        h = state[0][-1]
        where = weight = centre = None
        with pyro.plate("data", batch, device=images.device):
            for t in pyro.markov(range(cfg.glimpses)):
                if look is not None:
                    # q(where_t | c, h_{t-1}) is the model's attention itself; mean: its mode
                    attention = self.attention(look, h, uniform=random)
                    where = pyro.sample(
                        f"where_{t}",
                        dist.Delta(attention.mode) if mean and not random else attention,
                        # TraceGraph_ELBO's variance reduction for its score-function term
                        infer={"baseline": {"use_decaying_avg_baseline": True}},
                    )
                    weight = self.attention_weight(attention, where)
                    centre = self.aim(look, where)
                    look = self.looked_at(look, where)
                loc, scale = self.posterior(proxy_features, proxy_maps, h, where)
                if random and look is None:
                    uniform = torch.rand_like(loc[..., 1:]) * 2 - 1
                    loc = torch.cat([loc[..., :1], torch.atanh(uniform * 0.999)], -1)
                q = dist.Delta(loc) if mean else dist.Normal(loc, scale)
                with poutine.scale(scale=annealing * cfg.kl_weight):
                    z = pyro.sample(f"z_{t}", q.to_event(1))
                step = self.step(images, z, proxy_features, state, centre, weight)
                h, state = step.h, step.state
                if steps is not None:
                    steps.append(step)

    @staticmethod
    def repeated(
        draws: int, images: Tensor, features: Tensor, maps: Tensor, look: Look | None
    ) -> tuple[Tensor, Tensor, Tensor, Look | None]:
        """Images, proxy features and ``look`` as ``draws`` copies of the batch. The proxy's
        feature maps, the largest of them, stay one per image: the attention and the posterior
        read them for every draw."""

        def copies(values: Tensor) -> Tensor:
            return values.repeat(draws, *[1] * (values.dim() - 1))

        if look is not None:
            look = look._replace(
                base=copies(look.base), aims=copies(look.aims), visited=copies(look.visited)
            )
        return repeat_images(images, draws), copies(features), maps, look

    def read(self, steps: list[Step]) -> Tensor:
        """Class probabilities [B, K] after the glimpses ``steps``: the model's ``probs`` site,
        which depends on the glimpses alone, not on the prior or the proxy decoder."""
        total = None
        for step in steps:
            total = self.evidence(step, total)
        return self.class_probs(self.classifier.combine(total))

    def boxes(self, z: Tensor, height: int, width: int, centres: Tensor | None = None) -> Tensor:
        """Pixel boxes (x0, y0, x1, y1) of glimpses z [..., T, 3] on an image of the given size;
        a model with ``where="cells"`` also needs the ``centres`` [..., T, 2] they aimed at
        (``Prediction.centres``)."""
        cfg = self.config
        if cfg.where == "cells":
            if centres is None:
                raise ValueError("this model aims its glimpses at cells: pass their centres")
            return pixel_boxes(self.cell_box(z, centres, height, width), height, width)
        return glimpse_boxes(z, height, width, cfg.scale_min, cfg.scale_max)
