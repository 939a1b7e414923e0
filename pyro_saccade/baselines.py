"""Baselines: the paper's resnet18 on tiles of the full image (Eq. 8) or on the whole image at
once, and a small CNN that sees only the proxy.

All are plain classifiers trained with cross-entropy (binary for multi-label tasks) on the same
canvases, loader and evaluation as the saccade model (``saccade train --model
resnet18-tiled|resnet18|proxy-cnn``), and they answer ``predict(images, proxies=None,
samples=0)`` like it, so ``training.evaluate`` and ``checkpoint.load`` work on them unchanged. The
resnets ignore the proxy; the proxy CNN reads nothing else, which measures how much of a task
the proxy alone can answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as checkpointed

from .config import ClassifierConfigMixin
from .data import match_channels, proxies_of

FEATURES = 256  # the authors' resnet18 output, summed over tiles
TILE = 224  # resnet18's native input side
CHUNK = 11  # tiles per resnet18 batch, as the authors' checkpointed segments
PROXY_BLOCKS = 4  # the proxy CNN's convolution blocks: a 32-px proxy ends as a 4 x 4 map
GROUPS = 8  # group norm's groups per block (fewer when a block has fewer channels)


@dataclass
class BaselineConfig(ClassifierConfigMixin):
    """Everything that defines a baseline; saved as JSON beside its weights."""

    classes: list[str]
    task: str = "identify"
    channels: int = 1
    tile: int | None = None  # None: the whole image in one pass
    chunk: int = CHUNK  # tiles per resnet18 batch (and per checkpointed segment)
    checkpoint: bool = False  # recompute tile activations in backward to save memory
    proxy: int = 32  # the proxy side the training loop builds; only proxy-cnn reads it
    width: int = 16  # proxy-cnn: channels of its first block, doubled by each next one

    def __post_init__(self) -> None:
        checks = [
            (len(self.classes) >= 2, f"need at least 2 classes, got {len(self.classes)}"),
            (self.channels >= 1, f"channels must be positive, got {self.channels}"),
            (self.tile is None or self.tile >= 32, f"tile must be >= 32 pixels, got {self.tile}"),
            (self.chunk >= 1, f"chunk must be positive, got {self.chunk}"),
            (self.proxy >= 4, f"proxy must be at least 4 pixels, got {self.proxy}"),
            (self.width >= 1, f"width must be positive, got {self.width}"),
        ]
        self.validate(checks)

    def proxy_side(self, height: int, width: int) -> int:
        """The proxy side on any image: J (as ``SaccadeConfig.proxy_side``, which may scale)."""
        return self.proxy


def class_list(classes: int | Sequence[str]) -> list[str]:
    """Class names as given, or "0".."K-1" for a count."""
    return [str(k) for k in range(classes)] if isinstance(classes, int) else list(classes)


def resnet18_trunk(channels: int, features: int = FEATURES) -> nn.Module:
    """torchvision's resnet18 from scratch, reading ``channels`` input channels."""
    from torchvision.models import resnet18

    trunk = resnet18(weights=None, num_classes=features)
    if channels != 3:
        trunk.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
    return trunk


def tile_starts(length: int, tile: int) -> list[int]:
    """Tile offsets covering ``length``; the last tile is shifted back to end at the edge."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile)) + [length - tile]


def tile_grid(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """(top, left) of every tile; 12 x 12 = 144 on a 2528 x 2528 image with 224 pixel tiles."""
    return [(y, x) for y in tile_starts(height, tile) for x in tile_starts(width, tile)]


class Baseline(nn.Module):
    """What every baseline shares: its config, class probabilities, ``predict`` and its loss."""

    kind = ""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config

    def logits(self, images: Tensor, proxies: Tensor | None) -> Tensor:
        """Class logits [B, K] of a batch and its proxies (built from the images if None)."""
        raise NotImplementedError

    def class_probs(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.config.multilabel else logits.softmax(-1)

    @torch.no_grad()
    def predict(
        self, images: Tensor, proxies: Tensor | None = None, samples: int | None = None
    ) -> Tensor:
        """Class probabilities [B, K]; ``samples`` exists for a common interface."""
        was_training = self.training
        self.eval()
        try:
            return self.class_probs(self.logits(images, proxies))
        finally:
            self.train(was_training)

    def loss(self) -> ClassifierLoss:
        """The training objective, called like ``training.ELBOLoss``."""
        return ClassifierLoss(self)

    @classmethod
    def from_config(cls, config: BaselineConfig) -> Baseline:
        raise NotImplementedError


class ResNet18Baseline(Baseline):
    """resnet18 features of the image, then the paper's BN-ReLU-Linear head."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        self.trunk = resnet18_trunk(config.channels)
        self.head = nn.Sequential(
            nn.BatchNorm1d(FEATURES), nn.ReLU(inplace=True), nn.Linear(FEATURES, config.num_classes)
        )

    def features(self, images: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, FEATURES]."""
        return self.trunk(images)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits [B, K]."""
        return self.head(self.features(images))

    def logits(self, images: Tensor, proxies: Tensor | None) -> Tensor:
        # Canvases made of patches are drawn whole: these baselines read every pixel.
        return self(images if isinstance(images, Tensor) else images.dense())


class FullImageResNet18(ResNet18Baseline):
    """resnet18 over the whole image: memory and time grow with the pixel count."""

    kind = "resnet18"

    def __init__(
        self, num_classes: int | Sequence[str], *, task: str = "identify", channels: int = 1
    ) -> None:
        super().__init__(BaselineConfig(class_list(num_classes), task, channels))

    @classmethod
    def from_config(cls, config: BaselineConfig) -> FullImageResNet18:
        return cls(config.classes, task=config.task, channels=config.channels)


