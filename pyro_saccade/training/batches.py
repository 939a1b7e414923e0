"""What every loop over a dataset does with a batch: collate it as its dataset does, move it to
the model's device with its proxies, and score the model's answers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..data import PhotoBatch, proxies_of


def collate(dataset: Dataset) -> Callable | None:
    """The dataset's own batching (photos of any size make a PhotoBatch), or torch's default."""
    return getattr(dataset.dataset if isinstance(dataset, Subset) else dataset, "collate", None)


def prepare(
    images: Tensor | PhotoBatch, device: torch.device, proxy: int, noise: float = 0.0
) -> tuple[Tensor | PhotoBatch, Tensor | None]:
    """Move a batch to ``device`` and build its proxies there (photos bring theirs); None for
    photos whose proxies differ in shape, which the model reads one by one, each with its own
    (without ``noise``)."""
    if isinstance(images, Tensor):
        images = images.to(device, non_blocking=True)
    else:  # photos on disk, canvases made of patches
        images = images.to(device)
    if isinstance(images, PhotoBatch) and images.mixed:
        return images, None
    return images, proxies_of(images, proxy, noise)


def correct(probs: Tensor, labels: Tensor, multilabel: bool) -> Tensor:
    """Per-image correctness: argmax, or every mark right for multi-label."""
    if multilabel:
        return ((probs > 0.5) == labels.bool()).all(-1)
    return probs.argmax(-1) == labels
