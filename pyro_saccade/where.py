"""Where a glimpse goes: the placement of z_t, as one small interface with two kinds.

``Free`` is the paper's: z_t = (scale, x, y) alone places a glimpse anywhere in the image, and
q(z_t | c, h_{t-1}) aims at a soft-argmax over the proxy's feature map (networks.SaliencyHead).

``Cells`` finds small objects on large images, where a continuous z alone gets no gradient
towards an object its crop does not touch: a discrete where_t chooses a cell of the proxy's
feature map (G x G' cells, the proxy's J x I pixels over 4) from an attention over the cells,
and z_t places a box of ``where.box_range()`` pixels, whatever the image size, within a cell of
the cell's aim. The prior p(where_t | c, h_{t-1}) is the where-prior the config names
(where_priors.py: by default the attention itself, a KL of zero), and the guide
q(where_t | c, h_{t-1}) is that belief updated by the attention, q ∝ p exp(attention) (the
attention alone when it is the prior).
Trace_ELBO gives the attention a score-function gradient, and the crop's features are
multiplied by q(where_t) / q(where_t) held constant (which is 1) so that it also gets the
pathwise gradient of attention sampling (Katharopoulos & Fleuret, 2019).

Both kinds answer the same calls, made once per step by the model and the guide:
``start`` (the proxy as the placement sees it), ``sample`` (where_t, a Pyro site for ``Cells``),
``posterior`` (q(z_t | c, h_{t-1}, where_t)), ``glimpse`` (the crop) and ``weighted`` (the
crop's features).
"""

from __future__ import annotations

from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CELL, CellsWhere, FreeWhere, SaccadeConfig
from .contrast import against, background_crops
from .data.proxy import proxy_shape
from .glimpse import (
    extract_glimpse,
    glimpse_boxes,
    image_sides,
    normalised_box,
    pixel_boxes,
    repeat_rows,
    sample_box,
    z_at,
)
from .networks import GaussianHead, SaliencyHead, conv_block
from .priors import LATENT
from .where_priors import WhereContext, make_where_prior


class Aim(NamedTuple):
    """The cell a glimpse chose (where_t) [B], the point it aims at [B, 2] in normalised
    coordinates, and the attention weight of its crop's features [B]."""

    cell: Tensor
    centre: Tensor
    weight: Tensor


class Look(NamedTuple):
    """The proxy as the attention sees it: its feature map [B, C, G, G'] (one per image, shared
    by its draws), the terms of the attention that depend on it alone [B, G * G'], the proxy's
    contrast around each cell [B, G * G'], where a glimpse in each cell aims [B, G * G', 2], the
    cells already looked at [B, G * G'], how many cells around a look an object can reach,
    rows and columns [B, 2], and the cells' centres [G * G', 2] (``cell_centres``)."""

    maps: Tensor
    base: Tensor
    contrast: Tensor
    aims: Tensor
    visited: Tensor
    reach: Tensor
    centres: Tensor

    def repeat(self, draws: int) -> Look:
        """``draws`` copies of the batch, draw s of image b at row s * B + b; the feature map,
        the largest part, stays one per image."""
        return Look(
            self.maps,
            repeat_rows(self.base, draws),
            repeat_rows(self.contrast, draws),
            repeat_rows(self.aims, draws),
            repeat_rows(self.visited, draws),
            repeat_rows(self.reach, draws),
            self.centres,
        )


def make_where(config: SaccadeConfig) -> Free | Cells:
    """The placement a config's ``where`` section asks for."""
    return Cells(config) if isinstance(config.where, CellsWhere) else Free(config)


