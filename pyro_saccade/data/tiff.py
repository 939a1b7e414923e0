"""TIFF in tiles or strips: where the blocks under a region lie in the file and how to decode
one (uncompressed, deflate or JPEG, 8 or 16 bits), and writing tiled TIFFs, which PIL cannot.

:class:`~pyro_saccade.data.photo.Photo` reads TIFF regions through :class:`TiffLayout`, decoding
only the tiles or strips under them. tifffile reads regions too, but decodes JPEG tiles only
with imagecodecs, a compiled dependency; PIL already decodes each tile here.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

# TIFF tags the tile reader reads and the writer writes (ORIENTATION: read by Photo).
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC = 256, 257, 258, 259, 262
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS, _PLANAR = 273, 277, 278, 279, 284
_PREDICTOR, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS, _TILE_COUNTS = 317, 322, 323, 324, 325
_SAMPLE_FORMAT, _JPEG_TABLES, ORIENTATION = 339, 347, 274
_DEFLATE = (8, 32946)
_JPEG = 7


class TiffLayout:
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
    def of(image: Image.Image) -> TiffLayout | None:
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
        return TiffLayout(tags, image.tag_v2.prefix == b"II", *image.size)

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


# -- writing --------------------------------------------------------------------------------------


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
