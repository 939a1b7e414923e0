"""The spatial transformer: glimpse coordinates z = (scale, x, y) to crops of the full image.

Plain functions, as in Pyro's ``examples/air``. A latent z lives in R^3; these functions squash it
smoothly into a valid box so that every coordinate, the scale included, gets a gradient (the
authors' ``max(|s|, 1/p)`` left the scale unlearned).

Conventions: the scale is the crop side as a fraction of the image's *shorter* side, so crops
are square in pixels on images of any aspect ratio; x and y place the crop centre, bounded so the
crop always lies inside the image. Coordinates follow ``F.affine_grid`` with
``align_corners=False``: normalised -1 and 1 are the outer edges of the border pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ALIGN_CORNERS = False


def crop_scale(z_scale: Tensor, scale_min: float, scale_max: float) -> Tensor:
    """The crop side, as a fraction of the shorter image side, of the scale coordinate of z."""
    return scale_min + (scale_max - scale_min) * torch.sigmoid(z_scale)


def squash(z: Tensor, scale_min: float, scale_max: float) -> tuple[Tensor, Tensor, Tensor]:
    """Map unconstrained z [..., 3] to (scale in [scale_min, scale_max], x, y in [-1, 1])."""
    return crop_scale(z[..., 0], scale_min, scale_max), torch.tanh(z[..., 1]), torch.tanh(z[..., 2])


def normalised_box(
    z: Tensor, height: int | Tensor, width: int | Tensor, scale_min: float, scale_max: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Half-sides (sx, sy) and centre (cx, cy) of the crop in normalised [-1, 1] coordinates."""
    scale, x, y = squash(z, scale_min, scale_max)
    # Photos of different sizes give their sides as tensors [B].
    short = torch.minimum(height, width) if isinstance(height, Tensor) else min(height, width)
    sx = scale * (short / width)
    sy = scale * (short / height)
    # The centre may move only as far as keeps the whole crop inside the image.
    return sx, sy, x * (1 - sx), y * (1 - sy)


def affine_theta(z: Tensor, height: int, width: int, scale_min: float, scale_max: float) -> Tensor:
    """Affine matrices [B, 2, 3] mapping the output grid onto the image (Jaderberg et al.)."""
    sx, sy, cx, cy = normalised_box(z, height, width, scale_min, scale_max)
    zeros = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zeros, cx], -1), torch.stack([zeros, sy, cy], -1)], -2)


def extract_glimpse(
    images: Tensor,
    z: Tensor,
    size: int,
    scale_min: float,
    scale_max: float,
    antialias: int = 1,
) -> Tensor:
    """Bilinearly sample a ``size``x``size`` crop of each image [B, C, H, W] at z [B, 3].

    The cost depends on ``size`` only, not on the image's resolution. With ``antialias`` k > 1
    each crop pixel averages k x k samples: one sample per pixel misses thin strokes when the
    window is several times wider than the crop. ``images`` may also be a lazy source with a
    ``glimpse(z, size, scale_min, scale_max)`` method (photos read from disk,
    ``data.PhotoBatch``), which then crops itself, or with a ``sample(grid)`` method (canvases
    drawn from their patches, ``data.CanvasBatch``).
    """
    if hasattr(images, "glimpse"):
        crops = images.glimpse(z, size * antialias, scale_min, scale_max)
        return crops if antialias == 1 else F.avg_pool2d(crops, antialias)
    _, _, height, width = images.shape
    box = normalised_box(z, height, width, scale_min, scale_max)
    return sample_box(images, box, size, antialias)


def sample_box(
    images: Tensor, box: tuple[Tensor, Tensor, Tensor, Tensor], size: int, antialias: int = 1
) -> Tensor:
    """Crops [B, C, size, size] of the boxes (sx, sy, cx, cy), half-sides and centres in
    normalised coordinates, bilinearly sampled from a tensor or a lazy ``sample(grid)`` source."""
    crops = sample_grid(images, box_grid(box, size * antialias))
    return crops if antialias == 1 else F.avg_pool2d(crops, antialias)


