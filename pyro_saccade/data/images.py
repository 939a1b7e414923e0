"""Reading and writing single images as float tensors in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# ITU-R 601-2 luma weights, the ones PIL uses for mode "L", so both conversions agree.
_LUMA = (0.299, 0.587, 0.114)


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


def load_image(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """Load a PNG, JPEG (anything PIL opens) or ``.npy`` array as float32 ``[C, H, W]`` in [0, 1].

    Gray images give one channel and colour images three (alpha is dropped). ``channels=1``
    converts to luminance, ``channels=3`` replicates a gray channel. Integer data is scaled by its
    type's range (8 or 16 bit); float arrays must already lie in [0, 1].
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels}")
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    array = _read_npy(path) if path.suffix.lower() == ".npy" else _read_pil(path)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ImageError(f"{path}: contains NaN or infinite values")
    image = _to_unit_float(array, path)
    if image.shape[0] == 4:  # alpha is not evidence about the class
        image = image[:3]
    return match_channels(image, channels).contiguous()


def match_channels(image: torch.Tensor, channels: int | None) -> torch.Tensor:
    """``[..., C, H, W]`` (C = 1 or 3) as luminance (``channels=1``), as three channels
    replicating a gray one (``channels=3``), or unchanged (``None``)."""
    if channels == 1 and image.shape[-3] == 3:
        return torch.einsum("c,...chw->...hw", torch.tensor(_LUMA), image).unsqueeze(-3)
    if channels == 3 and image.shape[-3] == 1:
        return image.expand(*image.shape[:-3], 3, -1, -1)
    return image


# JPEG's quality when an image is saved as one: artefacts well below a digit's stroke.
JPEG_QUALITY = 95


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write a ``[C, H, W]`` (C = 1 or 3) or ``[H, W]`` tensor in [0, 1] as an 8-bit image: a
    JPEG if ``path`` ends in .jpg or .jpeg, else a PNG."""
    image = image.detach().cpu()
    if image.dim() == 3 and image.shape[0] in (1, 3):
        image = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
    elif image.dim() != 2:
        raise ValueError(f"expected [C, H, W] with C in (1, 3) or [H, W], got {list(image.shape)}")
    array = (image.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(array).save(path, format="JPEG", quality=JPEG_QUALITY)
    else:
        Image.fromarray(array).save(path, format="PNG")


def _read_npy(path: Path) -> np.ndarray:
    """Read an array as channels-first [C, H, W]."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ImageError(f"{path}: not a valid .npy array") from e
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3 and array.shape[0] in (1, 3, 4):
        return array
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        return array.transpose(2, 0, 1)
    raise ImageError(
        f"{path}: array of shape {array.shape}; expected [H, W], or [C, H, W] or [H, W, C] with "
        "1, 3 or 4 channels"
    )


def _read_pil(path: Path) -> np.ndarray:
    """Decode with PIL into channels-first [C, H, W], keeping 16-bit depth."""
    try:
        with Image.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)  # photos are often stored rotated
            pil.load()
    except UnidentifiedImageError as e:
        raise ImageError(f"{path}: not an image") from e
    except (OSError, SyntaxError) as e:  # PIL signals truncated or corrupt data this way
        raise ImageError(f"{path}: truncated or corrupt image ({e})") from e
    if pil.mode.startswith("I;16"):
        array = np.asarray(pil).astype(np.uint16)
    elif pil.mode == "I":  # 16-bit PNGs decode to 32-bit ints on some Pillow versions
        array = np.asarray(pil).clip(0, 65535).astype(np.uint16)
    elif pil.mode == "F":
        array = np.asarray(pil)
    elif pil.mode in ("1", "L", "LA", "La"):
        array = np.asarray(pil.convert("L"))
    else:
        array = np.asarray(pil.convert("RGB"))
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _to_unit_float(array: np.ndarray, path: Path) -> torch.Tensor:
    if array.dtype == np.bool_:
        array = array.astype(np.float32)
    elif array.dtype in (np.uint8, np.uint16):
        array = array.astype(np.float32) / np.iinfo(array.dtype).max
    elif not np.issubdtype(array.dtype, np.floating):
        raise ImageError(
            f"{path}: unsupported array type {array.dtype} (use uint8, uint16 or float)"
        )
    elif array.size and (array.min() < 0 or array.max() > 1):
        raise ImageError(
            f"{path}: float values must lie in [0, 1], found [{array.min()}, {array.max()}]"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
