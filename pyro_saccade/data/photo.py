"""One photo of any size on disk: crops and proxies without holding the whole photo in memory.

A :class:`Photo` knows its size from the file header. It reads a region at a reduced scale,
decoding only what that needs:

- JPEG: libjpeg's DCT-domain scaling (PIL's ``draft``) decodes the photo at 1/2, 1/4 or 1/8 of
  its size, so a 32x32 crop of a 1200-pixel box costs a 1/8-scale decode. JPEG has no random
  access, so each decode runs over the whole file, but it never holds more than that scale.
- TIFF in tiles or strips (uncompressed, deflate or JPEG; the layout ``vips tiffsave --tile`` and
  :func:`~pyro_saccade.data.tiff.save_tiled_tiff` write): only the tiles or strips under the
  region are read (``tiff.py``).
- Anything else (PNG, BMP, WebP, LZW-compressed TIFF, ``.npy``) cannot be read in parts: the
  photo is decoded once, whole, and kept while the ``Photo`` lives.

Pixel coordinates are those of the displayed photo: EXIF orientation is applied, as
:func:`~pyro_saccade.data.load_image` does. :class:`PhotoBatch` is what the model receives in place
of an image tensor: ``extract_glimpse`` hands it the glimpses, and it samples each crop with
``grid_sample`` from a small region tensor, so gradients reach z exactly as they would on a
full image.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..glimpse import ALIGN_CORNERS, affine_theta, glimpse_boxes
from .canvas import CanvasBatch
from .images import ImageError, _read_pil, load_image, match_channels
from .proxy import ProxySide, make_proxy, proxy_shape, side_of
from .tiff import ORIENTATION, TiffLayout

REDUCTIONS = (8, 4, 2, 1)  # the scales libjpeg decodes at, used for every format alike


def _stored_box(
    box: tuple[int, int, int, int], orientation: int, width: int, height: int
) -> tuple[int, int, int, int]:
    """The box in the file's stored pixels that shows as ``box`` once EXIF ``orientation`` is
    applied; ``width`` and ``height`` are the stored sides."""
    x0, y0, x1, y1 = box
    return {
        1: (x0, y0, x1, y1),
        2: (width - x1, y0, width - x0, y1),
        3: (width - x1, height - y1, width - x0, height - y0),
        4: (x0, height - y1, x1, height - y0),
        5: (y0, x0, y1, x1),
        6: (y0, height - x1, y1, height - x0),
        7: (width - y1, height - x1, width - y0, height - x0),
        8: (width - y1, x0, width - y0, x1),
    }[orientation]


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels [C, H, W] as displayed under EXIF ``orientation`` (views, no copies)."""
    if orientation in (5, 6, 7, 8):
        array = array.swapaxes(1, 2)
    flips = {2: (2,), 3: (1, 2), 4: (1,), 6: (2,), 7: (1, 2), 8: (1,)}.get(orientation, ())
    return np.flip(array, flips) if flips else array


