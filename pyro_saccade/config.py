"""Configuration of a saccade model: one dataclass, the single source of every default.

A checkpoint saves it as JSON beside the weights; ``added`` lists the fields introduced after a
configuration was first saved, with the values that applied before they existed, and ``removed``
the fields that no longer exist, with the one value under which a checkpoint that has them
behaves as this version builds it, so that older checkpoints load as they were trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Self

FORMAT_VERSION = 1
LIKELIHOODS = ("aggregate", "per_glimpse")
HEADS = ("linear", "digit_pairs")
DIGIT_TASKS = ("identify", "sum", "mark")
# Tasks whose logits are per-digit evidence summed over glimpses (networks.DigitPairHead), so a
# digit-pair model's reader answers them as it is: Megapixel MNIST's majority and multi.
EVIDENCE_TASKS = (*DIGIT_TASKS, "majority", "multi")
EVIDENCE = ("crops", "mixture", "state")
# Tasks whose label says which digits the crops can show (networks.DigitPairHead, "mixture").
MIXTURE_TASKS = ("identify", "sum", "majority")
PROXY_LIKELIHOODS = ("bernoulli", "gaussian")
POSTERIORS = ("saliency", "mlp")
CROP_POOLS = ("max", "max_mean")
WHERE = ("none", "cells")
# The proxy decoder reconstructs the proxy at most this side: a larger proxy is there to find
# small objects, and decoding it whole would cost more weights than the rest of the model.
DECODED_PROXY = 32


class ConfigMixin:
    """What every configuration dataclass shares: validation and a JSON-ready dict."""

    # Fields added after a configuration was first saved, with the value that applied before
    # they existed, so that older checkpoints load as they were trained.
    added: ClassVar[dict[str, object]] = {}
    # Fields that no longer exist, with the one value under which a checkpoint saved with them
    # means what this version builds without them: dropped at that value, refused at any other.
    removed: ClassVar[dict[str, object]] = {}

    @staticmethod
    def validate(checks: list[tuple[bool, str]]) -> None:
        """Raise ValueError with the message of the first failed (condition, message) check."""
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Self:
        """The configuration saved as ``values`` (``to_dict``), by the rules of ``added`` and
        ``removed``; ValueError for a field it cannot hold or a removed one in use."""
        for name, neutral in cls.removed.items():
            if name in values and values[name] != neutral:
                raise ValueError(
                    f"{name}={values[name]!r}: this version of pyro_saccade no longer has the "
                    f"{name} option; it reads only configurations saved with {name}={neutral!r}"
                )
        known = {f.name for f in dataclasses.fields(cls)}
        values = {**cls.added, **{k: v for k, v in values.items() if k not in cls.removed}}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**values)


class ClassifierConfigMixin(ConfigMixin):
    """A configuration with ``classes`` and ``task``."""

    classes: list[str]
    task: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def multilabel(self) -> bool:
        return self.task in ("mark", "multi")


@dataclass
class SaccadeConfig(ClassifierConfigMixin):
    """Everything that defines a model; saved as JSON beside its weights."""

    added: ClassVar[dict[str, object]] = {
        "posterior": "mlp",
        "posterior_std": 1.0,
        "posterior_std_max": None,
        "antialias": 1,
        "crop_pool": "max",
        "where": "none",
        "box_min": 32,
        "box_max": 128,
        "attention_weights": True,
        "learn_where": True,
        "ink_floor": 1e-4,
    }
    # Options measured without gain and used by no shipped model (docs/results.md).
    removed: ClassVar[dict[str, object]] = {"pair_evidence": False, "later_scale_max": None}

    classes: list[str] = field(
        default_factory=lambda: [f"{a}-{b}" for a in range(10) for b in range(a, 10)]
    )
    task: str = "identify"  # identify | sum | mark (multi-label) | photo
    channels: int = 1
    glimpses: int = 2  # T
    crop: int = 56  # L: side of each crop in pixels, whatever the image size
    antialias: int = 2  # k: each crop pixel averages k x k bilinear samples
    proxy: int = 32  # J: side of the proxy image
    scale_min: float = 0.3  # crop side as a fraction of the image's shorter side
    scale_max: float = 0.8
    # where: "none", z alone places a glimpse in [scale_min, scale_max] of the image; "cells", a
    # discrete where_t picks a cell of the proxy's feature map (J/4 x J/4 cells) and z_t places
    # a box of box_min..box_max pixels, whatever the image size, within a cell of its centre.
    where: str = "none"
    box_min: int = 32
    box_max: int = 128
    # cells: crop features times q(where_t) / q(where_t) held constant, which is 1, so that the
    # attention also gets the pathwise gradient of attention sampling (Katharopoulos & Fleuret
    # 2019) besides Trace_ELBO's score-function term
    attention_weights: bool = True
    # cells: whether the attention learns. Off, glimpses go where the proxy has ink, which
    # finds small objects on a dark canvas from the first step; a reader trained so can then
    # teach the attention what is worth reading (a second stage with it on, via --init).
    learn_where: bool = True
    # cells: the ink an empty cell counts as. Training draws where_t from the attention, and at
    # 1e-4 the thousands of empty cells of a 2528 x 2528 canvas drew most training glimpses
    # (about 70%) away from the two digits; the posterior mode is the same either way.
    ink_floor: float = 1e-6
    hidden: int = 256  # recurrent state
    rnn_layers: int = 1
    crop_width: int = 32  # channels of the crop encoder's first layers
    crop_features: int = 128
    # Both stay: the checkpoints saved without this field pool by "max" (see added).
    crop_pool: str = "max_mean"  # max_mean | max: crop features' maxima and means, or maxima
    proxy_width: int = 16
    proxy_features: int = 128
    z_features: int = 32
    head: str = "auto"  # linear | digit_pairs (networks.DigitPairHead) | auto: by task
    # state: read from h_t | crops: per-crop digit evidence, summed | mixture: per crop, the
    # likelihood that it shows one of the digits the label holds (networks.DigitPairHead).
    # "state" and "crops" stay for the checkpoints trained with them.
    evidence: str = "state"
    likelihood: str = "per_glimpse"  # per_glimpse (Eq. 6) | aggregate: once, at the end
    posterior: str = "saliency"  # saliency (networks.SaliencyHead) | mlp (networks.GaussianHead)
    posterior_std: float = 0.2  # initial standard deviation of q(z_t | c, h_{t-1})
    posterior_std_max: float | None = 0.5  # its bound (None: unbounded)
    proxy_likelihood: str = "bernoulli"  # bernoulli (continuous targets) | gaussian
    kl_weight: float = 0.05
    label_weight: float = 1.0
    proxy_weight: float = 0.001  # the proxy term has J*J pixels; see docs/results.md
    prior: str = "vrnn"
    prior_args: dict = field(default_factory=dict)
    # Posterior samples a prediction averages unless told otherwise (0: the posterior-mean
    # glimpses): the Monte-Carlo posterior predictive, which reads each object from several
    # nearby boxes. The shipped megapixel models average 8 (docs/results.md).
    predict_samples: int = 0

    def __post_init__(self) -> None:
        if self.head == "auto":
            self.head = "digit_pairs" if self.task in DIGIT_TASKS else "linear"
        checks = [
            (self.glimpses >= 1, f"glimpses must be at least 1, got {self.glimpses}"),
            (self.head in HEADS, f"head must be one of {HEADS}, got {self.head!r}"),
            (
                self.evidence in EVIDENCE,
                f"evidence must be one of {EVIDENCE}, got {self.evidence!r}",
            ),
            (
                self.head == "linear" or self.task in EVIDENCE_TASKS,
                f"the digit_pairs head needs a two-digit task, not {self.task!r}",
            ),
            (
                self.evidence != "mixture"
                or (self.head == "digit_pairs" and self.task in MIXTURE_TASKS),
                f"evidence='mixture' needs the digit_pairs head and a task of {MIXTURE_TASKS}, "
                f"not {self.head!r} on {self.task!r}",
            ),
            (self.crop >= 4, f"crop must be at least 4 pixels, got {self.crop}"),
            (
                self.crop_pool in CROP_POOLS,
                f"crop_pool must be one of {CROP_POOLS}, got {self.crop_pool!r}",
            ),
            (self.antialias >= 1, f"antialias must be at least 1, got {self.antialias}"),
            (
                self.proxy >= 4 and self.proxy % 4 == 0,
                f"proxy must be a positive multiple of 4, got {self.proxy}",
            ),
            (
                0 < self.scale_min < self.scale_max <= 1,
                f"need 0 < scale_min < scale_max <= 1, got {self.scale_min}, {self.scale_max}",
            ),
            (len(self.classes) >= 2, f"need at least 2 classes, got {len(self.classes)}"),
            (self.where in WHERE, f"where must be one of {WHERE}, got {self.where!r}"),
            (self.ink_floor > 0, f"ink_floor must be positive, got {self.ink_floor}"),
            (
                0 < self.box_min < self.box_max,
                f"need 0 < box_min < box_max pixels, got {self.box_min}, {self.box_max}",
            ),
            (self.channels >= 1, f"channels must be positive, got {self.channels}"),
            (
                self.predict_samples >= 0,
                f"predict_samples must be >= 0, got {self.predict_samples}",
            ),
            (
                self.likelihood in LIKELIHOODS,
                f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}",
            ),
            (
                self.posterior in POSTERIORS,
                f"posterior must be one of {POSTERIORS}, got {self.posterior!r}",
            ),
            (
                self.proxy_likelihood in PROXY_LIKELIHOODS,
                f"proxy_likelihood must be one of {PROXY_LIKELIHOODS}, "
                f"got {self.proxy_likelihood!r}",
            ),
            (
                min(self.kl_weight, self.label_weight, self.proxy_weight, self.posterior_std) > 0,
                "kl_weight, label_weight, proxy_weight and posterior_std must be positive",
            ),
            (
                self.posterior_std_max is None or self.posterior_std < self.posterior_std_max,
                f"posterior_std ({self.posterior_std}) must be below posterior_std_max "
                f"({self.posterior_std_max})",
            ),
        ]
        self.validate(checks)

    @property
    def cells(self) -> int:
        """Side G of the grid of cells where_t chooses from: that of the proxy's feature map."""
        return self.proxy // 4

    @property
    def smallest_side(self) -> int:
        """The smallest image side the model takes: below its crop or its proxy side it would
        only see the image upsampled."""
        return max(self.crop, self.proxy)

    def check_image(self, channels: int, height: int, width: int) -> None:
        """Raise ValueError unless an image of this shape suits the model: its channels, and
        sides no smaller than the crop and the proxy (the model would only see it upsampled)."""
        if channels != self.channels:
            raise ValueError(f"{channels} channels, but the model takes {self.channels}")
        side = self.smallest_side
        if min(height, width) < side:
            raise ValueError(
                f"{height}x{width} pixels, smaller than the model's {side}x{side} crop and proxy"
            )