def boxes(
    config: SaccadeConfig, z: Tensor, height: int, width: int, centres: Tensor | None = None
) -> Tensor:
    """Pixel boxes (x0, y0, x1, y1) [..., T, 4] of glimpses z [..., T, 3] on an image of the
    given size; a ``Cells`` model's glimpses also need the ``centres`` [..., T, 2] they aimed
    at."""
    where = config.where
    if isinstance(where, FreeWhere):
        return glimpse_boxes(z, height, width, where.scale_min, where.scale_max)
    if centres is None:
        raise ValueError("this model aims its glimpses at cells: pass their centres")
    grid = cell_grid(config, height, width)
    return pixel_boxes(cell_box(z, centres, grid, height, width, where), height, width)


def cell_grid(config: SaccadeConfig, height: int, width: int) -> tuple[int, int]:
    """Rows and columns of cells of the proxy's feature map on an image of ``height`` x
    ``width`` pixels: the proxy's (``data.proxy_shape``) over ``CELL``."""
    rows, cols = proxy_shape(height, width, config.proxy_side)
    return rows // CELL, cols // CELL


# -- the paper's free placement ---------------------------------------------------------------


class Free(nn.Module):
    """z_t alone places the glimpse; q aims it at a soft-argmax over the proxy's feature map."""

    def __init__(self, config: SaccadeConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.posterior_net = SaliencyHead(
            2 * cfg.proxy_width,
            cfg.cells,
            cfg.proxy_features + cfg.hidden,
            cfg.hidden,
            LATENT,
            cfg.posterior_std,
            cfg.posterior_std_max,
        )

    def start(self, images: Tensor, proxies: Tensor, maps: Tensor) -> Tensor:
        """What the placement reads of the proxy: its feature map [B, C, G, G], pooled to the
        head's square grid from the map of an image of another shape."""
        cells = self.config.cells
        return maps if maps.shape[-2:] == (cells, cells) else F.adaptive_avg_pool2d(maps, cells)

    @staticmethod
    def repeat(maps: Tensor, draws: int) -> Tensor:
        return maps  # the saliency head reads one map per image for all its draws

    def sample(self, t: int, maps: Tensor, h: Tensor, mode: str) -> tuple[None, Tensor]:
        """No discrete choice: z_t alone places the glimpse."""
        return None, maps

    def posterior(
        self, t: int, features: Tensor, maps: Tensor, h: Tensor, aim: None, random: bool
    ) -> tuple[Tensor, Tensor]:
        """loc and scale of q(z_t | c, h_{t-1}); ``random``: a centre drawn uniformly (the site
        ``random_t``), the scale as q has it."""
        where = self.config.where
        loc, scale, centre = self.posterior_net(maps, features, h)
        loc = z_at(loc[..., 0], centre, where.scale_min, where.scale_max)
        if random:
            anywhere = dist.Uniform(-loc.new_ones(()), 1.0).expand(loc[..., 1:].shape)
            uniform = pyro.sample(f"random_{t}", anywhere.to_event(1))
            loc = torch.cat([loc[..., :1], torch.atanh(uniform * 0.999)], -1)
        return loc, scale

    def glimpse(
        self, images: Tensor, z: Tensor, centre: None, background: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The crops [B, C, L, L] at z [B, 3] against their ``background`` (a map [B, C, J, J],
        contrast.py), z itself for the recurrent state, and the height of the box's centre."""
        cfg = self.config
        where = cfg.where
        crops = extract_glimpse(
            images, z, cfg.crop, where.scale_min, where.scale_max, cfg.antialias
        )
        sides = image_sides(images)
        box = normalised_box(z, *sides, where.scale_min, where.scale_max)
        under = background_crops(background, box, cfg.crop, cfg.antialias, *sides)
        return against(crops, under), z, box[3]

    @staticmethod
    def weighted(features: Tensor, aim: None) -> Tensor:
        return features


# -- the attention over cells -----------------------------------------------------------------


class CellAttention(nn.Module):
    """Logits of where_t over the proxy's cells: proxy feature map [B, C, G, G], ink per cell
    [B, G * G] and h_{t-1} [B, H] -> [B, G * G].

    Four terms: where the proxy has ink (empty cells hold nothing to read), a small detector
    on the proxy's features (an object rather than clutter), a quadratic in the cell's place
    (objects near the top; the convolutions alone cannot say where a cell is), and a match of
    each cell's features against a read of h_{t-1} (what was seen so far).
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.detector = nn.Sequential(conv_block(channels, channels), nn.Conv2d(channels, 1, 1))
        self.recall = nn.Linear(hidden, channels)
        self.place = nn.Linear(5, 1, bias=False)  # x, y, x^2, y^2, xy of the cell's centre
        # The learned terms start at zero: the first glimpses go where the ink is.
        nn.init.zeros_(self.detector[-1].weight)
        nn.init.zeros_(self.detector[-1].bias)
        nn.init.zeros_(self.place.weight)
        nn.init.zeros_(self.recall.weight)
        nn.init.zeros_(self.recall.bias)
        self.ink_weight = nn.Parameter(torch.tensor(1.0))

    def base(self, maps: Tensor, ink: Tensor, floor: float, centres: Tensor) -> Tensor:
        """The terms that depend on the proxy alone, computed once per image: [B, G * G], from
        the cells' centres [G * G, 2] (``cell_centres``). An empty cell has no ink: ``floor``
        keeps its logit finite."""
        x, y = centres.to(maps).unbind(-1)
        place = self.place(torch.stack([x, y, x * x, y * y, x * y], -1))[:, 0]
        return self.detector(maps).flatten(1) + place + self.ink_weight * (ink + floor).log()

    def forward(self, base: Tensor, maps: Tensor, h: Tensor) -> Tensor:
        """Logits [S * B, G * G] for S draws of B images (draw s of image b at row s * B + b in
        ``base`` and ``h``); the draws share the feature map [B, C, G, G] instead of copies."""
        batch, channels = maps.shape[:2]
        read = self.recall(h).view(-1, batch, channels)
        return base + torch.einsum("bcg,sbc->sbg", maps.flatten(2), read).reshape(base.shape)


def cells_kl(q: dist.Categorical, p: dist.Categorical, closed: Tensor) -> Tensor:
    """KL(q || p) [B] of two distributions over the cells but the ``closed`` ones [B, G * G],
    where both are zero: those terms are left out before they meet, so that no infinity reaches
    the gradient."""
    ratio = torch.where(closed, 0.0, q.logits - p.logits)
    return (q.probs * ratio).sum(-1)


def cell_centres(rows: int, cols: int) -> Tensor:
    """Centres (x, y) [G * G', 2] of a grid of G x G' cells over the image, row by row, in
    normalised coordinates."""
    ys = (torch.arange(rows) + 0.5) / rows * 2 - 1
    xs = (torch.arange(cols) + 0.5) / cols * 2 - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y], -1).view(-1, 2)


def cell_box(
    z: Tensor,
    centre: Tensor,
    grid: tuple[int, int],
    height: int | Tensor,
    width: int | Tensor,
    where: CellsWhere,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The box (sx, sy, cx, cy) of glimpse z [..., 3] aimed at ``centre`` [..., 2] on images of
    ``height`` x ``width`` pixels (ints, or [B] for images of different sizes) with a ``grid``
    of cells (rows, columns).

    The box side is squashed into ``where.box_range()`` pixels, whatever the image size, so a
    glimpse can read a small object at its native resolution on any canvas; its centre moves at
    most one cell from the aim. The box may reach past the border (read as zeros).
    """
    low, high = where.box_range()
    side = low + (high - low) * torch.sigmoid(z[..., 0])
    rows, cols = grid
    cx = centre[..., 0] + torch.tanh(z[..., 1]) * (2 / cols)
    cy = centre[..., 1] + torch.tanh(z[..., 2]) * (2 / rows)
    return side / width, side / height, cx, cy


class Cells(nn.Module):
    """where_t ~ an attention over the proxy's cells; z_t refines a box near the cell's aim."""

    def __init__(self, config: SaccadeConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        channels = 2 * cfg.proxy_width
        self.attention = CellAttention(channels, cfg.hidden)
        self.attention.requires_grad_(cfg.where.learn)
        # z_t refines a chosen cell: q reads that cell's features too
        self.posterior_net = GaussianHead(
            cfg.proxy_features + cfg.hidden + channels,
            cfg.hidden,
            LATENT,
            cfg.posterior_std,
            cfg.posterior_std_max,
        )
        self.prior = make_where_prior(cfg.where.prior, cfg.where.prior_args)

    def start(self, images: Tensor, proxies: Tensor, maps: Tensor) -> Look:
        """The attention's view of the proxy before the first glimpse.

        ``proxies`` are the proxies' contrast against their background (contrast.py): its
        ink. Each cell's ink is the mean over a window of twice the cell's side around it,
        so that an object across a cell border counts whole in the cell nearest its centre, and
        a glimpse in the cell aims at the centroid of that window's ink (the cell's centre where
        there is none): z_t then refines an aim that is already on the object.
        """
        ink = proxies.mean(1, keepdim=True)
        height, width = ink.shape[-2:]

        def coords(side: int) -> Tensor:
            return (torch.arange(side, device=ink.device, dtype=ink.dtype) + 0.5) / side * 2 - 1

        def window(values: Tensor) -> Tensor:  # [B, 1, J, I] -> [B, G * G']
            return F.avg_pool2d(values, 2 * CELL, stride=CELL, padding=CELL // 2).flatten(1)

        mass = window(ink)
        centroid = torch.stack(
            [window(ink * coords(width)), window(ink * coords(height)[:, None])], -1
        )
        grid = maps.shape[-2:]
        centres = cell_centres(*grid).to(ink.device)
        held = (mass > 1e-6).unsqueeze(-1)
        aims = torch.where(held, centroid / mass.clamp(min=1e-6).unsqueeze(-1), centres.to(ink))
        base = self.attention.base(maps, mass, self.config.where.ink_floor, centres)
        visited = torch.zeros_like(base, dtype=torch.bool)
        reach = self.reach(images, grid, base.shape[0], base.device)
        return Look(maps, base, mass, aims, visited, reach, centres)

    def reach(
        self, images: Tensor, grid: tuple[int, int], batch: int, device: torch.device
    ) -> Tensor:
        """How many cells, rows and columns [B, 2], an object of ``object_size`` pixels around
        a look's aim can reach on a ``grid`` of cells: half its side over a cell's."""
        sides = torch.stack(
            [torch.as_tensor(side).expand(batch) for side in image_sides(images)], -1
        )
        half = self.config.where.object_size / 2
        cells = torch.tensor(grid, dtype=torch.float64)
        return torch.ceil(half * cells / sides.double()).long().clamp(min=1).to(device)

    @staticmethod
    def repeat(look: Look, draws: int) -> Look:
        return look.repeat(draws)

    def sample(self, t: int, look: Look, h: Tensor, mode: str) -> tuple[Aim, Look]:
        """where_t over the cells not yet looked at: ~ the where-prior p in the model
        (``mode="prior"``), ~ the attention q in the guide (its mode with ``mode="mean"``,
        uniform with ``mode="random"``); the aim it gives, and ``look`` with the cells it reads
        marked as visited."""
        attention = self.attention(look.base, look.maps, h)
        prior = self.prior(WhereContext(t, attention, look.contrast, look.centres, h))
        # q: the prior's belief updated by the attention, or the attention that is the prior
        guide = attention + prior if self.prior.informs_guide else attention
        if mode == "prior":
            chosen = self.cells_distribution(prior, look)
            cell = pyro.sample(f"where_{t}", chosen)
            # The KL of where_t exactly: Trace_ELBO's log p - log q at the guide's draw is
            # replaced by its expectation over the cells, -KL(q || p), and its gradient with it.
            # When p is the attention, p = q: zero, gradient and all, and nothing to add.
            if self.prior.informs_guide:
                q = self.cells_distribution(guide, look)
                sampled = chosen.log_prob(cell) - q.log_prob(cell)
                pyro.factor(f"where_kl_{t}", -cells_kl(q, chosen, look.visited) - sampled)
        else:
            logits = torch.zeros_like(attention) if mode == "random" else guide
            chosen = self.cells_distribution(logits, look)
            cell = pyro.sample(
                f"where_{t}",
                dist.Delta(chosen.mode) if mode == "mean" else chosen,
                # TraceGraph_ELBO's variance reduction for its score-function term
                infer={"baseline": {"use_decaying_avg_baseline": True}},
            )
        centre = look.aims.gather(1, cell[:, None, None].expand(-1, 1, 2))[:, 0]
        if mode == "prior":  # the aim as a site, for Predictive and ArviZ
            centre = pyro.deterministic(f"centre_{t}", centre, event_dim=1)
        p = chosen.probs.gather(-1, cell.unsqueeze(-1))[..., 0]
        return Aim(cell, centre, p / p.detach()), self.looked_at(look, cell)

    @staticmethod
    def cells_distribution(logits: Tensor, look: Look) -> dist.Categorical:
        """where_t over the cells not yet looked at."""
        return dist.Categorical(logits=logits.masked_fill(look.visited, float("-inf")))

    @staticmethod
    def looked_at(look: Look, cell: Tensor) -> Look:
        """``look`` with the cells an object around cell ``cell`` [B] can reach marked as
        visited."""
        height, width = look.maps.shape[-2:]
        row_lines = torch.arange(height, device=cell.device)
        col_lines = torch.arange(width, device=cell.device)
        rows = (row_lines - (cell // width).unsqueeze(-1)).abs() <= look.reach[:, :1]  # [B, G]
        cols = (col_lines - (cell % width).unsqueeze(-1)).abs() <= look.reach[:, 1:]  # [B, G']
        visited = look.visited | (rows.unsqueeze(-1) & cols.unsqueeze(-2)).flatten(1)
        # Once every cell is read (objects large for the grid), any may be read again.
        return look._replace(visited=visited & ~visited.all(-1, keepdim=True))

    def posterior(
        self, t: int, features: Tensor, look: Look, h: Tensor, aim: Aim, random: bool
    ) -> tuple[Tensor, Tensor]:
        """loc and scale of q(z_t | c, h_{t-1}, where_t), from the proxy's features and those
        of cell where_t (draw s of image b at row s * B + b)."""
        cells = look.maps.flatten(2)
        image = torch.arange(aim.cell.shape[0], device=aim.cell.device) % cells.shape[0]
        return self.posterior_net(torch.cat([features, h, cells[image, :, aim.cell]], -1))

    def glimpse(
        self, images: Tensor, z: Tensor, centre: Tensor, background: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The crops [B, C, L, L] of the box z places near ``centre`` [B, 2], the aim of cell
        where_t, against their ``background`` (a map [B, C, J, J], contrast.py), and what the
        recurrent state learns of it: the box side over the largest, and its centre; and the
        height of its centre."""
        cfg = self.config
        _, width = sides = image_sides(images)
        grid = tuple(side // CELL for side in background.shape[-2:])  # the proxy's cells
        box = cell_box(z, centre, grid, *sides, cfg.where)
        crops = sample_box(images, box, cfg.crop, cfg.antialias)
        under = background_crops(background, box, cfg.crop, cfg.antialias, *sides)
        crops = against(crops, under)
        sx, _, cx, cy = box
        return crops, torch.stack([sx * (width / cfg.where.box_range()[1]), cx, cy], -1), cy

    @staticmethod
    def weighted(features: Tensor, aim: Aim) -> Tensor:
        """The crop's features times the attention weight: attention sampling's pathwise
        gradient."""
        return features * aim.weight.unsqueeze(-1)
