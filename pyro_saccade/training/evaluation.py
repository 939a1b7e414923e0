"""Accuracy of a model on a dataset, split over processes under torch.distributed."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..prediction import predict
from .batches import collate, correct, prepare
from .data import ignore_interrupts
from .distributed import all_sum, world


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 100,
    samples: int | None = None,
    noise: float = 0.0,
    progress: bool = False,
    workers: int = 0,
    seed: int = 0,
) -> float:
    """Accuracy of a SaccadeModel or a baseline on ``dataset`` (``samples`` and ``seed``: as
    ``prediction.predict`` takes them). Under torch.distributed every process evaluates its
    share and the counts are summed: call it on every process."""
    device = next(model.parameters()).device
    hits, total = 0, 0
    rank, processes = world()
    if processes > 1:
        dataset = Subset(dataset, range(rank, len(dataset), processes))
    batches = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate(dataset),
        worker_init_fn=ignore_interrupts,
    )
    for images, labels in tqdm(batches, desc="evaluate", disable=not progress, leave=False):
        images, proxies = prepare(images, device, model.config.proxy_side, noise)
        probs = predict(model, images, proxies, samples=samples, seed=seed)
        hits += int(correct(probs, labels.to(device), model.config.multilabel).sum())
        total += len(labels)
    hits, total = all_sum([hits, total])
    return hits / max(total, 1)
