"""Configuration of a saccade model: one dataclass, the single source of every default.

A checkpoint saves it as JSON beside the weights. Where a glimpse may go is one nested section,
``where``: the paper's free placement (``FreeWhere``) or the attention over proxy cells for small
objects on large images (``CellsWhere``), each with only the settings it uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Self

FORMAT_VERSION = 2
LIKELIHOODS = ("aggregate", "per_glimpse")
HEADS = ("linear", "digit_pairs")
DIGIT_TASKS = ("identify", "sum", "mark")
# Tasks answered from per-digit evidence read off each crop (networks.DigitPairHead), so a
# digit-pair model's reader answers them with its weights as they are: Megapixel MNIST's.
EVIDENCE_TASKS = (*DIGIT_TASKS, "majority", "max", "top", "multi")
EVIDENCE = ("crops", "mixture", "shown", "state")
# Tasks whose label says which digits the crops can show (networks.DigitPairHead, "mixture").
MIXTURE_TASKS = ("identify", "sum", "majority")
# Tasks whose label is a function of what each crop shows, a digit or nothing, and where
# ("shown"; networks.shown_logits); the digit-pair head reads the last three no other way.
SHOWN_TASKS = ("majority", "max", "top", "multi")
SHOWN_ONLY_TASKS = ("max", "top", "multi")
# Proxy pixels per side of a cell of the proxy encoder's feature map, which has two stride-2
# layers: the cells where_t chooses from, and the grid SaliencyHead scores.
CELL = 4
# The proxy decoder reconstructs the proxy at most this side: a larger proxy is there to find
# small objects, and decoding it whole would cost more weights than the rest of the model.
DECODED_PROXY = 32
# The most a proxy side grows on a large image (``SaccadeConfig.proxy_side``): up to twice the
# trained side, objects keep their proxy size (docs/results.md measures the gain there); the cost
# grows with the proxy's area, and at twice the side a prediction on a 100,000² canvas stays within
# twice that at the trained side (docs/benchmarks.md). Beyond it objects shrink on the proxy, and
# the warning for unfamiliar inputs says so.
MAX_PROXY_SCALE = 2


class ConfigMixin:
    """What every configuration dataclass shares: validation and a JSON-ready dict."""

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
        """The configuration saved as ``values`` (``to_dict``); ValueError for a field it does
        not have."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
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
class FreeWhere(ConfigMixin):
    """The paper's placement: z_t alone places a glimpse anywhere in the image, its side in
    [scale_min, scale_max] of the image's shorter side."""

    kind = "free"
    scale_min: float = 0.3
    scale_max: float = 0.8

    def __post_init__(self) -> None:
        self.validate(
            [
                (
                    0 < self.scale_min < self.scale_max <= 1,
                    f"need 0 < scale_min < scale_max <= 1, got {self.scale_min}, {self.scale_max}",
                )
            ]
        )


@dataclass
class CellsWhere(ConfigMixin):
    """Small objects on large images: a discrete where_t picks a cell of the proxy's feature map
    (J/4 x J/4 cells) and z_t places a box of ``box_range()`` pixels, whatever the image size,
    within a cell of the cell's aim (where.Cells)."""

    kind = "cells"
    # The side in pixels of the objects the glimpses read. The rest follows from it: the range
    # of a glimpse's box (unless set), the cells a look marks as read, and the windows whose
    # median is the background the model reads contrast against (contrast.py).
    object_size: int = 28
    box_min: int | None = None  # pixels; None: one object
    box_max: int | None = None  # pixels; None: four objects
    # Whether the attention learns. Off, glimpses go where the proxy has ink, which finds small
    # objects from the first step; a reader trained so can then teach the attention what is
    # worth reading.
    learn: bool = True
    # The ink an empty cell counts as. Training draws where_t from the attention, and at 1e-4
    # the thousands of empty cells of a 2528 x 2528 canvas drew most training glimpses (about
    # 70%) away from the two digits; the posterior mode is the same either way.
    ink_floor: float = 1e-6
    # p(where_t | c, h_{t-1}), by its name in where_priors.WHERE_PRIORS and its arguments: the
    # attention itself (a KL of zero), or a belief about where to look that the KL term of
    # where_t holds the attention to.
    prior: str = "attention"
    prior_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        low, high = self.box_range()
        self.validate(
            [
                (self.object_size > 0, f"object_size must be positive, got {self.object_size}"),
                (0 < low < high, f"need 0 < box_min < box_max pixels, got {low}, {high}"),
                (self.ink_floor > 0, f"ink_floor must be positive, got {self.ink_floor}"),
            ]
        )

    def box_range(self) -> tuple[int, int]:
        """The least and the largest side in pixels of a glimpse's box: ``box_min`` and
        ``box_max``, or one and four times ``object_size`` where they are not set."""
        low = self.object_size if self.box_min is None else self.box_min
        high = 4 * self.object_size if self.box_max is None else self.box_max
        return low, high


WHERE = {kind.kind: kind for kind in (FreeWhere, CellsWhere)}


def where_from(value: FreeWhere | CellsWhere | str | dict) -> FreeWhere | CellsWhere:
    """A ``where`` section from its dataclass, its kind's name ("free", "cells") with the
    defaults, or a dict with a "kind" key and that kind's settings."""
    if isinstance(value, (FreeWhere, CellsWhere)):
        return value
    values = {"kind": value} if isinstance(value, str) else dict(value)
    kind = values.pop("kind", "free")
    if kind not in WHERE:
        raise ValueError(f"where must be one of {tuple(WHERE)}, got {kind!r}")
    return WHERE[kind].from_dict(values)


