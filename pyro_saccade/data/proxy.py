"""The proxy: a small, cheap, area-averaged view of a large image, of the image's shape."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..config import CELL

# A model's proxy side: J, or a function of an image's height and width that gives it
# (``SaccadeConfig.proxy_side``, which scales J with the image's resolution).
ProxySide = int | Callable[[int, int], int]


def side_of(side: ProxySide, height: int, width: int) -> int:
    """The proxy side for a ``height`` x ``width`` image: ``side``, or what it gives there."""
    return side(int(height), int(width)) if callable(side) else side


def proxy_shape(height: int, width: int, side: ProxySide) -> tuple[int, int]:
    """Rows and columns of the proxy of a ``height`` x ``width`` image for a model of proxy side
    ``side`` (``side_of``): ``side`` across the shorter side and the longer one in proportion
    (to a whole number of the proxy's cells, ``config.CELL`` pixels a side), so that an object
    is as wide as it is high in the proxy, as on square training canvases; a square image's
    proxy is ``side`` x ``side``."""
    side = side_of(side, height, width)
    short, long = sorted((int(height), int(width)))
    if short == long:
        return side, side
    longer = max(side, CELL * round(side * long / short / CELL))
    return (side, longer) if height <= width else (longer, side)


def make_proxy(
    images: torch.Tensor,
    size: int | tuple[int, int] = 32,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Area-downsample ``[C, H, W]`` or ``[B, C, H, W]`` floating images to ``size``.

    With ``noise_std > 0``, Gaussian noise (drawn from ``generator``, which must live on the
    images' device) is added and the result clamped to [0, 1]. Output keeps the input's device and
    dtype.
    """
    if images.dim() not in (3, 4):
        raise ValueError(
            f"expected [C, H, W] or [B, C, H, W] images, got shape {list(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"expected floating-point images, got {images.dtype}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    # Adaptive average pooling weighs every input pixel equally when the sides divide (nearly so
    # otherwise), so even a 2528 -> 32 reduction does not alias the way strided resampling does.
    proxy = F.adaptive_avg_pool2d(images, size)
    if noise_std > 0:
        noise = torch.randn(
            proxy.shape, generator=generator, device=proxy.device, dtype=proxy.dtype
        )
        proxy = (proxy + noise_std * noise).clamp_(0.0, 1.0)
    return proxy
