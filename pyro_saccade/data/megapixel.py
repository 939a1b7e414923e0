"""Megapixel MNIST (Katharopoulos & Fleuret, ICML 2019): five 28-px digits and line-pair noise
on a large canvas, with the original ``majority`` task and Iterative Patch Selection's ``max``,
``top`` and ``multi``.

Every canvas is a pure function of ``(seed, split, index)`` and is built as a
:class:`~pyro_saccade.data.canvas.PatchCanvas`, so that it can be cropped and downsampled
without being drawn (``lazy=True``). Its digits and scribbles are the same on every
``background`` (``data.background``): black (the original), white, or clutter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .background import Background, canvas_background, check_background, describe_background
from .canvas import GeneratedCanvases, PatchCanvas, collate_canvases
from .mnist import SPLITS, load_digits

MEGAPIXEL_TASKS = ("majority", "max", "top", "multi")
DIGIT_SIDE = 28
DIGITS = 5  # per canvas
TARGET_DIGITS = 3  # of the target class; the others are of any other class
# The share of a canvas's digits that are of its majority class: what a crop of a digit shows.
TARGET_SHARE = TARGET_DIGITS / DIGITS
NOISE_PATTERNS = 50  # shared by all canvases of a split
# Where a canvas's scribble patterns come from: the split's one set (ATS's protocol), or a set
# of its own, so that a model trained on them takes no one set's lines for digits.
PATTERN_SETS = ("split", "canvas")
NOISE_FLIP = 0.33  # chance that a pattern's second line is mirrored
NOISE_INTENSITY = (0.8, 1.0)
# The smallest canvas side: room for five 28-px digits in non-overlapping boxes wherever the
# first four fall (four boxes block at most 4 x 55^2 top-left positions), and for noise.
MIN_SIDE = 140
# Appended to (seed, split) to seed the noise patterns. Items use (seed, split, i), and a seed
# sequence pads short keys with zeros, so the tag must be a nonzero fourth word. A canvas's own
# set appends (_NOISE_KEY, 1) to its item's key: canvas 0 of seed 0 would otherwise draw the
# split's set.
_NOISE_KEY = 0x6E6F6973

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive


def noise_patterns(rng: np.random.Generator) -> torch.Tensor:
    """``NOISE_PATTERNS`` float32 [28, 28] scribbles: each a straight line of slope
    tan(u pi / 2.5) from a corner, OR-ed with another pattern's line (mirrored left-right with
    probability ``NOISE_FLIP``), times a per-pixel intensity in ``NOISE_INTENSITY``."""
    slopes = np.tan(rng.random(NOISE_PATTERNS) * np.pi / 2.5)
    lines = np.zeros((NOISE_PATTERNS, DIGIT_SIDE, DIGIT_SIDE))
    end = DIGIT_SIDE - 0.51  # rounds to the last pixel, not past it
    for k, slope in enumerate(slopes):
        x = np.linspace(0.0, min(end, end / slope), 2 * DIGIT_SIDE)
        lines[k, np.round(x).astype(int), np.round(slope * x).astype(int)] = 1.0
    others = lines[rng.permutation(NOISE_PATTERNS)]
    flip = rng.random(NOISE_PATTERNS) < NOISE_FLIP
    others[flip] = others[flip, :, ::-1]
    intensity = rng.uniform(*NOISE_INTENSITY, size=lines.shape)
    return torch.from_numpy(((lines + others) > 0) * intensity).float()


def megapixel_label(task: str, digits: list[int], boxes: list[Box], target: int) -> torch.Tensor:
    """Label of a canvas: the target class (majority), the largest digit (max), the digit whose
    box is nearest the top edge, leftmost on a tie (top), all int64; or a float32 [10] multi-hot
    of the classes present (multi)."""
    if task == "majority":
        return torch.tensor(target)
    if task == "max":
        return torch.tensor(max(digits))
    if task == "top":
        first = min(range(len(digits)), key=lambda k: (boxes[k][1], boxes[k][0]))
        return torch.tensor(digits[first])
    if task == "multi":
        label = torch.zeros(10, dtype=torch.float32)
        label[digits] = 1.0
        return label
    raise ValueError(f"task must be one of {MEGAPIXEL_TASKS}, got {task!r}")


def megapixel_label_name(task: str, digits: list[int], boxes: list[Box], target: int) -> str:
    """The label as text: the class, or the classes present joined by "+" (multi)."""
    if task == "multi":
        return "+".join(str(d) for d in sorted(set(digits)))
    return str(int(megapixel_label(task, digits, boxes, target)))


@dataclass(frozen=True)
class _Layout:
    """Everything random about one canvas."""

    target: int
    digit_indices: tuple[int, ...]
    digit_boxes: tuple[Box, ...]
    noise_patterns: tuple[int, ...]
    noise_boxes: tuple[Box, ...]
    background: Background | None = None  # black
    patterns: torch.Tensor | None = None  # the canvas's own pattern set; None: the split's


class MegapixelMNIST(GeneratedCanvases):
    """Canvases with five MNIST digits, three of a target class, and ``noise`` line-pair boxes.

    Digits keep their 28 px and sit in non-overlapping boxes anywhere on the canvas; noise boxes
    (each one of ``NOISE_PATTERNS`` patterns drawn once per seed and split) have their top-left
    corners in [28, H - 28) x [28, W - 28) and are painted after the digits, each replacing what
    is under its whole box. Item ``i`` is ``(image float32 [1, H, W], label)``, or with ``lazy``
    ``(PatchCanvas, label)``, which ``collate_canvases`` batches into a ``CanvasBatch`` (the
    dataset's ``collate``). Labels: int64 class for majority, max and top; float32 [10]
    multi-hot for multi. Train and test canvases draw from disjoint digits. ``background``
    "white" paints the same canvases 1 - x, "clutter" paints their ink in black or white over a
    smooth random field (``data.background.Background``), both drawn per canvas.
    ``pattern_set`` "canvas" draws each canvas's ``NOISE_PATTERNS`` scribbles afresh instead
    of from the split's one set.
    """

    def __init__(
        self,
        task: str = "majority",
        canvas: int | tuple[int, int] = 1500,
        n: int = 5000,
        noise: int = 50,
        split: str = "train",
        seed: int = 0,
        source: str = "bundled",
        root: str | Path | None = None,
        lazy: bool = False,
        background: str = "black",
        pattern_set: str = "split",
    ) -> None:
        check_background(background)
        if pattern_set not in PATTERN_SETS:
            raise ValueError(f"pattern_set must be one of {PATTERN_SETS}, got {pattern_set!r}")
        if task not in MEGAPIXEL_TASKS:
            raise ValueError(f"task must be one of {MEGAPIXEL_TASKS}, got {task!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n < 0 or noise < 0:
            raise ValueError(f"n and noise must be >= 0, got n={n}, noise={noise}")
        height, width = (canvas, canvas) if isinstance(canvas, int) else tuple(canvas)
        if min(height, width) < MIN_SIDE:
            raise ValueError(f"canvas sides must be at least {MIN_SIDE}, got {height}x{width}")
        self.task, self.n, self.noise, self.split, self.seed = task, n, noise, split, seed
        self.canvas_size = int(height), int(width)
        self.lazy, self.background, self.pattern_set = lazy, background, pattern_set
        self.digits, self.digit_labels = load_digits(source, split, root)
        labels = self.digit_labels.numpy()
        self._of_class = [np.flatnonzero(labels == c) for c in range(10)]
        self._not_class = [np.flatnonzero(labels != c) for c in range(10)]
        empty = [c for c in range(10) if not len(self._of_class[c]) or not len(self._not_class[c])]
        if empty:
            raise ValueError(f"the {split} digits lack class(es) {empty}, or all other classes")
        split_index = SPLITS.index(split)
        self.noise_patterns = noise_patterns(
            np.random.default_rng([seed, split_index, 0, _NOISE_KEY])
        )
        self.classes = [str(k) for k in range(10)]
        self.num_classes = 10
        # The training loop batches with a dataset's own collate when it has one.
        self.collate = collate_canvases if lazy else None

    def _layout(self, i: int) -> _Layout:
        # A fresh generator per item makes each canvas independent of access order and workers.
        key = [self.seed, SPLITS.index(self.split), i]
        rng = np.random.default_rng(key)
        height, width = self.canvas_size
        target = int(rng.integers(10))
        indices = np.concatenate(
            [
                rng.choice(self._of_class[target], TARGET_DIGITS),
                rng.choice(self._not_class[target], DIGITS - TARGET_DIGITS),
            ]
        )
        corners: list[tuple[int, int]] = []
        while len(corners) < DIGITS:
            y0 = int(rng.integers(0, height - DIGIT_SIDE + 1))
            x0 = int(rng.integers(0, width - DIGIT_SIDE + 1))
            if all(abs(x0 - x) >= DIGIT_SIDE or abs(y0 - y) >= DIGIT_SIDE for x, y in corners):
                corners.append((x0, y0))
        patterns = rng.integers(0, NOISE_PATTERNS, size=self.noise)
        noise_y = rng.integers(DIGIT_SIDE, height - DIGIT_SIDE, size=self.noise)
        noise_x = rng.integers(DIGIT_SIDE, width - DIGIT_SIDE, size=self.noise)
        return _Layout(
            target,
            tuple(int(k) for k in indices),
            tuple((x, y, x + DIGIT_SIDE, y + DIGIT_SIDE) for x, y in corners),
            tuple(int(p) for p in patterns),
            tuple(
                (int(x), int(y), int(x) + DIGIT_SIDE, int(y) + DIGIT_SIDE)
                for x, y in zip(noise_x, noise_y, strict=True)
            ),
            canvas_background(self.background, self.seed, SPLITS.index(self.split), i),
            None
            if self.pattern_set == "split"
            else noise_patterns(np.random.default_rng([*key, _NOISE_KEY, 1])),
        )

    def _canvas_of(self, layout: _Layout) -> PatchCanvas:
        """The canvas of a layout: digits, then noise, each replacing what is under it, over
        the layout's background."""
        digits = self.digits[list(layout.digit_indices)].float() / 255.0
        patterns = self.noise_patterns if layout.patterns is None else layout.patterns
        patches = torch.cat([digits, patterns[list(layout.noise_patterns)]])
        boxes = torch.tensor(layout.digit_boxes + layout.noise_boxes, dtype=torch.int64)
        sides = torch.full((len(patches),), DIGIT_SIDE, dtype=torch.int64)
        height, width = self.canvas_size
        return PatchCanvas(
            height, width, patches, sides, boxes.view(-1, 4), "replace", layout.background
        )

    def canvas(self, i: int) -> PatchCanvas:
        """Canvas ``i`` as a lazy PatchCanvas."""
        return self._canvas_of(self._layout(self._index(i)))

    def _label(self, layout: _Layout) -> tuple[list[int], torch.Tensor]:
        digits = [int(self.digit_labels[k]) for k in layout.digit_indices]
        return digits, megapixel_label(self.task, digits, list(layout.digit_boxes), layout.target)

    def describe(self, i: int) -> dict:
        """What canvas ``i`` shows: its digits' classes, indices into this split's digits and
        boxes ``(x0, y0, x1, y1)`` (exclusive ends), the target class, the noise boxes and
        patterns, the label as text and the background (``describe_background``)."""
        layout = self._layout(self._index(i))
        digits, _ = self._label(layout)
        return {
            "digits": digits,
            "digit_indices": list(layout.digit_indices),
            "boxes": list(layout.digit_boxes),
            "target": layout.target,
            "noise_boxes": list(layout.noise_boxes),
            "noise_patterns": list(layout.noise_patterns),
            "label": megapixel_label_name(
                self.task, digits, list(layout.digit_boxes), layout.target
            ),
            "background": describe_background(self.background, layout.background),
        }

    def __getitem__(self, i: int) -> tuple[torch.Tensor | PatchCanvas, torch.Tensor]:
        layout = self._layout(self._index(i))
        canvas = self._canvas_of(layout)
        _, label = self._label(layout)
        return (canvas if self.lazy else canvas.dense()), label

    def __repr__(self) -> str:
        height, width = self.canvas_size
        return (
            f"{type(self).__name__}(task={self.task!r}, canvas={height}x{width}, n={self.n}, "
            f"noise={self.noise}, split={self.split!r}, seed={self.seed}, lazy={self.lazy}, "
            f"background={self.background!r}, pattern_set={self.pattern_set!r})"
        )
