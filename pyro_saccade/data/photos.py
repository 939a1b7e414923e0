"""Photos of any size on disk: crops and proxies without holding the whole photo in memory.

A :class:`Photo` knows its size from the file header. It reads a region at a reduced scale,
decoding only what that needs:

- JPEG: libjpeg's DCT-domain scaling (PIL's ``draft``) decodes the photo at 1/2, 1/4 or 1/8 of
  its size, so a 32x32 crop of a 1200-pixel box costs a 1/8-scale decode. JPEG has no random
  access, so each decode runs over the whole file, but it never holds more than that scale.
- TIFF in tiles or strips (uncompressed, deflate or JPEG; the layout ``vips tiffsave --tile`` and
  :func:`save_tiled_tiff` write): only the tiles or strips under the region are read.
- Anything else (PNG, BMP, WebP, LZW-compressed TIFF, ``.npy``) cannot be read in parts: the
  photo is decoded once, whole, and kept while the ``Photo`` lives.

Pixel coordinates are those of the displayed photo: EXIF orientation is applied, as
:func:`~pyro_saccade.data.load_image` does. :class:`PhotoBatch` is what the model receives in place
of an image tensor: ``extract_glimpse`` hands it the glimpses, and it samples each crop with
``grid_sample`` from a small region tensor, so gradients reach z exactly as they would on a
full image. :class:`PhotoFolder` is a dataset of labelled photos (one subfolder per class, or a
CSV of ``path,label``) whose proxies are cached on disk.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..glimpse import ALIGN_CORNERS, affine_theta, glimpse_boxes
from .canvas import CanvasBatch
from .images import ImageError, _read_pil, load_image, match_channels
from .proxy import make_proxy

SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".npy")
REDUCTIONS = (8, 4, 2, 1)  # the scales libjpeg decodes at, used for every format alike
# Decoded pixels a photo of a training batch may keep between glimpses (12 MB of 8-bit RGB):
# every reduced JPEG decode a 32 px crop of a 4000x3000 photo needs, and PNGs up to 4 Mpx.
ITEM_CACHE_PIXELS = 2**22
CACHE_VERSION = 1  # part of every proxy-cache key: bump when proxies are computed differently

# TIFF tags read by the tile reader.
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS, _PLANAR = 273, 277, 278, 279, 284
_PREDICTOR, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_COUNTS = 317, 322, 323, 324, 325
_SAMPLE_FORMAT, _JPEG_TABLES, _ORIENTATION = 339, 347, 274
_DEFLATE = (8, 32946)
_JPEG = 7


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


class _TiffLayout:
    """Where the tiles (or strips) of a TIFF are and how to decode one; None if unsupported."""

    def __init__(self, tags: dict, little_endian: bool, width: int, height: int) -> None:
        self.tiled = _TILE_OFFSETS in tags
        if self.tiled:
            self.block_width, self.block_height = tags[_TILE_WIDTH], tags[_TILE_LENGTH]
            self.offsets, self.counts = tags[_TILE_OFFSETS], tags[_TILE_COUNTS]
        else:  # strips are blocks as wide as the image
            self.block_width = width
            self.block_height = min(tags.get(_ROWS_PER_STRIP, height), height)
            self.offsets, self.counts = tags[_STRIP_OFFSETS], tags[_STRIP_COUNTS]
        self.across = -(-width // self.block_width)
        self.samples = tags.get(_SAMPLES, 1)
        self.compression = tags.get(_COMPRESSION, 1)
        self.predictor = tags.get(_PREDICTOR, 1)
        self.tables = tags.get(_JPEG_TABLES)
        sixteen = _as_tuple(tags.get(_BITS, 8))[0] == 16
        self.dtype = np.dtype(f"{'<' if little_endian else '>'}u2") if sixteen else np.uint8

    @staticmethod
    def of(image: Image.Image) -> _TiffLayout | None:
        tags = dict(image.tag_v2)
        bits = set(_as_tuple(tags.get(_BITS, 1)))
        photometric = tags.get(_PHOTOMETRIC)
        if tags.get(_COMPRESSION, 1) == _JPEG:
            codec = bits == {8} and photometric in (1, 6)  # gray, or YCbCr as libjpeg writes it
        else:
            codec = tags.get(_COMPRESSION, 1) in (1, *_DEFLATE) and photometric in (1, 2)
            codec = codec and (bits == {8} or bits == {16})
        supported = (
            codec
            and (_TILE_OFFSETS in tags or _STRIP_OFFSETS in tags)
            and tags.get(_PLANAR, 1) == 1
            and tags.get(_SAMPLES, 1) in (1, 2, 3, 4)
            and set(_as_tuple(tags.get(_SAMPLE_FORMAT, 1))) == {1}
            and tags.get(_PREDICTOR, 1) in (1, 2)
        )
        if not supported:
            return None
        return _TiffLayout(tags, image.tag_v2.prefix == b"II", *image.size)

    def blocks(self, box: tuple[int, int, int, int]) -> list[tuple[int, int, int]]:
        """(index, x, y) of the blocks under ``box`` in stored pixels."""
        x0, y0, x1, y1 = box
        cols = range(x0 // self.block_width, -(-x1 // self.block_width))
        rows = range(y0 // self.block_height, -(-y1 // self.block_height))
        return [
            (row * self.across + col, col * self.block_width, row * self.block_height)
            for row in rows
            for col in cols
        ]

    def scale_for(self, box: tuple[int, int, int, int], reduce: int) -> int:
        """The scale blocks under ``box`` decode at: ``reduce`` for JPEG tiles on its grid."""
        aligned = all(v % reduce == 0 for v in (box[0], box[1], self.block_width))
        jpeg = self.compression == _JPEG and self.tiled
        return reduce if jpeg and aligned and self.block_height % reduce == 0 else 1

    def decode(self, data: bytes, scale: int = 1) -> np.ndarray:
        """One block's pixels, [rows, block_width, samples], JPEG tiles at 1/``scale``."""
        if self.compression == _JPEG:
            if self.tables:  # abbreviated stream: the tables live once in the TIFF header
                data = bytes(self.tables)[:-2] + data[2:]
            with Image.open(io.BytesIO(data)) as tile:
                tile.draft(None, (self.block_width // scale, self.block_height // scale))
                pixels = np.asarray(tile.convert("L" if self.samples == 1 else "RGB"))
            return pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
        if self.compression in _DEFLATE:
            data = zlib.decompress(data)
        pixels = np.frombuffer(data, dtype=self.dtype)
        pixels = pixels.reshape(-1, self.block_width, self.samples)
        if self.predictor == 2:  # horizontal differencing: a running sum restores the samples
            pixels = np.cumsum(pixels, axis=1, dtype=pixels.dtype)
        return pixels


def _as_tuple(value: object) -> tuple:
    return value if isinstance(value, tuple) else (value,)


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
        self._layout: _TiffLayout | None = None
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
                    self._layout = _TiffLayout.of(image)
                    self.orientation = image.tag_v2.get(_ORIENTATION, 1)
                else:
                    self.orientation = image.getexif().get(_ORIENTATION, 1)
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

    def proxy(self, size: int = 32) -> Tensor:
        """The J x J proxy [C, size, size]: area-averaged, from a decode at reduced scale."""
        if not self.streams:  # exactly what make_proxy gives on the image tensor
            return make_proxy(self._finish(_reduce(self._full(), 1)), size)
        reduce = reduction_for(min(self.stored_height, self.stored_width), 2 * size)
        if self._layout is None:
            scale, image = self._jpeg(reduce)
            array = _reduce(image, max(reduce // scale, 1))
        else:
            array = self._tiles_reduced(reduce)
        return make_proxy(self._finish(_orient(array, self.orientation)), size)

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

    ``extract_glimpse`` delegates to :meth:`glimpse`. ``proxies`` [B, C, J, J] come with the
    batch. The photos may differ in size: every crop is taken in its own photo.
    """

    def __init__(
        self, photos: Sequence[Photo], proxies: Tensor, device: str | torch.device = "cpu"
    ) -> None:
        if len(photos) != len(proxies):
            raise ValueError(f"{len(photos)} photos but {len(proxies)} proxies")
        self.photos = list(photos)
        self.proxies = proxies
        self.device = torch.device(device)

    @classmethod
    def of(cls, photos: Sequence[Photo], proxy: int = 32) -> PhotoBatch:
        """A batch with freshly computed ``proxy``-sided proxies."""
        return cls(photos, torch.stack([photo.proxy(proxy) for photo in photos]))

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def shape(self) -> torch.Size:
        """[B, C, H, W]; H and W are -1 when the photos differ in size."""
        sizes = {photo.shape for photo in self.photos}
        channels, height, width = (
            sizes.pop() if len(sizes) == 1 else (self.proxies.shape[1], -1, -1)
        )
        return torch.Size([len(self), channels, height, width])

    def to(self, device: str | torch.device) -> PhotoBatch:
        return PhotoBatch(self.photos, self.proxies.to(device), device)

    def glimpse(self, z: Tensor, size: int, scale_min: float, scale_max: float) -> Tensor:
        """Crops [B, C, size, size] at glimpses z [B, 3], as extract_glimpse on the full photos."""
        return torch.cat(
            [
                glimpse_photo(photo, z[i], size, scale_min, scale_max)
                for i, photo in enumerate(self.photos)
            ]
        )


def as_batch(images: Sequence[Tensor] | Sequence[Photo], proxy: int) -> Tensor | PhotoBatch:
    """Images [C, H, W] of one size stacked as [B, C, H, W], or photos as a PhotoBatch that leaves
    them on disk (with ``proxy``-sided proxies): the model takes either."""
    if all(isinstance(image, Photo) for image in images):
        return PhotoBatch.of(images, proxy)
    return torch.stack(list(images))


def proxies_of(
    images: Tensor | PhotoBatch | CanvasBatch, proxy: int, noise_std: float = 0.0
) -> Tensor:
    """The ``proxy``-sided proxies [B, C, J, J] of a batch: area-downsampled from its pixels, or
    those a PhotoBatch brings (read at reduced scale when it was made), or those a CanvasBatch
    sums from its patches."""
    if isinstance(images, CanvasBatch):
        source = images.proxies(proxy)
    else:
        source = images.proxies if isinstance(images, PhotoBatch) else images
    return make_proxy(source, proxy, noise_std=noise_std)


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


# -- datasets -----------------------------------------------------------------------------------


def proxy_cache_dir() -> Path | None:
    """Where training caches proxies: $PYRO_SACCADE_CACHE/proxies (empty: no cache), by default
    ~/.cache/pyro_saccade/proxies."""
    root = os.environ.get("PYRO_SACCADE_CACHE")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "pyro_saccade"
    return Path(root) / "proxies" if str(root) else None


def cached_proxy(photo: Photo, size: int, cache_dir: str | Path | None) -> Tensor:
    """``photo.proxy(size)``, stored under ``cache_dir`` keyed by the file's path, size and
    modification time (and the proxy's size and channels), so a changed file is decoded anew."""
    if cache_dir is None:
        return photo.proxy(size)
    stat = photo.path.stat()
    identity = (photo.path.resolve(), stat.st_size, stat.st_mtime_ns, size, photo.shape[0])
    key = hashlib.sha1(repr((*identity, CACHE_VERSION)).encode()).hexdigest()
    path = Path(cache_dir) / f"{key}.npy"
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError):
        pass
    proxy = photo.proxy(size)
    try:  # the cache only saves time: an unwritable cache is not an error
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, proxy.numpy())
        os.replace(tmp, path)
    except OSError:
        pass
    return proxy


def _list_folder(root: Path) -> list[tuple[Path, str]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class subfolders (expected one subfolder per class)")
    return [
        (path, folder.name)
        for folder in classes
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in SUFFIXES and not path.name.startswith(".") and path.is_file()
    ]


def _list_csv(table: Path) -> list[tuple[Path, str]]:
    with open(table, newline="") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if rows and [cell.strip().lower() for cell in rows[0]] in (
        ["path", "label"],
        ["file", "label"],
    ):
        rows = rows[1:]
    entries = []
    for number, row in enumerate(rows, 1):
        if len(row) != 2:
            raise ValueError(f"{table}: row {number} has {len(row)} fields, expected path,label")
        entries.append((table.parent / row[0].strip(), row[1].strip()))
    return entries


def list_photos(source: str | Path) -> list[tuple[Path, str]]:
    """(path, class name) of every photo in a class-per-subfolder folder or a path,label CSV."""
    source = Path(source)
    if not source.exists():
        raise ValueError(f"{source}: no such folder or CSV file")
    entries = _list_csv(source) if source.is_file() else _list_folder(source)
    if not entries:
        raise ValueError(f"{source}: no photos ({', '.join(SUFFIXES)})")
    return entries


def photo_classes(source: str | Path) -> list[str]:
    """The sorted class names of a photo folder or CSV."""
    return sorted({label for _, label in list_photos(source)})


def split_photos(
    entries: list[tuple[Path, str]], split: str, test_fraction: float, seed: int
) -> list[tuple[Path, str]]:
    """The ``train`` or ``test`` part (or ``all``) of a seeded split stratified by class."""
    if split == "all":
        return entries
    if split not in ("train", "test"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    rng = np.random.default_rng(seed)
    test: set[int] = set()
    for label in sorted({label for _, label in entries}):
        members = [i for i, (_, other) in enumerate(entries) if other == label]
        order = rng.permutation(len(members))
        test.update(members[j] for j in order[: round(test_fraction * len(members))])
    return [entry for i, entry in enumerate(entries) if (i in test) == (split == "test")]


def checked_photo(
    path: Path, channels: int, check: Callable[[int, int, int], None] | None
) -> Photo:
    """``Photo(path, channels)``, or an ImageError if ``check`` refuses its shape."""
    photo = Photo(path, channels)
    try:
        if check is not None:
            check(*photo.shape)
    except ValueError as error:
        raise ImageError(f"{path}: {error}") from None
    return photo


class PhotoFolder(Dataset):
    """Labelled photos of any size: items are (Photo, proxy [C, J, J], class index).

    ``source`` is a folder with one subfolder per class (the MIT-Adobe 5K layout) or a CSV of
    ``path,label`` (paths relative to the CSV; a ``path,label`` or ``file,label`` header is
    skipped). ``split`` takes a seeded, class-stratified ``test_fraction`` (``test``), the rest
    (``train``) or everything (``all``). ``classes`` fixes the class order (a trained model's).
    Every proxy is computed (or read from ``cache_dir``) here, which also checks that each photo
    decodes: unreadable photos, and those that ``check(channels, height, width)`` (e.g. a model's
    ``SaccadeConfig.check_image``) refuses with a ValueError, are left out and listed in
    ``skipped`` with the reason, and one warning names them. Batch with ``collate``; photos of
    different sizes mix freely.
    """

    def __init__(
        self,
        source: str | Path,
        split: str = "all",
        test_fraction: float = 0.2,
        seed: int = 0,
        classes: Sequence[str] | None = None,
        proxy: int = 32,
        channels: int = 3,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        check: Callable[[int, int, int], None] | None = None,
    ) -> None:
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
        entries = list_photos(source)
        self.classes = list(classes) if classes is not None else photo_classes(source)
        unknown = sorted({label for _, label in entries} - set(self.classes))
        if unknown:
            raise ValueError(f"{source}: labels {unknown} are not among the classes {self.classes}")
        self.source, self.seed, self.channels = Path(source), seed, channels
        index = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[tuple[Path, str]] = []
        proxies = []
        chosen = split_photos(entries, split, test_fraction, seed)
        for path, label in tqdm(chosen, desc=f"{split} photos", disable=not progress, leave=False):
            try:
                proxies.append(cached_proxy(checked_photo(path, channels, check), proxy, cache_dir))
            except ImageError as error:
                self.skipped.append((path, str(error)))
                continue
            self.samples.append((path, index[label]))
        if self.skipped:
            names = "; ".join(reason for _, reason in self.skipped[:10])
            more = f"; and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
            part = "" if split == "all" else f" ({split} split)"
            warnings.warn(
                f"skipped {len(self.skipped)} of {len(chosen)} photos{part} in {source} that "
                f"cannot be used: {names}{more}",
                stacklevel=2,
            )
        if not self.samples:
            raise ValueError(f"{source}: no readable photos in the {split} split")
        self.proxies = torch.stack(proxies)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Photo, Tensor, int]:
        path, label = self.samples[i]
        return Photo(path, self.channels, ITEM_CACHE_PIXELS), self.proxies[i], label

    def epoch_order(self, epoch: int) -> list[int]:
        """Every photo once, in an order fixed by the seed and the epoch."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self)).tolist()

    @staticmethod
    def collate(items: list[tuple[Photo, Tensor, int]]) -> tuple[PhotoBatch, Tensor]:
        photos, proxies, labels = zip(*items, strict=True)
        return PhotoBatch(photos, torch.stack(proxies)), torch.tensor(labels)


# -- writing photos -----------------------------------------------------------------------------


def _uint8_pixels(image: Tensor | np.ndarray | Image.Image) -> np.ndarray:
    """[H, W, C] uint8 pixels of a PIL image, a [C, H, W] tensor in [0, 1] or a uint8 array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("L" if image.mode in ("1", "L") else "RGB"))
    elif isinstance(image, Tensor):
        image = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        image = image.transpose(1, 2, 0)
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def save_tiled_tiff(
    image: Tensor | np.ndarray | Image.Image,
    path: str | Path,
    tile: int = 256,
    compression: str = "deflate",
    quality: int = 90,
) -> None:
    """Write an 8-bit gray or RGB image as a tiled TIFF, whose crops :class:`Photo` reads
    without decoding the rest (PIL writes striped TIFFs only).

    ``compression`` is ``none``, ``deflate`` (lossless) or ``jpeg`` (YCbCr, lossy; ``quality``).
    """
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    codes = {"none": 1, "deflate": 8, "jpeg": _JPEG}
    if compression not in codes:
        raise ValueError(f"compression must be one of {sorted(codes)}, got {compression!r}")
    pixels = _uint8_pixels(image)
    height, width, channels = pixels.shape
    if channels not in (1, 3):
        raise ValueError(f"expected a gray or RGB image, got {channels} channels")
    with open(path, "wb") as f:
        f.write(b"II*\0\0\0\0\0")  # little-endian header; the IFD offset is patched in below
        offsets, counts = [], []
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                block = np.zeros((tile, tile, channels), dtype=np.uint8)
                part = pixels[y : y + tile, x : x + tile]
                block[: part.shape[0], : part.shape[1]] = part
                data = _encode_tile(block, compression, quality)
                offsets.append(f.tell())
                counts.append(len(data))
                f.write(data)
        photometric = (1 if channels == 1 else 6) if compression == "jpeg" else (channels // 3 + 1)
        tags = [
            (_WIDTH, 4, [width]),
            (_LENGTH, 4, [height]),
            (_BITS, 3, [8] * channels),
            (_COMPRESSION, 3, [codes[compression]]),
            (_PHOTOMETRIC, 3, [photometric]),
            (_SAMPLES, 3, [channels]),
            (_PLANAR, 3, [1]),
            (_TILE_WIDTH, 4, [tile]),
            (_TILE_LENGTH, 4, [tile]),
            (_TILE_OFFSETS, 4, offsets),
            (_TILE_COUNTS, 4, counts),
        ]
        if photometric == 6:  # PIL's JPEG encoder subsamples chroma 2x2
            tags.append((530, 3, [2, 2]))
        _write_ifd(f, tags)


def _encode_tile(block: np.ndarray, compression: str, quality: int) -> bytes:
    if compression == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(block[..., 0] if block.shape[-1] == 1 else block).save(
            buffer, format="JPEG", quality=quality
        )
        return buffer.getvalue()
    data = block.tobytes()
    return zlib.compress(data, 6) if compression == "deflate" else data


def _write_ifd(f: io.BufferedWriter, tags: list[tuple[int, int, list[int]]]) -> None:
    """Append one image file directory (SHORT = type 3, LONG = type 4) and point the header
    at it; values longer than four bytes go just before it."""
    sizes = {3: ("H", 2), 4: ("I", 4)}
    entries = []
    for tag, kind, values in tags:
        code, width = sizes[kind]
        packed = struct.pack(f"<{len(values)}{code}", *values)
        if len(packed) > 4:
            f.write(b"\0" * (f.tell() % 2))  # TIFF offsets are word aligned
            offset = f.tell()
            f.write(packed)
            packed = struct.pack("<I", offset)
        entries.append(struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\0"))
    f.write(b"\0" * (f.tell() % 2))
    ifd = f.tell()
    f.write(struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0))
    f.seek(4)
    f.write(struct.pack("<I", ifd))


def synthetic_photo(label: int, width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB test photo: a smooth random background with four small shapes whose kind is the
    class (``label % 4``: discs, squares, triangles, crosses), grain added. For tests and demos."""
    rng = np.random.default_rng(seed)
    background = Image.fromarray((rng.random((4, 5, 3)) * 200 + 28).astype(np.uint8))
    image = background.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    side = max(4, round(0.06 * min(width, height)))
    for _ in range(4):
        x, y = (
            int(rng.integers(0, max(1, width - side))),
            int(rng.integers(0, max(1, height - side))),
        )
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [x, y, x + side, y + side]
        shape = label % 4
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        elif shape == 2:
            draw.polygon([(x, y + side), (x + side // 2, y), (x + side, y + side)], fill=colour)
        else:
            draw.line([(x, y), (x + side, y + side)], fill=colour, width=max(1, side // 5))
            draw.line([(x, y + side), (x + side, y)], fill=colour, width=max(1, side // 5))
    pixels = np.array(image)
    for top in range(0, height, 512):  # grain, in bands to keep memory small on huge photos
        band = pixels[top : top + 512].astype(np.int16)
        band += rng.integers(-6, 7, band.shape[:2] + (1,), dtype=np.int16)
        pixels[top : top + 512] = band.clip(0, 255)
    return Image.fromarray(pixels)