def box_grid(box: tuple[Tensor, Tensor, Tensor, Tensor], side: int) -> Tensor:
    """The normalised points [B, side, side, 2] at which a crop of the boxes (sx, sy, cx, cy)
    samples its image."""
    sx, sy, cx, cy = box
    # F.affine_grid's points, bit for bit, without its batched matrix product: a box is a
    # scale and a shift along each axis, and a 3-wide bmm costs more than the crop's sampling.
    base = torch.linspace(-1, 1, side, dtype=sx.dtype, device=sx.device)
    if not ALIGN_CORNERS:  # the pixels' centres, not their outer edges
        base = base * (side - 1) / side
    x = base * sx.unsqueeze(-1) + cx.unsqueeze(-1)  # [B, side]
    y = base * sy.unsqueeze(-1) + cy.unsqueeze(-1)
    shape = (len(sx), side, side)
    return torch.stack([x.unsqueeze(1).expand(shape), y.unsqueeze(2).expand(shape)], -1)


def sample_grid(images: Tensor, grid: Tensor) -> Tensor:
    """Bilinear samples [B, C, h, w] of images [B, C, H, W] at normalised points ``grid``
    [B, h, w, 2], from a tensor or a lazy ``sample(grid)`` source."""
    if isinstance(images, Tensor):
        return F.grid_sample(
            images,
            grid.to(images.dtype),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=ALIGN_CORNERS,
        )
    return images.sample(grid)


class Repeated:
    """``times`` copies of a batch of images [B, C, H, W] standing in for [times * B, C, H, W]
    (copy s of image b at row s * B + b) without copying any pixel: one pass of the model then
    draws ``times`` posterior samples per image."""

    def __init__(self, images: Tensor, times: int) -> None:
        self.images = images
        self.times = times

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def shape(self) -> torch.Size:
        batch, *rest = self.images.shape
        return torch.Size([self.times * batch, *rest])

    @property
    def sides(self) -> Tensor:
        """[times * B, 2] (height, width), for images of different sizes."""
        return self.images.sides.repeat(self.times, 1)

    def sample(self, grid: Tensor) -> Tensor:
        batch, (_, height, width, _) = self.images.shape[0], grid.shape
        if not isinstance(self.images, Tensor):
            # A lazy source reads what one crop's box touches: one call per copy keeps each
            # call's boxes as small as the crops.
            return torch.cat([sample_grid(self.images, part) for part in grid.split(batch)])
        # A tensor: one call for all copies, each image's grids stacked along the height (a
        # bilinear sample depends on its own point alone).
        stacked = grid.view(self.times, batch, height, width, 2).transpose(0, 1)
        crops = sample_grid(self.images, stacked.reshape(batch, -1, width, 2))
        crops = crops.view(batch, crops.shape[1], self.times, height, width)
        return crops.permute(2, 0, 1, 3, 4).reshape(grid.shape[0], -1, height, width)

    def glimpse(self, z: Tensor, size: int, scale_min: float, scale_max: float) -> Tensor:
        if not hasattr(self.images, "glimpse"):
            box = normalised_box(z, *self.images.shape[-2:], scale_min, scale_max)
            return sample_box(self, box, size)
        chunks = z.split(self.images.shape[0])
        return torch.cat([self.images.glimpse(c, size, scale_min, scale_max) for c in chunks])


def image_sides(images: Tensor) -> tuple[int | Tensor, int | Tensor]:
    """Height and width in pixels of images [B, C, H, W]: ints, or tensors [B] for photos of
    different sizes (``data.PhotoBatch``, whose shape has -1 for them)."""
    height, width = images.shape[-2:]
    if height > 0:
        return height, width
    sides = images.sides
    return sides[:, 0], sides[:, 1]


