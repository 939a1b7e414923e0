"""What the model reads of an image: its contrast against the local background.

An object is where an image differs from what surrounds it, brighter or darker: a digit on a
black canvas, a dark mark on a white page, a stain on textured tissue. The model reads
|x - b|, the distance of each pixel from the local background b, in the proxy (what the
attention and the proxy decoder see) and in every crop, so that one model reads bright marks on
black, dark marks on white and either on a smooth textured field alike.

The background is estimated on the proxy, where it is cheap at any image size: the median of
windows three objects (of ``where.object_size`` pixels) and at least three cells wide, one per
cell of the proxy's feature map (a model that aims at cells, ``where.Cells``), or of the whole
proxy (``where.Free``, whose objects span a large part of the
image), interpolated bilinearly between the windows' centres. A median ignores what covers less
than half of its window, so that objects do not lift their own background; on a black canvas
whose marks cover less than half of every window the background is exactly zero and the
model reads the image itself, bit for bit. A crop's background is the background map sampled
at the crop's points; where a box reaches past the image, which a crop reads as zeros, so does
its background, so that the world beyond the border reads as background, not as a dark frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import CELL, CellsWhere, SaccadeConfig
from .glimpse import ALIGN_CORNERS, box_grid

# A window spans at least this many objects (and cells) a side, so that a mark lifts its
# window's median only where marks crowd more than half of it.
WINDOW_OBJECTS = 3
MEDIAN_BLOCKS = 256  # windows whose medians are taken together


def window_of(config: SaccadeConfig, shortest_side: int | float) -> int | None:
    """The side in proxy pixels of the windows whose median is the background, one per cell, on
    images whose shortest side is ``shortest_side`` pixels: three cells, or an odd number of
    cells spanning three objects of ``where.object_size`` pixels if that is more; None for one
    window over the whole proxy."""
    where = config.where
    if not isinstance(where, CellsWhere):
        return None
    side = config.proxy_side(shortest_side, shortest_side)
    objects = WINDOW_OBJECTS * where.object_size * side / shortest_side  # proxy pixels
    cells = max(WINDOW_OBJECTS, math.ceil(objects / CELL))
    return CELL * (cells + 1 - cells % 2)  # odd, so that a window centres on its cell


def local_background(proxies: Tensor, window: int | None) -> Tensor:
    """The background [B, C, J, J] under proxies [B, C, J, J], each channel on its own: the
    median of the ``window`` x ``window`` pixels around each cell of side ``CELL`` (mirrored at
    the border), interpolated between the cells' centres; with ``window=None`` the median of the
    whole proxy."""
    batch, channels, height, width = proxies.shape
    flat = proxies.reshape(batch * channels, 1, height, width)
    if window is None or window >= min(height, width):
        level = flat.flatten(1).median(1).values
        return level.view(batch, channels, 1, 1).expand_as(proxies)
    margin = (window - CELL) // 2
    padded = F.pad(flat, (margin,) * 4, mode="reflect")
    medians = window_medians(padded, window).unsqueeze(1)  # [B * C, 1, J / CELL, J / CELL]
    background = F.interpolate(medians, size=(height, width), mode="bilinear", align_corners=False)
    return background.view_as(proxies)


def window_medians(padded: Tensor, window: int) -> Tensor:
    """The lower median (torch.median's) [N, G, G'] of each ``window`` x ``window`` block of
    ``padded`` [N, 1, H, W] at a stride of ``CELL``. Of non-negative values, a block more than
    half of whose values are 0, the least there is, has median 0: a box filter counts the zeros,
    and only the other blocks are gathered and sorted. On a dark canvas nearly every block is
    such, so that the cost does not grow with the blocks' area."""
    views = padded[:, 0].unfold(1, window, CELL).unfold(2, window, CELL)  # no copy
    blocks_shape = views.shape[:3]  # [N, G, G']
    lower = (window * window - 1) // 2  # the median's place among the sorted values
    if bool((padded < 0).any()):
        needed = torch.ones(blocks_shape, dtype=torch.bool, device=padded.device)
    else:
        zeros = F.avg_pool2d((padded == 0).float(), window, stride=CELL) * window * window
        needed = zeros[:, 0].round() <= lower
    medians = padded.new_zeros(blocks_shape)
    # A few hundred blocks at a time: all of a large proxy's at once would copy megabytes.
    for part in needed.nonzero().split(MEDIAN_BLOCKS):
        image, row, col = part.unbind(1)
        blocks = views[image, row, col]  # [K, window, window]
        medians[image, row, col] = kth_smallest(blocks.flatten(1), lower)
    return medians


def kth_smallest(values: Tensor, k: int) -> Tensor:
    """The ``k``-th smallest (from 0) of each row of ``values`` [K, N]: numpy's selection on
    the CPU, four to five times faster than torch's sort-based median on a 320² proxy's
    windows, and torch's elsewhere (another device, a dtype numpy lacks)."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        selected = np.partition(values.detach().numpy(), k, axis=-1)[:, k]
        return torch.from_numpy(selected)
    return values.kthvalue(k + 1, -1).values


def against(values: Tensor, background: Tensor) -> Tensor:
    """The contrast |x - b| of values against their background (the same shape)."""
    return (values - background).abs()


def background_crops(
    background: Tensor,
    box: tuple[Tensor, Tensor, Tensor, Tensor],
    size: int,
    antialias: int,
    height: int | Tensor,
    width: int | Tensor,
) -> Tensor:
    """The background [B, C, size, size] under the crops of the boxes (sx, sy, cx, cy) on images
    of ``height`` x ``width`` pixels (ints, or [B]), sampled as ``glimpse.sample_box`` samples
    the images: the map [B, C, J, J] held at its edge beyond it, times the share of each
    point's bilinear footprint that lies inside the image, as the crop reads zeros outside."""
    grid = box_grid(box, size * antialias)
    under = F.grid_sample(
        background,
        grid.to(background.dtype),
        mode="bilinear",
        padding_mode="border",
        align_corners=ALIGN_CORNERS,
    )
    under = under * inside(grid, height, width).unsqueeze(1)
    return under if antialias == 1 else F.avg_pool2d(under, antialias)


def inside(grid: Tensor, height: int | Tensor, width: int | Tensor) -> Tensor:
    """[B, h, w]: the weight bilinear sampling with zero padding gives an image of ``height`` x
    ``width`` pixels at the normalised points ``grid`` [B, h, w, 2]: 1 inside, falling to 0
    within a pixel of the border."""

    def along(u: Tensor, pixels: int | Tensor) -> Tensor:
        pixels = torch.as_tensor(pixels, dtype=u.dtype, device=u.device).reshape(-1, 1, 1)
        p = ((u + 1) * pixels - 1) / 2  # pixel coordinate, align_corners=False
        return torch.minimum(p + 1, pixels - p).clamp(0, 1)

    return along(grid[..., 0], width) * along(grid[..., 1], height)
