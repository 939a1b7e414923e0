"""What a generated canvas's ink is painted on: black, white, or clutter (a smooth random field).

The ink of a canvas (its digits and scribbles, in [0, 1]) is painted over its background in one
colour, with the ink as alpha: ``value = field * (1 - ink) + colour * ink``. Black is no
background (value = ink), white the field 1 under colour 0 (value = 1 - ink). Clutter is the field
``level + contrast * texture`` with ``texture`` in (-1/2, 1/2): octaves of value noise on square
lattices of ``FINEST`` px up to the canvas's longer side, each interpolated by a cubic B-spline
and weighted equally, summed, standardised by the sum's own mean and spread over the canvas, and
mapped through the normal CDF, so that the field's mean is about its level and its extent about
its contrast, spread evenly between. A lattice value is a hash of the canvas's key and its node,
so the field is a function of the canvas's seed that costs the same at any point of any canvas:
a crop of a 100,000-px canvas reads the 4 x 4 nodes of each octave around each of its pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

BACKGROUNDS = ("black", "white", "clutter")
FINEST = 60.0  # px: the finest lattice spacing of the clutter field; the coarsest spans the canvas
LEVELS = (0.25, 0.75)  # range of a clutter field's mean
CONTRASTS = (0.2, 0.5)  # range of a clutter field's extent (max - min)
# Appended to (seed, split, index) to seed a canvas's background apart from its layout, so that a
# canvas shows the same digits and scribbles on every background.
_BACKGROUND_KEY = 0x62676E64
_MASK = 0xFFFFFFFF
_OCTAVE = 0x9E3779B9  # spreads the octaves' keys
_ROW, _COLUMN = 0x3C6EF372, 0x27D4EB2D  # spread a node's row and column before the hash
_OFFSET_X, _OFFSET_Y = 0x68E31DA4, 0xB5297A4D  # salt the octaves' lattice offsets
# Octaves that read at most this many lattice nodes a side of a grid are evaluated together
# and contracted by a matrix product, faster than gathering each point's four while so few.
_RUN_NODES = 64
# A canvas's sum of octaves is standardised by its mean and spread at this many points a side,
# spread evenly over the canvas.
_STAT_POINTS = 64
# What Backgrounds holds per canvas, along its first dimension.
_PER_CANVAS = ("level", "contrast", "colour", "keys", "offset_x", "offset_y", "shift", "spread")


def canvas_background(kind: str, seed: int, split_index: int, index: int) -> Background | None:
    """The background of ``kind`` of canvas ``index`` of a split: None for black, else
    ``Background.draw`` from the canvas's own generator, apart from its layout's, so that the
    layout is the same on every background."""
    if kind == "black":
        return None
    return Background.draw(kind, np.random.default_rng([seed, split_index, index, _BACKGROUND_KEY]))


def check_background(kind: str) -> None:
    """ValueError unless ``kind`` names a background."""
    if kind not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {kind!r}")


@dataclass(frozen=True)
class Background:
    """A canvas's background: the field ``level + contrast * texture`` (texture in (-1/2, 1/2), a
    function of ``key`` and the canvas's size) under ink of ``colour``. White is
    ``Background(1.0)``."""

    level: float
    contrast: float = 0.0
    colour: float = 0.0
    key: int = 0

    def __post_init__(self) -> None:
        low, high = self.level - self.contrast / 2, self.level + self.contrast / 2
        if not (0 <= low <= high <= 1 and 0 <= self.colour <= 1 and 0 <= self.key <= _MASK):
            raise ValueError(
                f"a background needs 0 <= level -/+ contrast / 2 <= 1, colour in [0, 1] and a "
                f"32-bit key, got {self}"
            )

    @classmethod
    def draw(cls, kind: str, rng: np.random.Generator) -> Background | None:
        """The background of one canvas: None (black), white, or a clutter field with its level,
        contrast, ink colour (black or white, even odds) and key drawn from ``rng``."""
        if kind == "black":
            return None
        if kind == "white":
            return cls(1.0)
        level = float(rng.uniform(*LEVELS))
        contrast = float(rng.uniform(*CONTRASTS))
        colour = float(rng.random() < 0.5)
        return cls(level, contrast, colour, int(rng.integers(_MASK + 1)))

    def field(self, height: int, width: int) -> Tensor:
        """The field at every pixel: float32 [height, width]."""
        fields = Backgrounds([self], height, width)
        xs = torch.arange(width, dtype=torch.float64)[None]
        ys = torch.arange(height, dtype=torch.float64)[None]
        return fields.grid(xs, ys)[0]

    def paint(self, ink: Tensor) -> Tensor:
        """The ink [..., H, W] painted over this background: field * (1 - ink) + colour * ink,
        as ``torch.lerp`` computes it (1 - ink exactly on white)."""
        return torch.lerp(self.field(*ink.shape[-2:]), torch.tensor(self.colour), ink)


BLACK = Background(0.0, colour=1.0)  # value = ink: what a canvas without a background shows


def describe_background(kind: str, background: Background | None) -> dict:
    """A canvas's background as a dataset's ``describe`` gives it: its kind, the field's level
    and contrast, and the colour of the ink."""
    shown = background or BLACK
    return {"kind": kind, "level": shown.level, "contrast": shown.contrast, "colour": shown.colour}


def _mix(h: Tensor) -> Tensor:
    """A 32-bit integer hash of int64 ``h`` in [0, 2^32) (products stay below 2^63)."""
    h = ((h >> 16) ^ h) * 0x45D9F3B & _MASK
    h = ((h >> 16) ^ h) * 0x45D9F3B & _MASK
    return (h >> 16) ^ h


def _node(key: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Lattice values in [-1, 1), float32, of an octave's ``key`` at nodes (rows, cols), whose
    products with the spreading constants stay far below 2^63 on any canvas."""
    value = _mix((key + rows * _ROW + cols * _COLUMN) & _MASK) >> 8  # 24 bits: exact in float32
    return value.float() / 2**23 - 1.0