def repeat_images(images: Tensor, times: int) -> Tensor:
    """``times`` copies of images [B, C, H, W], as rows s * B + b: a view of a single tensor
    image, a ``Repeated`` source otherwise."""
    if times == 1:
        return images
    if isinstance(images, Tensor) and images.shape[0] == 1:
        return repeat_rows(images, times)
    return Repeated(images, times)


def repeat_rows(values: Tensor, times: int) -> Tensor:
    """``times`` copies of the rows of ``values`` [B, ...], as rows s * B + b: a view of a
    single row, not a copy, since one image's draws all read the same."""
    if len(values) == 1:
        return values.expand(times, *values.shape[1:])
    return values.repeat(times, *[1] * (values.dim() - 1))


def pixel_boxes(box: tuple[Tensor, Tensor, Tensor, Tensor], height: int, width: int) -> Tensor:
    """Normalised boxes (sx, sy, cx, cy) as pixel boxes (x0, y0, x1, y1), shape [..., 4]."""
    sx, sy, cx, cy = box
    x0 = (cx - sx + 1) / 2 * width
    x1 = (cx + sx + 1) / 2 * width
    y0 = (cy - sy + 1) / 2 * height
    y1 = (cy + sy + 1) / 2 * height
    return torch.stack([x0, y0, x1, y1], -1)


def glimpse_boxes(z: Tensor, height: int, width: int, scale_min: float, scale_max: float) -> Tensor:
    """Crop boxes (x0, y0, x1, y1) in the image's pixel coordinates, shape [..., 4]."""
    return pixel_boxes(normalised_box(z, height, width, scale_min, scale_max), height, width)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Pixel boxes (x0, y0, x1, y1) [..., 4] cut to the image [0, width] x [0, height]."""
    return torch.minimum(boxes.clamp(min=0), boxes.new_tensor([width, height, width, height]))


def box_scale(boxes: Tensor, height: int, width: int) -> Tensor:
    """The scale of crop boxes [..., 4] (x0, y0, x1, y1): crops are square in pixels, so their
    side over the image's shorter side, the inverse of the scale convention above."""
    return (boxes[..., 2] - boxes[..., 0]) / min(height, width)


def box_share(box: Tensor, boxes: Tensor) -> Tensor:
    """The largest share of ``box`` [4] (x0, y0, x1, y1) inside any of ``boxes`` [N, 4]."""
    x0, y0, x1, y1 = box.unbind(-1)
    width = (boxes[:, 2].clamp(max=x1) - boxes[:, 0].clamp(min=x0)).clamp(min=0)
    height = (boxes[:, 3].clamp(max=y1) - boxes[:, 1].clamp(min=y0)).clamp(min=0)
    return (width * height).max() / ((x1 - x0) * (y1 - y0))


def unsquash(
    scale: Tensor, x: Tensor, y: Tensor, scale_min: float, scale_max: float, eps: float = 1e-6
) -> Tensor:
    """Inverse of :func:`squash`: the z that puts a crop of ``scale`` at centre (x, y)."""
    u = ((scale - scale_min) / (scale_max - scale_min)).clamp(eps, 1 - eps)
    return torch.stack(
        [
            torch.logit(u),
            torch.atanh(x.clamp(-1 + eps, 1 - eps)),
            torch.atanh(y.clamp(-1 + eps, 1 - eps)),
        ],
        -1,
    )


def z_at(z_scale: Tensor, centre: Tensor, scale_min: float, scale_max: float) -> Tensor:
    """The z [..., 3] whose crop, of scale ``squash(z_scale)``, is centred on ``centre`` [..., 2]
    (x, y in normalised [-1, 1] coordinates), or as near as the image's border allows.
    Exact on square images; on others the crop lands slightly further out along the long side."""
    scale = crop_scale(z_scale, scale_min, scale_max)
    reach = (centre / (1 - scale).unsqueeze(-1)).clamp(-0.98, 0.98)
    return torch.cat([z_scale.unsqueeze(-1), torch.atanh(reach)], -1)
