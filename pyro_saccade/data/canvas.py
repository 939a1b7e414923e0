"""Lazy canvases: images made of square patches pasted on a blank canvas, or painted over a
background, cropped and area-downsampled straight from the patch list, so that a canvas never
exists as a dense tensor.

A batch of them (:class:`CanvasBatch`) stands in for an image tensor [B, 1, H, W]: its crops
equal ``F.grid_sample`` on the dense images and its proxies equal ``make_proxy`` on them, at a
cost that depends on the crops and the patches, never on H x W.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .background import Background, Backgrounds

MODES = ("replace", "add")
# Proxy pixels are composed this many at a time, so that canvases of large patches (a 700-px
# digit) need a bounded amount of scratch memory.
_PROXY_CHUNK = 1 << 21
# Zero border around each patch in CanvasBatch's table: a bilinear 2x2 look-up clamped to it
# reads only zeros on either side of the patch.
_BORDER = 2
# Crops overlapping at most this many patches on average are painted patch by patch; wider
# ones through the cell table, whose look-up costs per crop about what one and a half
# (crop, patch) rounds cost (measured on Megapixel MNIST, one thread).
_ROUND_LIMIT = 1.5
# CanvasBatch keeps each pixel's 2x2 block together (four times the patch table) up to this size.
_QUAD_BYTES = 1 << 28
# A proxy bin averages a background's field at every pixel of a side of at most AREA_PIXELS,
# exactly; on a longer side, at the centres of equal parts of the bin, at most AREA_STEP pixels
# apart and at most AREA_SAMPLES (the midpoint rule, which a field smooth over about 60 px hardly
# needs more points for: within 2e-3 of the exact mean on Megapixel MNIST, tests/test_background).
AREA_PIXELS = 512
AREA_STEP = 12
AREA_SAMPLES = 16


class GeneratedCanvases(Dataset):
    """A dataset of ``n`` canvases, each a pure function of its index: its length and the
    check of an index (negative ones count from the end)."""

    n: int

    def __len__(self) -> int:
        return self.n

    def _index(self, i: int) -> int:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} canvases")
        return i % self.n


@dataclass(eq=False)
class PatchCanvas:
    """One canvas of ``height`` x ``width`` pixels, blank but for its patches.

    ``patches`` float32 [P, s, s] in [0, 1] (a patch of smaller side is zero-padded to s at its
    bottom and right), ``sides`` int64 [P] each patch's own side, ``boxes`` int64 [P, 4]
    (x0, y0, x1, y1) with x1 = x0 + side and y1 = y0 + side exclusive, possibly partly outside
    the canvas. ``mode`` "replace": patches are painted in order, each replacing everything
    under its box, its zeros included; "add": intensities add and the sum is clipped to [0, 1].
    The result is the canvas's ink; with a ``background`` (``data.background``), the canvas is
    that ink painted over it, ``field * (1 - ink) + colour * ink``.
    """

    height: int
    width: int
    patches: Tensor
    sides: Tensor
    boxes: Tensor
    mode: str = "replace"
    background: Background | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"canvas sides must be positive, got {self.height}x{self.width}")
        if self.background is not None and not isinstance(self.background, Background):
            raise ValueError(f"background must be a Background or None, got {self.background!r}")
        self.height, self.width = int(self.height), int(self.width)
        self.patches = torch.as_tensor(self.patches, dtype=torch.float32)
        self.sides = torch.as_tensor(self.sides, dtype=torch.int64)
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.int64)
        count = len(self.sides)
        if self.patches.dim() != 3 or self.patches.shape[1] != self.patches.shape[2]:
            raise ValueError(f"patches must be [P, s, s], got {list(self.patches.shape)}")
        if len(self.patches) != count or self.boxes.shape != (count, 4):
            raise ValueError(
                f"{len(self.patches)} patches, {count} sides and boxes of shape "
                f"{list(self.boxes.shape)}: expected P, P and [P, 4]"
            )
        if count and not (
            (self.sides >= 0).all()
            and (self.sides <= self.patches.shape[-1]).all()
            and (self.boxes[:, 2] - self.boxes[:, 0] == self.sides).all()
            and (self.boxes[:, 3] - self.boxes[:, 1] == self.sides).all()
        ):
            raise ValueError("each box must be side x side pixels, side <= the patches' side")

    @classmethod
    def from_pieces(
        cls,
        height: int,
        width: int,
        pieces: Sequence[tuple[Tensor, tuple[int, int]]],
        mode: str = "replace",
        background: Background | None = None,
    ) -> PatchCanvas:
        """A canvas from ``(patch [s, s], (x0, y0))`` pairs in paint order."""
        side = max((patch.shape[-1] for patch, _ in pieces), default=1)
        patches = torch.zeros(len(pieces), side, side)
        sides, boxes = [], []
        for k, (patch, (x0, y0)) in enumerate(pieces):
            if patch.dim() != 2 or patch.shape[0] != patch.shape[1]:
                raise ValueError(f"patch {k} must be square [s, s], got {list(patch.shape)}")
            s = patch.shape[0]
            patches[k, :s, :s] = patch
            sides.append(s)
            boxes.append((x0, y0, x0 + s, y0 + s))
        boxes = torch.tensor(boxes).view(-1, 4)
        return cls(height, width, patches, sides, boxes, mode, background)

    def __len__(self) -> int:
        return len(self.sides)

    @property
    def shape(self) -> torch.Size:
        """[1, H, W], the shape of the dense image."""
        return torch.Size([1, self.height, self.width])

    def dense(self) -> Tensor:
        """The canvas drawn: float32 [1, H, W]."""
        image = torch.zeros(self.height, self.width)
        for patch, side, (x0, y0, x1, y1) in zip(
            self.patches, self.sides.tolist(), self.boxes.tolist(), strict=True
        ):
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x1, self.width), min(y1, self.height)
            if cx0 >= cx1 or cy0 >= cy1 or side == 0:
                continue
            part = patch[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            if self.mode == "replace":
                image[cy0:cy1, cx0:cx1] = part
            else:
                image[cy0:cy1, cx0:cx1] += part
        if self.mode == "add":
            image.clamp_(0.0, 1.0)
        if self.background is not None:
            image = self.background.paint(image)
        return image[None]

    def __repr__(self) -> str:
        shown = "" if self.background is None else f", background={self.background}"
        return (
            f"{type(self).__name__}({self.height}x{self.width}, {len(self)} patches, "
            f"mode={self.mode!r}{shown})"
        )


class CanvasBatch:
    """Canvases of one size and mode standing in for an image tensor [B, 1, H, W].

    The patches live in one table [B, P + 1, T, T]: each patch at offset ``_BORDER`` inside a
    zero border wide enough that clamped look-ups past its edge read zeros, and a last, empty
    slot P that padded candidate lists point at. In "replace" mode the table holds value + 1
    inside each patch's box, so that one look-up says both whether a pixel is covered and by
    what. The canvases' backgrounds, if any, are painted under the ink of each crop and proxy.
    """

    def __init__(self, canvases: Sequence[PatchCanvas], device: str | torch.device = "cpu") -> None:
        canvases = list(canvases)
        if not canvases:
            raise ValueError("a CanvasBatch needs at least one canvas")
        sizes = {(c.height, c.width) for c in canvases}
        modes = {c.mode for c in canvases}
        if len(sizes) != 1 or len(modes) != 1:
            raise ValueError(
                f"canvases of one size and mode expected, got sizes {sorted(sizes)} and modes "
                f"{sorted(modes)}"
            )
        self.canvases = canvases
        (self.height, self.width), self.mode = sizes.pop(), modes.pop()
        count = max(len(c) for c in canvases)
        side = max(1, max(c.patches.shape[-1] for c in canvases))
        batch, edge = len(canvases), side + 2 * _BORDER
        table = torch.zeros(batch, count + 1, edge, edge)
        sides = torch.zeros(batch, count + 1, dtype=torch.int64)
        boxes = torch.zeros(batch, count + 1, 4, dtype=torch.int64)
        for b, c in enumerate(canvases):
            p, s = len(c), c.patches.shape[-1]
            inner = table[b, :p, _BORDER : _BORDER + s, _BORDER : _BORDER + s]
            inner.copy_(c.patches)
            if self.mode == "replace":
                local = torch.arange(s)
                own = c.sides[:, None, None]
                inner += ((local[:, None] < own) & (local < own)).float()
            sides[b, :p], boxes[b, :p] = c.sides, c.boxes
        backgrounds = Backgrounds.of([c.background for c in canvases], self.height, self.width)
        self._set(side, table, sides, boxes, backgrounds, torch.device(device))

    def _set(
        self,
        side: int,
        table: Tensor,
        sides: Tensor,
        boxes: Tensor,
        backgrounds: Backgrounds | None,
        device: torch.device,
    ) -> None:
        self.device, self.side = device, side
        self.backgrounds = backgrounds.to(device) if backgrounds is not None else None
        self.table = table.to(device)
        self.sides = sides.to(device)
        self.boxes = boxes.to(device)
        self._flat = self.table.flatten(1)
        # Patches addressed by global slot b (P + 1) + p, so that one look-up serves any mix of
        # canvases.
        self._all = self.table.view(-1)
        self._x0 = (self.boxes[..., 0] - _BORDER).flatten()
        self._y0 = (self.boxes[..., 1] - _BORDER).flatten()
        edge = self.table.shape[-1]
        self._corners = torch.tensor([0, 1, edge, edge + 1], device=device)
        # Built on first use, so that batches made in data-loader workers stay small in transit.
        self._quad: Tensor | None = None
        self._cells: tuple[int, int, Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.canvases)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([len(self), 1, self.height, self.width])

    def to(self, device: str | torch.device, *args: object, **kwargs: object) -> CanvasBatch:
        """The batch on ``device`` (further arguments, e.g. ``non_blocking``, are ignored)."""
        if torch.device(device) == self.device:
            return self
        moved = object.__new__(CanvasBatch)
        moved.canvases, moved.height, moved.width, moved.mode = (
            self.canvases,
            self.height,
            self.width,
            self.mode,
        )
        moved._set(
            self.side, self.table, self.sides, self.boxes, self.backgrounds, torch.device(device)
        )
        return moved

    def dense(self) -> Tensor:
        """The canvases drawn: float32 [B, 1, H, W] (allocates all of them)."""
        return torch.stack([c.dense() for c in self.canvases]).to(self.device)

    @property
    def _valid(self) -> Tensor:
        """[B, P + 1]: which slots hold a patch that shows anywhere."""
        return self.sides > 0

    def _candidates(self, overlap: Tensor) -> Tensor:
        """Indices [..., K] of the True entries of ``overlap`` [..., P + 1] in paint order,
        padded with the empty slot P; K is the largest count (at least 1)."""
        slots = overlap.shape[-1]
        order = torch.arange(slots, device=self.device)
        key = torch.where(overlap, order, order + slots)
        width = max(1, int(overlap.sum(-1).max()))
        chosen = key.sort(-1).values[..., :width]
        return torch.where(chosen < slots, chosen, slots - 1)

    def _paint(self, ix: Tensor, iy: Tensor, slot: Tensor, values: Tensor | None = None) -> Tensor:
        """Paint the patches of global ``slot`` ([n, 1] or [n, N]) onto the 2x2 pixel blocks
        [n, N, 4] whose top-left pixels are (ix, iy) [n, N] (``None``: onto a blank canvas):
        replace where they cover them, or add."""
        edge = self.table.shape[-1]
        # Local coordinates clamped into the zero border: a look-up off the patch reads 0.
        lx = (ix - self._x0.take(slot)).clamp_(0, edge - 2)
        ly = (iy - self._y0.take(slot)).clamp_(0, edge - 2)
        if self._quad is None and 4 * self.table.numel() * 4 <= _QUAD_BYTES:
            # Each pixel's 2x2 block side by side, so that a look-up reads one row of four.
            t = self.table.flatten(0, 1)
            blocks = [t[:, :-1, :-1], t[:, :-1, 1:], t[:, 1:, :-1], t[:, 1:, 1:]]
            self._quad = torch.stack(blocks, -1).view(-1, 4)
        if self._quad is not None:
            flat = ly.mul_(edge - 1).add_(lx).add_(slot * (edge - 1) ** 2)
            found = self._quad.index_select(0, flat.flatten()).view(*flat.shape, 4)
        else:
            flat = ly.mul_(edge).add_(lx).add_(slot * (edge * edge))
            found = self._all.take(flat[..., None] + self._corners)
        if values is None:
            return found
        if self.mode == "replace":
            return torch.where(found > 0, found, values)
        return values.add_(found)

    def _cell_table(self) -> tuple[int, int, Tensor, Tensor]:
        """(cell side c, cells per row, table [C, B * cells], occupancy [B * cells]): the global
        slots of the patches, in paint order, and their number, that
        touch each c x c cell of the canvas or the pixel column and row just before it (so one
        look-up serves a whole 2x2 bilinear block). Cells are sized to keep the table near 2^20
        cells per batch whatever the canvas size."""
        if self._cells is not None:
            return self._cells
        batch, slots = self.sides.shape
        height, width = self.height, self.width
        cell = max(self.side + 1, math.ceil(math.sqrt(batch * height * width / (1 << 20))))
        across, down = -(-width // cell), -(-height // cell)
        x0, y0, x1, y1 = self.boxes.unbind(-1)
        lo_x, hi_x = (x0 - 1).clamp(0, width - 1), (x1 - 1).clamp(0, width - 1)
        lo_y, hi_y = (y0 - 1).clamp(0, height - 1), (y1 - 1).clamp(0, height - 1)
        shows = self._valid & (x1 > 0) & (x0 <= width) & (y1 > 0) & (y0 <= height)
        b = torch.arange(batch, device=self.device)[:, None].expand(-1, slots)
        p = torch.arange(slots, device=self.device).expand(batch, -1)
        keys, patches = [], []
        for dy in (0, 1):  # c > side, so a box spans at most two cells each way
            for dx in (0, 1):
                cx, cy = lo_x // cell + dx, lo_y // cell + dy
                ok = shows & (cx <= hi_x // cell) & (cy <= hi_y // cell)
                keys.append(((b * down + cy) * across + cx)[ok])
                patches.append(p[ok])
        key, patch = torch.cat(keys), torch.cat(patches)
        order = (key * slots + patch).argsort()
        key, patch = key[order], patch[order]
        rank = torch.arange(len(key), device=self.device) - torch.searchsorted(key, key)
        depth = int(rank.max()) + 1 if len(key) else 1
        # Padding points at each canvas's empty slot.
        empty = torch.arange(batch * down * across, device=self.device) // (down * across)
        table = (empty * slots + slots - 1).repeat(depth, 1)
        table[rank, key] = key // (down * across) * slots + patch
        occupancy = torch.zeros(batch * down * across, dtype=torch.int64, device=self.device)
        occupancy.index_add_(0, key, torch.ones_like(key))
        self._cells = cell, across, table, occupancy
        return self._cells

    def sample(self, grid: Tensor) -> Tensor:
        """Bilinear samples [B, 1, h, w] at ``grid`` [B, h, w, 2] (normalised x, y), equal to
        ``F.grid_sample(dense, grid, "bilinear", "zeros", align_corners=False)`` and
        differentiable in ``grid``. The cost grows with the crop's pixels times the patches
        near it, never with the canvas size."""
        if grid.dim() != 4 or grid.shape[0] != len(self) or grid.shape[-1] != 2:
            raise ValueError(f"grid must be [{len(self)}, h, w, 2], got {list(grid.shape)}")
        batch, h, w, _ = grid.shape
        height, width = self.height, self.width
        # grid_sample's unnormalisation with align_corners=False.
        px = ((grid[..., 0] + 1) * width - 1) / 2
        py = ((grid[..., 1] + 1) * height - 1) / 2
        fx, fy = px.detach().floor().view(batch, -1), py.detach().floor().view(batch, -1)
        right, down = px.view(batch, -1) - fx, py.view(batch, -1) - fy
        # Each crop's pixel bounding box (2x2 blocks from (fx, fy) to (fx + 1, fy + 1)).
        x0, x1 = fx.amin(1, keepdim=True), fx.amax(1, keepdim=True) + 1
        y0, y1 = fy.amin(1, keepdim=True), fy.amax(1, keepdim=True) + 1
        weights_x, weights_y = (1 - right, right), (1 - down, down)
        if not (x0.min() >= 0 and y0.min() >= 0 and x1.max() < width and y1.max() < height):
            # Zero weights for neighbours off the canvas (grid_sample's zero padding).
            weights_x = (
                weights_x[0] * ((fx >= 0) & (fx < width)),
                weights_x[1] * ((fx >= -1) & (fx < width - 1)),
            )
            weights_y = (
                weights_y[0] * ((fy >= 0) & (fy < height)),
                weights_y[1] * ((fy >= -1) & (fy < height - 1)),
            )
        ix, iy = fx.long(), fy.long()
        # Patches overlapping each crop's bounding box, clipped to the canvas.
        x0, y0 = x0.clamp(min=0), y0.clamp(min=0)
        x1, y1 = x1.clamp(max=width - 1), y1.clamp(max=height - 1)
        boxes = self.boxes
        overlap = (
            self._valid
            & (boxes[..., 0] <= x1)
            & (boxes[..., 2] > x0)
            & (boxes[..., 1] <= y1)
            & (boxes[..., 3] > y0)
        )
        counts = overlap.sum(1)
        values = torch.zeros(batch, h * w, 4, device=self.device)
        if int(counts.sum()) <= batch * _ROUND_LIMIT:
            slots = self.sides.shape[1]
            candidates = self._candidates(overlap)
            candidates += torch.arange(batch, device=self.device)[:, None] * slots
            # Round k paints the k-th patch of the crops that have one: the work is the total
            # number of (crop, patch) pairs, not the batch times the most crowded crop's count.
            for k in range(candidates.shape[1]):
                rows = (counts > k).nonzero()[:, 0]
                if len(rows) == batch:
                    values = self._paint(ix, iy, candidates[:, k : k + 1], values if k else None)
                else:
                    values[rows] = self._paint(
                        ix[rows],
                        iy[rows],
                        candidates[rows, k : k + 1],
                        values[rows] if k else None,
                    )
        else:
            # Large crops: only the few patches near each pixel, found through the cell table.
            cell, across, cells, occupancy = self._cell_table()
            # Cell coordinates in floating point: exact here, and cheaper than integer division.
            cx = (fx.clamp(0, width - 1) / cell).floor_()
            cy = (fy.clamp(0, height - 1) / cell).floor_()
            key = (cy * across + cx).long()
            key += torch.arange(batch, device=self.device)[:, None] * (len(occupancy) // batch)
            key, flat_x, flat_y = key.flatten(), ix.flatten(), iy.flatten()
            flat_values = values.view(-1, 4)
            # Most pixels of a wide crop fall in cells no patch touches: paint only the others,
            # and at depth d only those whose cell holds more than d patches.
            hit = (occupancy.take(key) > 0).nonzero()[:, 0]
            for d, depth in enumerate(cells):
                if d:
                    deeper = occupancy.take(key.take(hit)) > d
                    hit = hit.index_select(0, deeper.nonzero()[:, 0])
                if not len(hit):
                    break
                painted = self._paint(
                    flat_x.take(hit),
                    flat_y.take(hit),
                    depth.take(key.take(hit)),
                    flat_values.index_select(0, hit) if d else None,
                )
                flat_values.index_copy_(0, hit, painted)
        if self.mode == "replace":
            values = (values - 1).clamp_(min=0)
        else:
            values = values.clamp_(0.0, 1.0)
        if self.backgrounds is not None:
            values = self.backgrounds.paint(values, self._block_field(ix, iy, h, w))
        v = values.to(grid.dtype).unbind(-1)
        top = weights_x[0] * v[0] + weights_x[1] * v[1]
        bottom = weights_x[0] * v[2] + weights_x[1] * v[3]
        return (weights_y[0] * top + weights_y[1] * bottom).view(batch, 1, h, w)

    def _block_field(self, ix: Tensor, iy: Tensor, h: int, w: int) -> Tensor:
        """The backgrounds' field [B, h * w, 4] at the 2x2 pixel blocks whose top-left pixels are
        (ix, iy) [B, h * w]: on the crops' rows and columns when each crop's grid is
        axis-aligned, as a glimpse's is, else point by point."""
        batch = len(self)
        cols, rows = ix.view(batch, h, w), iy.view(batch, h, w)
        if torch.equal(cols, cols[:, :1].expand_as(cols)) and torch.equal(
            rows, rows[..., :1].expand_as(rows)
        ):
            xs, ys = cols[:, 0], rows[..., 0]
            field = self.backgrounds.grid(torch.cat([xs, xs + 1], -1), torch.cat([ys, ys + 1], -1))
            # [B, (dy, row), (dx, column)] -> [B, row * w + column, 2 dy + dx]
            return field.view(batch, 2, h, 2, w).permute(0, 2, 4, 1, 3).reshape(batch, h * w, 4)
        x = torch.stack([ix, ix + 1, ix, ix + 1], -1)
        y = torch.stack([iy, iy, iy + 1, iy + 1], -1)
        return self.backgrounds.points(x, y)

    def _field_means(self, rows: int, cols: int) -> Tensor:
        """The backgrounds' field averaged over each proxy bin: float64 [B, rows, cols], exact
        where ``_area_points`` takes every pixel (a side of at most ``AREA_PIXELS`` pixels), else
        by the midpoint rule."""
        ys = _area_points(self.height, rows, self.device)
        xs = _area_points(self.width, cols, self.device)
        field = self.backgrounds.grid(xs.expand(len(self), -1), ys.expand(len(self), -1), each=True)
        # Every pixel: adaptive pooling is the bins' means; an equal number of points per bin:
        # it averages each bin's own points.
        return F.adaptive_avg_pool2d(field[:, None].double(), (rows, cols))[:, 0]

    def proxies(self, size: int | tuple[int, int] = 32) -> Tensor:
        """Area-downsampled canvases [B, 1, J, I], equal to ``make_proxy(dense, size)``
        (``F.adaptive_avg_pool2d``), summed from the patches' visible pixels only. With
        backgrounds, a bin is the mean of the field (``_field_means``) less that of the field
        under the ink plus the colour times that of the ink."""
        rows, cols = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if rows < 1 or cols < 1:
            raise ValueError(f"proxy size must be positive, got {size}")
        batch, slots = self.sides.shape
        side, edge = self.side, self.table.shape[-1]
        height, width = self.height, self.width
        x0, y0, x1, y1 = (t[..., None] for t in self.boxes.unbind(-1))  # [B, P + 1, 1]
        # The patches that decide the pixels of each patch: those overlapping it, later ones
        # for "replace" (which hide it), all of them for "add" (which add to it).
        overlap = (
            self._valid[:, :, None]
            & self._valid[:, None, :]
            & (x0 < x1.transpose(1, 2))
            & (x0.transpose(1, 2) < x1)
            & (y0 < y1.transpose(1, 2))
            & (y0.transpose(1, 2) < y1)
        )
        order = torch.arange(slots, device=self.device)
        later = order[None, :, None] < order[None, None, :]
        others = ~torch.eye(slots, dtype=torch.bool, device=self.device)
        overlap &= later if self.mode == "replace" else others
        local = torch.arange(side, device=self.device)
        sums = torch.zeros(batch, rows * cols, dtype=torch.float64, device=self.device)
        shaded = torch.zeros_like(sums)  # the ink times the field under it
        span_rows = min(rows, (side * rows - 1) // height + 2)
        span_cols = min(cols, (side * cols - 1) // width + 2)
        group = max(1, _PROXY_CHUNK // (batch * side * side))
        for start in range(0, slots - 1, group):
            own = torch.arange(start, min(start + group, slots - 1), device=self.device)
            xs, ys = x0[:, own] + local, y0[:, own] + local  # [B, G, S]
            sides = self.sides[:, own, None]
            in_x = (local < sides) & (xs >= 0) & (xs < width)
            in_y = (local < sides) & (ys >= 0) & (ys < height)
            counted = in_y[..., :, None] & in_x[..., None, :]  # [B, G, S, S]
            inner = self.table[:, own, _BORDER : _BORDER + side, _BORDER : _BORDER + side]
            values = (inner - 1).clamp(min=0) if self.mode == "replace" else inner.clone()
            candidates = self._candidates(overlap[:, own])
            for k in range(candidates.shape[-1]):
                index = candidates[..., k]  # [B, G]
                bx0, by0, bx1, by1 = (
                    self.boxes[..., i].gather(1, index)[..., None] for i in range(4)
                )
                rows_in, cols_in = (ys >= by0) & (ys < by1), (xs >= bx0) & (xs < bx1)
                covers = rows_in[..., :, None] & cols_in[..., None, :]
                if self.mode == "replace":
                    counted &= ~covers
                    continue
                # Each pixel is counted once, by the last patch on it.
                counted &= ~(covers & (index > own)[..., None, None])
                lx = (xs - (bx0 - _BORDER)).clamp_(0, edge - 1)
                ly = (ys - (by0 - _BORDER)).clamp_(0, edge - 1)
                flat = (
                    (ly * edge)[..., :, None]
                    + lx[..., None, :]
                    + (index * edge * edge)[..., None, None]
                )
                values += self._flat.gather(1, flat.view(batch, -1)).view_as(values)
            if self.mode == "add":
                values.clamp_(0.0, 1.0)
            visible = (values * counted).to(torch.float64)
            # Sum the block over the bins its rows and columns fall in: R V C^T.
            first_row = ys[..., :1].clamp(min=0) * rows // height  # [B, G, 1]
            first_col = xs[..., :1].clamp(min=0) * cols // width
            row_bins = first_row + torch.arange(span_rows, device=self.device)  # [B, G, r]
            col_bins = first_col + torch.arange(span_cols, device=self.device)
            in_rows = _membership(row_bins, ys, height, rows)  # [B, G, r, S]
            in_cols = _membership(col_bins, xs, width, cols)  # [B, G, c, S]
            block = in_rows @ visible @ in_cols.transpose(-1, -2)  # [B, G, r, c]
            ok = (row_bins < rows)[..., :, None] & (col_bins < cols)[..., None, :]
            index = row_bins[..., :, None] * cols + col_bins[..., None, :]
            index = index.clamp_(max=rows * cols - 1).view(batch, -1)
            sums.scatter_add_(1, index, (block * ok).view(batch, -1))
            if self.backgrounds is not None:
                under = visible * self.backgrounds.grid(xs, ys, each=True)  # [B, G, S, S]
                block = in_rows @ under @ in_cols.transpose(-1, -2)
                shaded.scatter_add_(1, index, (block * ok).view(batch, -1))
        row_area = _bin_lengths(height, rows, self.device)
        col_area = _bin_lengths(width, cols, self.device)
        area = row_area[:, None] * col_area
        means = sums.view(batch, rows, cols) / area
        if self.backgrounds is not None:
            colour = self.backgrounds.colour[:, None, None]
            shade = shaded.view(batch, rows, cols) / area
            means = self._field_means(rows, cols) - shade + colour * means
        return means.to(torch.float32)[:, None]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} canvases of {self.height}x{self.width}, "
            f"mode={self.mode!r}, device={self.device})"
        )


def _bin_edges(bins: Tensor, length: int, count: int) -> tuple[Tensor, Tensor]:
    """The first pixel and the end (exclusive) of bins [...] of adaptive_avg_pool2d's ``count``
    bins along a side of ``length`` pixels: bin i spans floor(i L / J) to ceil((i + 1) L / J)."""
    return bins * length // count, -(-(bins + 1) * length // count)


def _bin_lengths(length: int, bins: int, device: torch.device) -> Tensor:
    """Pixels in each of adaptive_avg_pool2d's ``bins`` along a side of ``length`` pixels."""
    start, end = _bin_edges(torch.arange(bins, device=device, dtype=torch.int64), length, bins)
    return (end - start).to(torch.float64)


def _area_points(length: int, bins: int, device: torch.device) -> Tensor:
    """Points along a side of ``length`` pixels, float64 [N], whose means over each of
    adaptive_avg_pool2d's ``bins`` stand for the bins' means: every pixel of a short side, or
    when they are fewer, the centres of the equal parts of each bin, at most ``AREA_STEP``
    pixels apart and at most ``AREA_SAMPLES``, the same number in every bin."""
    start, end = _bin_edges(torch.arange(bins, device=device, dtype=torch.int64), length, bins)
    samples = min(AREA_SAMPLES, -(-int((end - start).max()) // AREA_STEP))
    if length <= max(AREA_PIXELS, bins * samples):
        return torch.arange(length, device=device, dtype=torch.float64)
    parts = (torch.arange(samples, device=device, dtype=torch.float64) + 0.5) / samples
    return (start[:, None] - 0.5 + (end - start)[:, None] * parts).flatten()


def _membership(bins: Tensor, pixels: Tensor, length: int, count: int) -> Tensor:
    """[..., r, S] float64: whether each pixel [..., S] lies in each bin [..., r] of
    adaptive_avg_pool2d's ``count`` bins along a side of ``length``."""
    start, end = _bin_edges(bins[..., :, None], length, count)
    pixels = pixels[..., None, :]
    return ((pixels >= start) & (pixels < end)).to(torch.float64)


def collate_canvases(items: Sequence[tuple[PatchCanvas, Tensor]]) -> tuple[CanvasBatch, Tensor]:
    """DataLoader ``collate_fn`` for ``(PatchCanvas, label)`` items: a CanvasBatch and the
    stacked labels."""
    canvases, labels = zip(*items, strict=True)
    return CanvasBatch(canvases), torch.utils.data.default_collate(list(labels))
