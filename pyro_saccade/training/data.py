"""A run's data: generated canvases or photos, each epoch's share of them, and their loader.

The data are drawn for the task of the model a run trains (``SaccadeConfig.task``,
``BaselineConfig.task``); TrainConfig says how: canvas size, clutter, digits, photos.
"""

from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..baselines import BaselineConfig
from ..config import SaccadeConfig
from ..data import MEGAPIXEL_TASKS, MegapixelMNIST, PhotoFolder, TwoDigitCluttered, class_names
from ..data.photos import photo_classes, proxy_cache_dir
from .batches import collate
from .config import TrainConfig
from .distributed import local_batch

# Canvases with a longer side are cropped from their patches instead of being drawn whole.
LAZY_SIDE = 512


def canvases(
    config: TrainConfig, task: str, split: str, n: int
) -> TwoDigitCluttered | MegapixelMNIST:
    """The generated canvases of a split for ``task``; test canvases come from held-out digits
    only, and are never augmented or overlapped by choice. Large canvases are lazy: the model
    crops them from their digits and patches, never drawing them whole."""
    training = split == "train"
    lazy = max(config.canvas) > LAZY_SIDE
    if task in MEGAPIXEL_TASKS:
        return MegapixelMNIST(
            task=task,
            canvas=tuple(config.canvas),
            n=n,
            noise=config.noise,
            split=split,
            seed=config.seed,
            source=config.source,
            lazy=lazy,
            background=config.background,
            # Held-out canvases keep the protocol's one set per split.
            pattern_set=config.pattern_set if training else "split",
        )
    return TwoDigitCluttered(
        task=task,
        canvas=tuple(config.canvas),
        n=n,
        distractors=config.distractors,
        digit_size=config.digit_size,
        split=split,
        seed=config.seed,
        source=config.source,
        augment=config.augment and training,
        overlap=config.overlap if training else 0.0,
        lazy=lazy,
        background=config.background,
    )


def photo_set(
    config: TrainConfig,
    model_config: SaccadeConfig | BaselineConfig,
    split: str,
    progress: bool = False,
) -> PhotoFolder:
    """The training or held-out photos of a run, read with the model's classes and proxy size."""
    held_out = split == "test" and config.photo_test
    return PhotoFolder(
        config.photo_test if held_out else config.photos,
        split="all" if config.photo_test else split,
        test_fraction=config.test_fraction,
        seed=config.seed,
        classes=model_config.classes,
        proxy=model_config.proxy_side,
        channels=model_config.channels,
        cache_dir=proxy_cache_dir(),
        progress=progress,
        check=getattr(model_config, "check_image", None),  # a baseline takes any size
    )


def datasets(
    config: TrainConfig, model_config: SaccadeConfig | BaselineConfig, progress: bool = False
) -> tuple[Dataset, Dataset]:
    """Training and held-out data for the model's task: fresh canvases for every epoch, or
    photos on disk (for a saccade model)."""
    if config.photos:
        return (
            photo_set(config, model_config, "train", progress),
            photo_set(config, model_config, "test", progress),
        )
    task = model_config.task
    train_set = canvases(config, task, "train", config.train_size * max(config.epochs, 1))
    return train_set, canvases(config, task, "test", config.test_size)


def default_model_config(task: str, photos: str | None = None) -> SaccadeConfig:
    """The model for a task's data: its classes, or those of ``photos`` in colour."""
    if photos:
        return SaccadeConfig(classes=photo_classes(photos), task="photo", channels=3)
    if task in MEGAPIXEL_TASKS:
        return SaccadeConfig(classes=[str(k) for k in range(10)], task=task)
    return SaccadeConfig(classes=class_names(task), task=task)


def epoch_subset(
    dataset: Dataset,
    epoch: int,
    size: int,
    start: int = 0,
    rank: int = 0,
    processes: int = 1,
    batch: int = 1,
) -> Subset:
    """Canvases ``epoch * size ...``: every epoch sees new ones, reproducibly. Photos: all of
    them every epoch, in a new seeded order, in global batches of ``batch`` photos whose
    proxies share a shape (``PhotoFolder.epoch_order``). Process ``rank`` of ``processes``
    takes every processes-th item from its rank on, so no two see the same canvas and a global
    batch of B is the next B items; ``start`` skips that many of this process's share."""
    order = (
        dataset.epoch_order(epoch, batch)
        if isinstance(dataset, PhotoFolder)
        else range(epoch * size, (epoch + 1) * size)
    )
    usable = len(order) // processes * processes  # equal shares: every process steps alike
    return Subset(dataset, order[rank:usable:processes][start:])


def loader(dataset: Dataset, config: TrainConfig) -> DataLoader:
    """This process's batches of ``dataset``, in order."""
    return DataLoader(
        dataset,
        batch_size=local_batch(config),
        shuffle=False,
        num_workers=config.workers,
        persistent_workers=False,
        collate_fn=collate(dataset),
        worker_init_fn=ignore_interrupts,
        # Its own generator: the loader draws a seed from it for every pass, which would
        # otherwise shift the global RNG by one draw in a run resumed in mid-epoch.
        generator=torch.Generator().manual_seed(config.seed),
    )


def ignore_interrupts(worker: int) -> None:
    """Data-loader workers leave Ctrl-C to the main process, which saves a checkpoint first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