def _reduce(array: np.ndarray, factor: int) -> np.ndarray:
    """Area-average [C, H, W] pixels over ``factor``-sided blocks into float32 in [0, 1].

    Blocks start at the array's origin; partial blocks at the far edges average what they hold.
    """
    unit = float(np.iinfo(array.dtype).max) if array.dtype.kind in "ui" else 1.0
    if factor == 1:
        return np.asarray(array, dtype=np.float32) / unit
    channels, height, width = array.shape
    rows, cols = -(-height // factor), -(-width // factor)
    padded = np.zeros((channels, rows * factor, cols * factor), dtype=array.dtype)
    padded[:, :height, :width] = array
    sums = padded.reshape(channels, rows, factor, cols, factor).sum((2, 4), dtype=np.float32)
    row_counts = np.minimum(factor, height - factor * np.arange(rows))
    col_counts = np.minimum(factor, width - factor * np.arange(cols))
    return sums / (np.outer(row_counts, col_counts) * unit).astype(np.float32)


def reduction_for(side: float, target: float) -> int:
    """The largest reduction in REDUCTIONS that still leaves ``side / reduction >= target``."""
    return next((r for r in REDUCTIONS if side / r >= target), 1)


class Photo:
    """An image file read lazily: its size from the header, crops and proxies at reduced cost.

    ``channels`` (1, 3 or None for the file's own) is the number of channels every read returns.
    ``cache_pixels`` bounds the decoded pixels kept between reads (None: keep all, so a photo
    that cannot be read in parts is decoded once).
    """

    def __init__(
        self, path: str | Path, channels: int | None = 3, cache_pixels: int | None = None
    ) -> None:
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels}")
        self.path = Path(path)
        self.channels = channels
        self.cache_pixels = cache_pixels
        self._decoded: dict[int, np.ndarray] = {}
        self.orientation = 1
        self._layout: TiffLayout | None = None
        if not self.path.is_file():
            raise ImageError(f"{self.path}: no such file")
        if self.path.stat().st_size == 0:
            raise ImageError(f"{self.path}: file is empty")
        if self.path.suffix.lower() == ".npy":
            self.format = "npy"
            native, height, width = self._full().shape
        else:
            native, height, width = self._open_header()
        self.native_channels = native
        self.height, self.width = height, width

    def _open_header(self) -> tuple[int, int, int]:
        """Read format, stored size and orientation; returns (channels, displayed H, W)."""
        try:
            with Image.open(self.path) as image:
                self.format = image.format
                self.stored_width, self.stored_height = image.size
                if image.format == "TIFF":
                    self._layout = TiffLayout.of(image)
                    self.orientation = image.tag_v2.get(ORIENTATION, 1)
                else:
                    self.orientation = image.getexif().get(ORIENTATION, 1)
                gray = image.mode in ("1", "L", "LA", "La", "I", "F") or image.mode.startswith(
                    "I;16"
                )
        except UnidentifiedImageError as error:
            raise ImageError(f"{self.path}: not an image") from error
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise ImageError(f"{self.path}: unreadable image header ({error})") from error
        if self.orientation not in range(1, 9):
            self.orientation = 1
        height, width = self.stored_height, self.stored_width
        if self.orientation in (5, 6, 7, 8):  # displayed turned by 90 degrees
            height, width = width, height
        return (1 if gray else 3), height, width

    # -- what the photo is ------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of every full-resolution read, like an image tensor."""
        return (self.channels or self.native_channels, self.height, self.width)

    @property
    def streams(self) -> bool:
        """Whether reads avoid decoding the whole photo at full resolution."""
        return self.format == "JPEG" or self._layout is not None

    def __repr__(self) -> str:
        return f"Photo({str(self.path)!r}, {self.width}x{self.height}, {self.format})"

    def __getstate__(self) -> dict:
        # Sent to and from data-loader workers: without decoded pixels.
        return {**self.__dict__, "_decoded": {}}

    # -- reading ----------------------------------------------------------------------------

    def read_region(self, box: tuple[int, int, int, int], reduce: int = 1) -> Tensor:
        """Pixels of ``box`` (x0, y0, x1, y1) in displayed pixels, area-averaged over ``reduce``
        sided blocks starting at (x0, y0): float32 [C, ceil(h / reduce), ceil(w / reduce)].
        """
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, x1 = max(0, min(x0, self.width)), max(0, min(x1, self.width))
        y0, y1 = max(0, min(y0, self.height)), max(0, min(y1, self.height))
        if x1 <= x0 or y1 <= y0:
            raise ValueError(
                f"{self.path}: empty region {box} of a {self.width}x{self.height} photo"
            )
        if not self.streams:
            return self._finish(_reduce(self._full()[:, y0:y1, x0:x1], reduce))
        stored = _stored_box(
            (x0, y0, x1, y1), self.orientation, self.stored_width, self.stored_height
        )
        if self._layout is None:  # JPEG: decode at the coarsest scale that the region allows
            # The decoded blocks start at the stored origin: on a flipped photo whose side is no
            # multiple of the scale they sit up to one reduced pixel off the displayed grid.
            scale, image = self._jpeg(reduce)
            sx0, sy0, sx1, sy1 = stored
            array = image[:, sy0 // scale : -(-sy1 // scale), sx0 // scale : -(-sx1 // scale)]
            reduce = max(reduce // scale, 1)
        else:
            scale, array = self._tiles(stored, reduce)
            reduce = reduce // scale
        return self._finish(_reduce(_orient(array, self.orientation), reduce))

    def proxy(self, size: ProxySide = 32) -> Tensor:
        """The proxy [C, J, I] of side ``size`` (``proxy_shape``): area-averaged, from a decode
        at reduced scale."""
        size = side_of(size, self.height, self.width)
        shape = proxy_shape(self.height, self.width, size)
        if not self.streams:  # exactly what make_proxy gives on the image tensor
            return make_proxy(self._finish(_reduce(self._full(), 1)), shape)
        reduce = reduction_for(min(self.stored_height, self.stored_width), 2 * size)
        if self._layout is None:
            scale, image = self._jpeg(reduce)
            array = _reduce(image, max(reduce // scale, 1))
        else:
            array = self._tiles_reduced(reduce)
        return make_proxy(self._finish(_orient(array, self.orientation)), shape)

    def view(self, side: int = 1024) -> Tensor:
        """The whole photo with its longer side reduced to at most ``side`` (for pictures)."""
        reduce = reduction_for(max(self.height, self.width), side)
        image = self.read_region((0, 0, self.width, self.height), reduce)
        longer = max(image.shape[-2:])
        if longer <= side:
            return image
        size = [max(1, round(s * side / longer)) for s in image.shape[-2:]]
        return F.interpolate(image[None], size=size, mode="area")[0]

    # -- decoding ---------------------------------------------------------------------------

    def _finish(self, array: np.ndarray) -> Tensor:
        image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return match_channels(image, self.channels)

    def _keep(self, key: int, array: np.ndarray) -> None:
        """Remember a decode if the cache budget allows it, dropping older ones first."""
        pixels = array.shape[-1] * array.shape[-2]
        budget = self.cache_pixels
        if budget is not None and pixels > budget:
            return
        while budget is not None and self._decoded:
            used = sum(a.shape[-1] * a.shape[-2] for a in self._decoded.values())
            if used + pixels <= budget:
                break
            self._decoded.pop(next(iter(self._decoded)))
        self._decoded[key] = array

    def _full(self) -> np.ndarray:
        """The whole displayed photo [C, H, W] in its stored type: for unstreamable formats."""
        if 1 in self._decoded:
            return self._decoded[1]
        array = None if self.format == "npy" else _read_pil(self.path)
        if array is None or array.dtype not in (np.uint8, np.uint16):
            array = load_image(self.path).numpy()  # floats and .npy: validated, in [0, 1]
        self._keep(1, array)
        return array

    def _jpeg(self, reduce: int) -> tuple[int, np.ndarray]:
        """(scale, stored pixels [C, H / scale, W / scale]) of a JPEG decoded at 1/scale."""
        if reduce in self._decoded:
            return reduce, self._decoded[reduce]
        try:
            with Image.open(self.path) as image:
                image.draft(
                    None, (-(-self.stored_width // reduce), -(-self.stored_height // reduce))
                )
                if image.mode not in ("L", "RGB"):  # CMYK
                    image = image.convert("RGB")
                array = np.asarray(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(f"{self.path}: truncated or corrupt image ({error})") from error
        scale = round(self.stored_width / image.width)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        self._keep(scale, array)
        return scale, array

    def _tiles(self, box: tuple[int, int, int, int], reduce: int = 1) -> tuple[int, np.ndarray]:
        """(scale, stored pixels [C, h / scale, w / scale]) of ``box``, decoding only the tiles
        or strips under it; JPEG tiles are decoded at 1/``reduce`` when the box allows."""
        layout = self._layout
        scale = layout.scale_for(box, reduce)
        x0, y0, x1, y1 = box
        shape = (-(-(y1 - y0) // scale), -(-(x1 - x0) // scale), layout.samples)
        out = np.zeros(shape, dtype=layout.dtype)
        try:
            with open(self.path, "rb") as f:
                for index, bx, by in layout.blocks(box):
                    f.seek(layout.offsets[index])
                    block = layout.decode(f.read(layout.counts[index]), scale)
                    # The overlap of block and box, in pixels: box and block starts are
                    # multiples of the scale, so it cuts both at the same reduced pixels.
                    ox0, oy0 = max(bx, x0), max(by, y0)
                    ox1 = min(bx + block.shape[1] * scale, x1)
                    oy1 = min(by + block.shape[0] * scale, y1)
                    out[
                        (oy0 - y0) // scale : -(-(oy1 - y0) // scale),
                        (ox0 - x0) // scale : -(-(ox1 - x0) // scale),
                    ] = block[
                        (oy0 - by) // scale : -(-(oy1 - by) // scale),
                        (ox0 - bx) // scale : -(-(ox1 - bx) // scale),
                    ]
        except (OSError, ValueError, IndexError, zlib.error, SyntaxError) as error:
            raise ImageError(f"{self.path}: corrupt tile data ({error})") from error
        return scale, out.transpose(2, 0, 1)[: 1 if layout.samples < 3 else 3]  # alpha dropped

    def _tiles_reduced(self, reduce: int) -> np.ndarray:
        """The whole stored photo area-averaged by ``reduce``, read in bands of whole blocks."""
        band = math.lcm(self._layout.block_height, reduce)
        band *= max(1, 256 // band)
        width, height = self.stored_width, self.stored_height
        bands = []
        for y in range(0, height, band):
            scale, array = self._tiles((0, y, width, min(y + band, height)), reduce)
            bands.append(_reduce(array, reduce // scale))
        return np.concatenate(bands, axis=1)


class PhotoBatch:
    """Photos that stay on disk, standing in for an image tensor [B, C, H, W] in the model.

    ``extract_glimpse`` delegates to :meth:`glimpse`. The proxies come with the batch: a
    tensor [B, C, J, I] when they share a shape, else a list of [C, J, I] (``mixed``), which
    the model reads photo by photo. The photos may differ in size: every crop is taken in its
    own photo.
    """

    def __init__(
        self,
        photos: Sequence[Photo],
        proxies: Tensor | Sequence[Tensor],
        device: str | torch.device = "cpu",
    ) -> None:
        if len(photos) != len(proxies):
            raise ValueError(f"{len(photos)} photos but {len(proxies)} proxies")
        if not isinstance(proxies, Tensor) and len({p.shape for p in proxies}) == 1:
            proxies = torch.stack(list(proxies))
        self.photos = list(photos)
        self.proxies = proxies if isinstance(proxies, Tensor) else list(proxies)
        self.device = torch.device(device)

    @classmethod
    def of(cls, photos: Sequence[Photo], proxy: ProxySide = 32) -> PhotoBatch:
        """A batch with freshly computed proxies of side ``proxy`` (``proxy_shape``)."""
        return cls(photos, [photo.proxy(proxy) for photo in photos])

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def mixed(self) -> bool:
        """Whether the photos' proxies differ in shape (photos of different aspect ratios)."""
        return not isinstance(self.proxies, Tensor)

    def proxy_of(self, i: int) -> Tensor:
        """Photo i's proxy [1, C, J, I]."""
        return self.proxies[i][None] if self.mixed else self.proxies[i : i + 1]

    @property
    def shape(self) -> torch.Size:
        """[B, C, H, W]; H and W are -1 when the photos differ in size."""
        sizes = {photo.shape for photo in self.photos}
        channels, height, width = (
            sizes.pop() if len(sizes) == 1 else (self.proxy_of(0).shape[1], -1, -1)
        )
        return torch.Size([len(self), channels, height, width])

    @property
    def sides(self) -> Tensor:
        """[B, 2]: each photo's height and width in pixels."""
        sides = [photo.shape[-2:] for photo in self.photos]
        return torch.tensor(sides, dtype=self.proxy_of(0).dtype, device=self.device)

    def to(self, device: str | torch.device) -> PhotoBatch:
        proxies = [p.to(device) for p in self.proxies] if self.mixed else self.proxies.to(device)
        return PhotoBatch(self.photos, proxies, device)

    def sample(self, grid: Tensor) -> Tensor:
        """Bilinear samples [B, C, h, w] of the photos at normalised points ``grid``
        [B, h, w, 2], as ``F.grid_sample`` on the decoded photos (``sample_photo``)."""
        return torch.cat([sample_photo(photo, grid[i]) for i, photo in enumerate(self.photos)])

    def glimpse(self, z: Tensor, size: int, scale_min: float, scale_max: float) -> Tensor:
        """Crops [B, C, size, size] at glimpses z [B, 3], as extract_glimpse on the full photos."""
        return torch.cat(
            [
                glimpse_photo(photo, z[i], size, scale_min, scale_max)
                for i, photo in enumerate(self.photos)
            ]
        )


def sample_photo(photo: Photo, grid: Tensor) -> Tensor:
    """Bilinear samples [1, C, h, w] of ``photo`` at normalised points ``grid`` [h, w, 2], as
    ``F.grid_sample`` on the decoded photo (exactly so at reduction 1), differentiable in the
    grid. Only the region under the points is read, at the coarsest scale that still gives
    ``w`` pixels across it, with a margin for bilinear sampling."""
    height, width = photo.height, photo.width
    points = grid.detach()
    xs = ((points[..., 0] + 1) * width - 1) / 2
    ys = ((points[..., 1] + 1) * height - 1) / 2
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    reduce = reduction_for(min(x1 - x0, y1 - y0), grid.shape[1])
    rx0 = min(max(0, (math.floor(x0 / reduce) - 1) * reduce), width - 1)
    ry0 = min(max(0, (math.floor(y0 / reduce) - 1) * reduce), height - 1)
    rx1 = max(min(width, (math.ceil(x1 / reduce) + 2) * reduce), rx0 + 1)
    ry1 = max(min(height, (math.ceil(y1 / reduce) + 2) * reduce), ry0 + 1)
    region = photo.read_region((rx0, ry0, rx1, ry1), reduce).to(grid.device, grid.dtype)
    h, w = region.shape[-2:]
    # A photo coordinate u is pixel ((u + 1) W - 1) / 2; in the region read at reduction r
    # from (rx0, ry0) that is the normalised coordinate ((u + 1) W - 2 rx0) / (r w) - 1.
    local = torch.stack(
        [
            ((grid[..., 0] + 1) * width - 2 * rx0) / (reduce * w) - 1,
            ((grid[..., 1] + 1) * height - 2 * ry0) / (reduce * h) - 1,
        ],
        -1,
    )
    return F.grid_sample(
        region[None],
        local[None],
        mode="bilinear",
        padding_mode="zeros",
        align_corners=ALIGN_CORNERS,
    )


def as_batch(images: Sequence[Tensor] | Sequence[Photo], proxy: ProxySide) -> Tensor | PhotoBatch:
    """Images [C, H, W] of one size stacked as [B, C, H, W], or photos as a PhotoBatch that leaves
    them on disk (with ``proxy``-sided proxies): the model takes either."""
    if all(isinstance(image, Photo) for image in images):
        return PhotoBatch.of(images, proxy)
    return torch.stack(list(images))


def proxies_of(
    images: Tensor | PhotoBatch | CanvasBatch, proxy: ProxySide, noise_std: float = 0.0
) -> Tensor:
    """The proxies [B, C, J, I] of side ``proxy`` (``proxy_shape``) of a batch whose images
    share a shape: area-downsampled from its pixels, or those a PhotoBatch brings (read at
    reduced scale when it was made), or those a CanvasBatch sums from its patches. ValueError
    for a PhotoBatch of ``mixed`` proxies, which are read photo by photo."""
    if isinstance(images, PhotoBatch):
        if images.mixed:
            raise ValueError("photos of different aspect ratios: take their proxies one by one")
        source = images.proxies
        # The photos' aspect, as the proxy keeps it; their proxies share a shape, so their side.
        side = side_of(proxy, *images.photos[0].shape[-2:])
        shape = proxy_shape(*source.shape[-2:], side)
    else:
        shape = proxy_shape(*images.shape[-2:], proxy)
        source = images.proxies(shape) if isinstance(images, CanvasBatch) else images
    return make_proxy(source, shape, noise_std=noise_std)


def glimpse_photo(photo: Photo, z: Tensor, size: int, scale_min: float, scale_max: float) -> Tensor:
    """One crop [1, C, size, size] of ``photo`` at z [3], differentiable in z.

    The region under the glimpse is read at the coarsest scale that still gives ``size`` pixels
    across the box, with a one-pixel margin for bilinear sampling; the affine map of the full
    photo is then re-expressed in the region's coordinates. At scale 1 the crop equals
    ``extract_glimpse`` on the decoded photo.
    """
    height, width = photo.height, photo.width
    x0, y0, x1, y1 = glimpse_boxes(z.detach(), height, width, scale_min, scale_max).tolist()
    reduce = reduction_for(min(x1 - x0, y1 - y0), size)
    rx0, ry0 = (
        max(0, (math.floor(x0 / reduce) - 1) * reduce),
        max(0, (math.floor(y0 / reduce) - 1) * reduce),
    )
    rx1, ry1 = (
        min(width, (math.ceil(x1 / reduce) + 1) * reduce),
        min(height, (math.ceil(y1 / reduce) + 1) * reduce),
    )
    region = photo.read_region((rx0, ry0, rx1, ry1), reduce).to(z.device, z.dtype)
    h, w = region.shape[-2:]
    # Normalised photo coordinate u maps to (u + 1) / 2 * W pixels, i.e. to region coordinate
    # u * W / (r w) + (W - 2 x0) / (r w) - 1: scale the rows of theta and shift its last column.
    scale = z.new_tensor([[width / (reduce * w)], [height / (reduce * h)]])
    shift = z.new_tensor(
        [[(width - 2 * rx0) / (reduce * w) - 1], [(height - 2 * ry0) / (reduce * h) - 1]]
    )
    theta = affine_theta(z[None], height, width, scale_min, scale_max) * scale + F.pad(
        shift, (2, 0)
    )
    grid = F.affine_grid(theta, [1, region.shape[0], size, size], align_corners=ALIGN_CORNERS)
    return F.grid_sample(
        region[None], grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS
    )