class TiledResNet18(ResNet18Baseline):
    """Eq. 8 of the paper: resnet18 on every ``tile`` x ``tile`` tile, features summed.

    Tiles go through the trunk ``chunk`` at a time, so inference holds one chunk's activations;
    training holds every tile's unless ``checkpoint`` recomputes them chunk by chunk in backward.
    Images smaller than a tile along a side make one tile of their own size on that side.
    """

    kind = "resnet18-tiled"

    def __init__(
        self,
        num_classes: int | Sequence[str],
        tile: int = TILE,
        checkpoint: bool = False,
        *,
        task: str = "identify",
        channels: int = 1,
        chunk: int = CHUNK,
    ) -> None:
        config = BaselineConfig(
            class_list(num_classes), task, channels, tile=tile, chunk=chunk, checkpoint=checkpoint
        )
        super().__init__(config)

    @classmethod
    def from_config(cls, config: BaselineConfig) -> TiledResNet18:
        return cls(
            config.classes,
            config.tile or TILE,
            config.checkpoint,
            task=config.task,
            channels=config.channels,
            chunk=config.chunk,
        )

    def tiles(self, height: int, width: int) -> list[tuple[int, int]]:
        return tile_grid(height, width, self.config.tile)

    def chunks(self, images: Tensor) -> Iterator[Tensor]:
        """Batches of tiles [B * chunk, C, tile, tile], tile-major within an image."""
        tile, chunk = self.config.tile, self.config.chunk
        grid = self.tiles(*images.shape[-2:])
        for i in range(0, len(grid), chunk):
            crops = [images[..., y : y + tile, x : x + tile] for y, x in grid[i : i + chunk]]
            yield torch.stack(crops, 1).flatten(0, 1)

    def chunk_features(self, tiles: Tensor, batch: int) -> Tensor:
        """Sum over the tiles of one chunk of their resnet18 features: [B, FEATURES]."""
        return self.trunk(tiles).view(batch, -1, FEATURES).sum(1)

    def features(self, images: Tensor) -> Tensor:
        batch = images.shape[0]
        total = images.new_zeros(batch, FEATURES)
        for tiles in self.chunks(images):
            if self.config.checkpoint and torch.is_grad_enabled():
                # Batch-norm running statistics see each chunk twice (forward and recompute).
                total = total + checkpointed(self.chunk_features, tiles, batch, use_reentrant=False)
            else:
                total = total + self.chunk_features(tiles, batch)
        return total


class ProxyCNN(Baseline):
    """A small CNN that sees only the J x J proxy (``config.proxy``), never the full image: how
    much of a task the proxy alone answers.

    ``PROXY_BLOCKS`` blocks of a 3 x 3 convolution, group norm and ReLU, each but the last
    followed by 2 x 2 max pooling, then the last map's means and maxima and a linear layer.
    """

    kind = "proxy-cnn"

    def __init__(
        self,
        num_classes: int | Sequence[str],
        proxy: int = 32,
        *,
        task: str = "identify",
        channels: int = 1,
        width: int = 16,
    ) -> None:
        config = BaselineConfig(class_list(num_classes), task, channels, proxy=proxy, width=width)
        super().__init__(config)
        layers: list[nn.Module] = []
        inputs = channels
        for block in range(PROXY_BLOCKS):
            outputs = width * 2**block
            layers += [
                nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
                nn.GroupNorm(math.gcd(GROUPS, outputs), outputs),
                nn.ReLU(inplace=True),
            ]
            if block < PROXY_BLOCKS - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: a 1-px map stays 1 px
            inputs = outputs
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(2 * inputs, config.num_classes)

    @classmethod
    def from_config(cls, config: BaselineConfig) -> ProxyCNN:
        return cls(
            config.classes,
            config.proxy,
            task=config.task,
            channels=config.channels,
            width=config.width,
        )

    def forward(self, proxies: Tensor) -> Tensor:
        """Class logits [B, K] of proxies [B, C, J, J]."""
        maps = self.trunk(proxies)
        return self.head(torch.cat([maps.mean((-2, -1)), maps.amax((-2, -1))], -1))

    def logits(self, images: Tensor, proxies: Tensor | None) -> Tensor:
        if proxies is None:
            proxies = proxies_of(images, self.config.proxy)
        # e.g. a gray model's proxies, given to a colour baseline beside it
        return self(match_channels(proxies, self.config.channels))


# The resnet18 baselines, which ``saccade benchmark`` measures beside the saccade model.
BASELINES: dict[str, type[ResNet18Baseline]] = {
    FullImageResNet18.kind: FullImageResNet18,
    TiledResNet18.kind: TiledResNet18,
}
# Every baseline ``saccade train --model`` trains and a checkpoint's "kind" names.
KINDS: dict[str, type[Baseline]] = {**BASELINES, ProxyCNN.kind: ProxyCNN}


def baseline_from_config(kind: str, config: dict) -> Baseline:
    """Rebuild a baseline from its checkpoint's kind and config dict."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r} (known: saccade, {', '.join(KINDS)})")
    return KINDS[kind].from_config(BaselineConfig.from_dict(config))


class ClassifierLoss(nn.Module):
    """Mean cross-entropy per image of a baseline; the signature of ``training.ELBOLoss``."""

    def __init__(self, model: Baseline) -> None:
        super().__init__()
        self.baseline = model

    def forward(
        self, images: Tensor, proxies: Tensor, labels: Tensor, annealing: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        logits = self.baseline.logits(images, proxies)
        probs = self.baseline.class_probs(logits).detach()
        if self.baseline.config.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
            return loss / len(labels), probs
        return F.cross_entropy(logits, labels), probs