@dataclass
class SaccadeConfig(ClassifierConfigMixin):
    """Everything that defines a model; saved as JSON beside its weights."""

    classes: list[str] = field(
        default_factory=lambda: [f"{a}-{b}" for a in range(10) for b in range(a, 10)]
    )
    task: str = "identify"  # identify | sum | mark (multi-label) | majority | max | ... | photo
    channels: int = 1
    glimpses: int = 2  # T
    crop: int = 56  # L: side of each crop in pixels, whatever the image size
    antialias: int = 2  # k: each crop pixel averages k x k bilinear samples
    proxy: int = 32  # J: side of the proxy image (across its shorter side, for another shape)
    # The shorter image side that J is for: on an image of another resolution the proxy's side
    # scales in proportion (``proxy_side``), so that an object keeps its size in proxy pixels.
    # None: J on every image.
    proxy_for: int | None = None
    where: FreeWhere | CellsWhere = field(default_factory=FreeWhere)
    hidden: int = 256  # recurrent state
    crop_width: int = 32  # channels of the crop encoder's first layers
    crop_features: int = 128
    proxy_width: int = 16
    proxy_features: int = 128
    z_features: int = 32
    head: str = "auto"  # linear | digit_pairs (networks.DigitPairHead) | auto: by task
    # state: read from h_t | crops: per-crop digit evidence, summed | mixture: per crop, the
    # likelihood that it shows one of the digits the label holds | shown: per crop, a digit or
    # nothing, and the label a function of what the crops show and where (networks.DigitPairHead).
    evidence: str = "state"
    likelihood: str = "per_glimpse"  # per_glimpse (Eq. 6) | aggregate: once, at the end
    posterior_std: float = 0.2  # initial standard deviation of q(z_t | c, h_{t-1})
    posterior_std_max: float | None = 0.5  # its bound (None: unbounded)
    kl_weight: float = 0.05
    proxy_weight: float = 0.001  # the proxy term has J*J pixels; see docs/results.md
    # A prediction's class probabilities, its draws' averaged, are tempered by it (p^(1/T),
    # normalised), which keeps every answer: fitted on held-out images after training
    # (calibration.py, saccade calibrate), so that a probability of 0.9 is right 9 times in 10.
    temperature: float = 1.0
    prior: str = "vrnn"
    prior_args: dict = field(default_factory=dict)
    # Posterior samples a prediction averages unless told otherwise (0: the posterior-mean
    # glimpses): the Monte-Carlo posterior predictive, which reads each object from several
    # nearby boxes. The shipped megapixel models average 8 (docs/results.md).
    predict_samples: int = 0

    def __post_init__(self) -> None:
        self.where = where_from(self.where)
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
                self.task not in SHOWN_ONLY_TASKS
                or self.head == "linear"
                or self.evidence == "shown",
                f"the digit_pairs head reads {self.task!r} from the crops: evidence='shown'",
            ),
            (
                self.evidence != "mixture"
                or (self.head == "digit_pairs" and self.task in MIXTURE_TASKS),
                f"evidence='mixture' needs the digit_pairs head and a task of {MIXTURE_TASKS}, "
                f"not {self.head!r} on {self.task!r}",
            ),
            (
                self.evidence != "shown"
                or (self.head == "digit_pairs" and self.task in SHOWN_TASKS),
                f"evidence='shown' needs the digit_pairs head and a task of {SHOWN_TASKS}, "
                f"not {self.head!r} on {self.task!r}",
            ),
            (self.crop >= 4, f"crop must be at least 4 pixels, got {self.crop}"),
            (self.antialias >= 1, f"antialias must be at least 1, got {self.antialias}"),
            (
                self.proxy >= CELL and self.proxy % CELL == 0,
                f"proxy must be a positive multiple of {CELL}, got {self.proxy}",
            ),
            (
                self.proxy_for is None or self.proxy_for >= 1,
                f"proxy_for must be None or positive, got {self.proxy_for}",
            ),
            (len(self.classes) >= 2, f"need at least 2 classes, got {len(self.classes)}"),
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
                min(self.kl_weight, self.proxy_weight, self.posterior_std, self.temperature) > 0,
                "kl_weight, proxy_weight, posterior_std and temperature must be positive",
            ),
            (
                self.posterior_std_max is None or self.posterior_std < self.posterior_std_max,
                f"posterior_std ({self.posterior_std}) must be below posterior_std_max "
                f"({self.posterior_std_max})",
            ),
        ]
        self.validate(checks)

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "where": {"kind": self.where.kind, **self.where.to_dict()},
        }

    @property
    def cells(self) -> int:
        """Side G of the grid of cells of the proxy's feature map."""
        return self.proxy // CELL

    def proxy_side(self, height: int, width: int) -> int:
        """The proxy side (``data.proxy_shape``) for a ``height`` x ``width`` image: J, or with
        ``proxy_for`` J in proportion to the image's shorter side, a whole number of cells and
        at most ``MAX_PROXY_SCALE`` times J."""
        if self.proxy_for is None:
            return self.proxy
        scaled = CELL * round(self.proxy * min(height, width) / self.proxy_for / CELL)
        return min(max(CELL, scaled), MAX_PROXY_SCALE * self.proxy)

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


def updated(config: SaccadeConfig, settings: dict) -> SaccadeConfig:
    """``config`` with ``settings``: fields by name, the ``where`` section by kind ("cells") or
    by its own fields as a nested dict (``{"where": {"box_min": 24}}``), merged into the current
    section unless the kind changes. ValueError for a field the config does not have."""
    values = config.to_dict()
    for key, value in settings.items():
        if key == "where" and isinstance(value, (str, dict)):
            value = {"kind": value} if isinstance(value, str) else value
            if value.get("kind") in (None, values[key]["kind"]):  # the same kind: merged
                value = {**values[key], **value}
        values[key] = value
    return SaccadeConfig.from_dict(values)
