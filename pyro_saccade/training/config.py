"""TrainConfig: how a model is trained (data, schedule, optimiser, device).

Apart from the loop, so that checkpoints (which save and rebuild it) can import it without
importing the training loop. The task is the model's (``SaccadeConfig.task``,
``BaselineConfig.task``): the data of a run are drawn for the task of the model it trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigMixin

PRECISIONS = ("float32", "bfloat16")
# data.background.BACKGROUNDS, spelled out: this module imports no torch.
BACKGROUNDS = ("black", "white", "clutter")
PATTERN_SETS = ("split", "canvas")  # data.megapixel.PATTERN_SETS


@dataclass
class TrainConfig(ConfigMixin):
    """How a model is trained: data, schedule, optimiser, device."""

    canvas: list[int] = field(default_factory=lambda: [100, 100])  # height, width
    distractors: int = 8
    noise: int = 50  # Megapixel MNIST tasks: line-pair noise boxes per canvas
    pattern_set: str = "split"  # training canvases' scribbles: the split's 50 | each canvas's own
    background: str = "black"  # what canvases' ink is painted on: black | white | clutter
    digit_size: int | None = None
    augment: bool = False  # warp every training digit at random (TwoDigitCluttered's augment)
    overlap: float = 0.0  # share of training canvases with one digit over the other
    source: str = "bundled"  # MNIST digits (data.load_digits): bundled | bundled+5k | ...
    photos: str | None = None  # train on photos: a folder with a subfolder per class, or a CSV
    photo_test: str | None = None  # held-out photos [default: test_fraction of `photos`]
    test_fraction: float = 0.2
    proxy_noise: float = 0.0
    epochs: int = 20  # 0 is what a model exported without training of its own records
    train_size: int = 20000  # fresh canvases every epoch
    test_size: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    lr_final: float = 0.05  # cosine decay to lr * lr_final
    kl_anneal: float = 0.1  # fraction of training over which the KL weight rises from 0
    clip_norm: float = 10.0
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    precision: str = "float32"  # float32 | bfloat16: the training loss under torch.autocast
    checkpoint_every: int = 0  # also checkpoint every this many steps in an epoch; 0: at its end

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 0, f"epochs must be non-negative, got {self.epochs}"),
            (self.train_size >= 1, f"train_size must be positive, got {self.train_size}"),
            (self.test_size >= 1, f"test_size must be positive, got {self.test_size}"),
            (self.batch_size >= 1, f"batch_size must be positive, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (0 <= self.overlap <= 1, f"overlap must lie in [0, 1], got {self.overlap}"),
            (self.proxy_noise >= 0, f"proxy_noise must be non-negative, got {self.proxy_noise}"),
            (self.workers >= 0, f"workers must be non-negative, got {self.workers}"),
            (
                self.background in BACKGROUNDS,
                f"background must be one of {BACKGROUNDS}, got {self.background!r}",
            ),
            (
                self.pattern_set in PATTERN_SETS,
                f"pattern_set must be one of {PATTERN_SETS}, got {self.pattern_set!r}",
            ),
            (
                self.checkpoint_every >= 0,
                f"checkpoint_every must be non-negative, got {self.checkpoint_every}",
            ),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {PRECISIONS}, got {self.precision!r}",
            ),
            (
                0 <= self.test_fraction < 1,
                f"test_fraction must lie in [0, 1), got {self.test_fraction}",
            ),
        ]
        self.validate(checks)