# Cubic B-spline weights of the four nodes around a point, as polynomials in its place t in
# [0, 1) between the middle two: [1, t, t^2, t^3] @ _SPLINE (times 6, which the norm removes).
_SPLINE = torch.tensor(
    [[1.0, 4.0, 1.0, 0.0], [-3.0, 0.0, 3.0, 0.0], [3.0, -6.0, 3.0, 0.0], [-1.0, 3.0, -3.0, 1.0]]
)


def _axis(coords: Tensor, spacing: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
    """The four lattice nodes [..., N, 4] around pixel coordinates [..., N] along one axis, and
    their cubic B-spline weights, scaled to unit norm: each octave then has the same variance at
    every point, without the lattice's grid showing. Coordinates are float64, so that a
    100,000-px canvas still places them to a small fraction of a pixel; weights are float32."""
    u = (coords + offset) / spacing
    start = u.floor()
    t = (u - start).float()
    t2 = t * t
    weights = torch.stack([torch.ones_like(t), t, t2, t2 * t], -1) @ _SPLINE.to(t.device)
    weights = weights * weights.square().sum(-1, keepdim=True).rsqrt()
    nodes = start.long()[..., None] + torch.arange(-1, 3, device=coords.device)
    return nodes, weights


def _compact(nodes: Tensor) -> tuple[Tensor, Tensor]:
    """The nodes [..., N, 4] an axis reads, as ``(table [..., U], index [..., N, 4])`` with
    ``table.gather(index) == nodes``: a run of consecutive nodes, each once, when the samples are
    denser than the lattice; else every sample's own four."""
    count = nodes.shape[-2] * 4
    low = nodes.flatten(-2).amin(-1, keepdim=True)
    span = int((nodes.flatten(-2).amax(-1, keepdim=True) - low).max()) + 1
    if span <= count:
        return low + torch.arange(span, device=nodes.device), nodes - low[..., None]
    index = torch.arange(count, device=nodes.device).view(-1, 4).expand_as(nodes)
    return nodes.flatten(-2), index


class Backgrounds:
    """The backgrounds of canvases of one size (None: black), evaluated together at points or on
    grids of pixel coordinates (x, y), tensors whose first dimension is the canvas."""

    def __init__(self, backgrounds: Sequence[Background | None], height: int, width: int) -> None:
        chosen = [background or BLACK for background in backgrounds]
        self.textured = any(b.contrast > 0 for b in chosen)
        octaves = 1 + max(0, math.ceil(math.log2(max(height, width) / FINEST)))
        self.level = torch.tensor([b.level for b in chosen])
        self.contrast = torch.tensor([b.contrast for b in chosen])
        self.colour = torch.tensor([b.colour for b in chosen])
        key = torch.tensor([b.key for b in chosen], dtype=torch.int64)
        octave = torch.arange(octaves, dtype=torch.int64)
        self.keys = _mix((key[:, None] + octave * _OCTAVE) & _MASK)  # [B, octaves]
        self.spacing = torch.tensor([FINEST * 2**k for k in range(octaves)], dtype=torch.float64)
        self.offset_x = _mix(self.keys ^ _OFFSET_X).double() / 2**32 * self.spacing
        self.offset_y = _mix(self.keys ^ _OFFSET_Y).double() / 2**32 * self.spacing
        self._place(torch.device("cpu"))
        if self.textured:
            # Each canvas's sum of octaves standardised by its own mean and spread, so that its
            # field has about the level for mean and the contrast for extent whatever the
            # coarsest octaves, near constant over the canvas, happen to be.
            xs = (torch.arange(_STAT_POINTS, device=self.device) + 0.5) * width / _STAT_POINTS
            ys = (torch.arange(_STAT_POINTS, device=self.device) + 0.5) * height / _STAT_POINTS
            batch = len(chosen)
            sums = self._sum_each(xs.expand(batch, -1) - 0.5, ys.expand(batch, -1) - 0.5)
            self.shift = sums.mean((1, 2))
            self.spread = sums.std((1, 2)).clamp(min=1e-6)

    @classmethod
    def of(
        cls, backgrounds: Sequence[Background | None], height: int, width: int
    ) -> Backgrounds | None:
        """The backgrounds, or None when all are black."""
        if all(b is None for b in backgrounds):
            return None
        return cls(backgrounds, height, width)

    def _canvas(self, b: int) -> Backgrounds:
        """Canvas ``b``'s background alone."""
        one = object.__new__(Backgrounds)
        one.__dict__.update(self.__dict__)
        for name in _PER_CANVAS:
            if hasattr(self, name):
                setattr(one, name, getattr(self, name)[b : b + 1])
        return one

    def _place(self, device: torch.device) -> None:
        self.device = device
        for name in ("spacing", *_PER_CANVAS):
            if hasattr(self, name):  # the shift and spread once measured
                setattr(self, name, getattr(self, name).to(device))

    def to(self, device: str | torch.device) -> Backgrounds:
        moved = object.__new__(Backgrounds)
        moved.__dict__.update(self.__dict__)
        moved._place(torch.device(device))
        return moved

    @staticmethod
    def _per_canvas(values: Tensor, dims: int) -> Tensor:
        """[B] shaped to broadcast over ``dims`` dimensions."""
        return values.view(-1, *([1] * (dims - 1)))

    def _field(self, total: Tensor) -> Tensor:
        """The field, float32, of sums of octaves [B, ...]: erf(x / sqrt 2) / 2 = ndtr(x) - 1/2
        of the standardised sum spreads it about evenly over (-1/2, 1/2)."""
        dims = total.dim()
        spread = self._per_canvas(self.spread * math.sqrt(2), dims)
        texture = torch.erf((total - self._per_canvas(self.shift, dims)) / spread)
        contrast = self._per_canvas(self.contrast * 0.5, dims)
        return self._per_canvas(self.level, dims) + contrast * texture

    def _flat(self, shape: torch.Size) -> Tensor:
        """The field of canvases without texture, float32 ``shape``: their level."""
        return self._per_canvas(self.level, len(shape)).expand(shape).contiguous()

    def _axes(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Nodes and weights (``_axis``) of every octave around coordinates x [B, ..., Nx] and
        y [B, ..., Ny] at once: columns and their weights [B, ..., K, Nx, 4], rows and theirs
        [B, ..., K, Ny, 4]."""
        batch, count, dims = x.shape[0], x.shape[-1], x.dim()
        octaves = len(self.spacing)
        offsets = torch.cat(
            [
                self.offset_x[..., None].expand(-1, -1, count),
                self.offset_y[..., None].expand(-1, -1, y.shape[-1]),
            ],
            -1,
        ).view(batch, *([1] * (dims - 2)), octaves, -1)
        coords = torch.cat([x, y], -1).double()[..., None, :]  # an octave dimension
        nodes, weights = _axis(coords, self.spacing[:, None], offsets)
        return (
            nodes[..., :count, :],
            weights[..., :count, :],
            nodes[..., count:, :],
            weights[..., count:, :],
        )

    def _keys(self, dims: int, trailing: int, octaves: slice = slice(None)) -> Tensor:
        """The octaves' keys [B, K] shaped [B, 1 (dims - 2 times), K, 1 (trailing times)]."""
        keys = self.keys[:, octaves]
        return keys.view(len(keys), *([1] * (dims - 2)), keys.shape[1], *([1] * trailing))

    def points(self, x: Tensor, y: Tensor) -> Tensor:
        """The field, float32, at points (x, y) [B, ...] (pixel coordinates)."""
        if not self.textured:
            return self._flat(x.shape)
        cols, wx, rows, wy = self._axes(x, y)
        lattice = _node(self._keys(x.dim(), 3), rows[..., :, None], cols[..., None, :])
        return self._field(torch.einsum("...knp,...knpq,...knq->...n", wy, lattice, wx))

    def grid(self, xs: Tensor, ys: Tensor, each: bool = False) -> Tensor:
        """The field, float32 [B, ..., Ny, Nx], at every (x, y) of columns ``xs`` [B, ..., Nx]
        and rows ``ys`` [B, ..., Ny] (pixel coordinates); with ``each``, canvas by canvas
        (``_sum_each``)."""
        if not self.textured:
            return self._flat(torch.Size([*ys.shape, xs.shape[-1]]))
        return self._field(self._sum_each(xs, ys) if each else self._sum(xs, ys))

    def _sum_each(self, xs: Tensor, ys: Tensor) -> Tensor:
        """``_sum`` canvas by canvas, each as if alone: which octaves ``_sum`` takes together and
        the shapes of its products follow the grid's extent over the whole batch, and with them
        the last bits of every canvas's field. What a prediction reads of a canvas, its proxy
        and the field's standardisation, must not depend on the other canvases of its batch;
        a batch of crops, read in training, is nine times faster together."""
        parts = [self._canvas(b)._sum(xs[b : b + 1], ys[b : b + 1]) for b in range(len(xs))]
        return torch.cat(parts)

    def _sum(self, xs: Tensor, ys: Tensor) -> Tensor:
        """The sum of the octaves on the grid of columns ``xs`` and rows ``ys``. The octaves that
        read few lattice nodes a side (all but the finest ones of a grid much wider than their
        spacing) are evaluated together by two matrix products."""
        dims, octaves = xs.dim(), len(self.spacing)
        cols, wx, rows, wy = self._axes(xs, ys)
        col_low, row_low = cols.amin((-2, -1)), rows.amin((-2, -1))  # [B, ..., K]
        spans = torch.stack([cols.amax((-2, -1)) - col_low, rows.amax((-2, -1)) - row_low])
        across, down = (spans.flatten(1, -2).amax(1) + 1).tolist()
        # The narrow octaves: the coarsest ones, since a coarser lattice has fewer nodes a side.
        first = octaves
        while first and max(across[first - 1], down[first - 1]) <= _RUN_NODES:
            first -= 1
        total = torch.zeros(*ys.shape, xs.shape[-1], device=xs.device)
        if first < octaves:
            narrow = slice(first, None)
            u, v = max(down[narrow]), max(across[narrow])
            row_nodes = (
                row_low[..., narrow, None, None] + torch.arange(u, device=xs.device)[:, None]
            )
            col_nodes = col_low[..., narrow, None, None] + torch.arange(v, device=xs.device)
            lattice = _node(self._keys(dims, 2, narrow), row_nodes, col_nodes)  # [B, ..., K, U, V]
            row_weights = torch.zeros(*rows[..., narrow, :, :].shape[:-1], u, device=xs.device)
            row_index = rows[..., narrow, :, :] - row_low[..., narrow, None, None]
            row_weights.scatter_add_(-1, row_index, wy[..., narrow, :, :])  # [B, ..., K, Ny, U]
            col_weights = torch.zeros(*cols[..., narrow, :, :].shape[:-1], v, device=xs.device)
            col_index = cols[..., narrow, :, :] - col_low[..., narrow, None, None]
            col_weights.scatter_add_(-1, col_index, wx[..., narrow, :, :])  # [B, ..., K, Nx, V]
            total += torch.einsum("...kyu,...kuv,...kxv->...yx", row_weights, lattice, col_weights)
        for k in range(first):
            total += self._wide_octave(
                k, cols[..., k, :, :], wx[..., k, :, :], rows[..., k, :, :], wy[..., k, :, :]
            )
        return total

    def _wide_octave(self, k: int, cols: Tensor, wx: Tensor, rows: Tensor, wy: Tensor) -> Tensor:
        """Octave ``k`` on a grid from its columns and rows (nodes [B, ..., N, 4] and weights),
        which read many lattice nodes: each once when the grid is denser than the lattice, else
        each point's own, contracted by gathering."""
        row_table, row_index = _compact(rows)
        col_table, col_index = _compact(cols)
        key = self.keys[:, k].view(-1, *([1] * (rows.dim() - 1)))
        lattice = _node(key, row_table[..., :, None], col_table[..., None, :])  # [..., U, V]
        across, columns = lattice.shape[-1], cols.shape[-2]
        partial = sum(
            wy[..., p, None]
            * lattice.gather(-2, row_index[..., p, None].expand(*row_index.shape[:-1], across))
            for p in range(4)
        )  # [..., Ny, V]
        shape = (*partial.shape[:-1], columns)
        return sum(
            wx[..., None, :, q] * partial.gather(-1, col_index[..., None, :, q].expand(shape))
            for q in range(4)
        )

    def paint(self, ink: Tensor, field: Tensor) -> Tensor:
        """Ink [B, ...] painted over the ``field`` [B, ...] of each canvas, in ink's dtype, as
        ``Background.paint`` paints it."""
        colour = self._per_canvas(self.colour, ink.dim()).to(ink.dtype)
        return torch.lerp(field.to(ink.dtype), colour, ink)
