"""Two-digit cluttered MNIST (the DeepMind mnist-cluttered recipe), rendered at any canvas size.

Every canvas is a pure function of ``(seed, split, index)``: nothing is stored per item, so a
dataset of a million 2528x2528 canvases costs no more memory than one of ten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .background import Background, canvas_background, check_background, describe_background
from .canvas import GeneratedCanvases, PatchCanvas, collate_canvases
from .mnist import SPLITS, load_digits

TASKS = ("identify", "sum", "mark")
_PAIRS = [(a, b) for a in range(10) for b in range(a, 10)]
_PAIR_INDEX = {pair: i for i, pair in enumerate(_PAIRS)}
DIGIT_SIDE = 28  # MNIST digit side, and the digit side on the reference 100x100 canvas
PATCH_SIDE = 8  # distractor patch side on the reference canvas
REFERENCE_CANVAS = 100
# Ranges of the random warp of each digit with ``augment=True``: a rotation, a scaling and a
# horizontal shear, small enough that a digit stays the digit it was (a 6 does not become a 9).
WARP_DEGREES = 15.0
WARP_SCALE = (0.9, 1.1)
WARP_SHEAR = 0.2
# With ``overlap``, the share of the second digit's box that lies inside the first's: above half,
# where held-out accuracy is lowest (docs/results.md, "What limits accuracy").
OVERLAP_SHARE = 0.5

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def class_names(task: str) -> list[str]:
    """Class names: pairs ``"a-b"`` (a <= b) for identify, ``"0"``..``"18"`` for sum, digits."""
    _check_task(task)
    if task == "identify":
        return [f"{a}-{b}" for a, b in _PAIRS]
    return [str(k) for k in range(19 if task == "sum" else 10)]


def num_classes(task: str) -> int:
    """Number of classes (55, 19 or 10); for mark, the length of the multi-hot label."""
    return len(class_names(task))


def label_of(task: str, d1: int, d2: int) -> torch.Tensor:
    """Label of a canvas showing d1 and d2: an int64 scalar, or a float32 [10] multi-hot (mark)."""
    _check_task(task)
    if task == "identify":
        return torch.tensor(_PAIR_INDEX[min(d1, d2), max(d1, d2)])
    if task == "sum":
        return torch.tensor(d1 + d2)
    # The same digit twice marks one class: "mark" asks which digits are present.
    label = torch.zeros(10, dtype=torch.float32)
    label[[d1, d2]] = 1.0
    return label


def label_name(task: str, d1: int, d2: int) -> str:
    """Human-readable label: the class name, or the sorted digits joined by "+" for mark."""
    if task == "mark":
        return "+".join(str(d) for d in sorted((d1, d2)))
    return class_names(task)[int(label_of(task, d1, d2))]


def _canvas_shape(canvas: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (canvas, canvas) if isinstance(canvas, int) else tuple(canvas)
    if height < 1 or width < 1:
        raise ValueError(f"canvas sides must be positive, got {height}x{width}")
    return int(height), int(width)


def warp_matrix(degrees: float, scale: float, shear: float) -> torch.Tensor:
    """The 2x3 matrix for ``F.affine_grid`` that draws a digit rotated by ``degrees``, scaled by
    ``scale`` and sheared by ``shear``, about its centre (affine_grid maps output to input points,
    so it is the inverse of the warp)."""
    angle = np.deg2rad(degrees)
    rotation = torch.tensor(
        [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=torch.float32
    )
    forward = scale * rotation @ torch.tensor([[1.0, shear], [0.0, 1.0]])
    return torch.cat([torch.linalg.inv(forward), torch.zeros(2, 1)], 1)


def warp_digit(digit: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """A [h, w] float digit warped by a 2x3 ``warp_matrix``, the same size, ink outside it lost."""
    grid = F.affine_grid(matrix[None], [1, 1, *digit.shape], align_corners=False)
    return F.grid_sample(digit[None, None], grid, mode="bilinear", align_corners=False)[0, 0]


def _resize(patch: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a [h, w] float patch to side x side (antialiased, so downscaling does not alias)."""
    if patch.shape == (side, side):
        return patch
    return F.interpolate(
        patch[None, None], size=(side, side), mode="bilinear", align_corners=False, antialias=True
    )[0, 0]


def _place_over(rng: np.random.Generator, box: Box, height: int, width: int) -> Box:
    """A box the size of ``box``, inside the canvas, more than ``OVERLAP_SHARE`` of it inside
    ``box``. Shifting it back inside the canvas only moves it towards ``box``."""
    x0, y0, x1, y1 = box
    side = x1 - x0
    while True:
        dx, dy = (int(d) for d in rng.integers(-side + 1, side, size=2))
        if (side - abs(dx)) * (side - abs(dy)) > OVERLAP_SHARE * side * side:
            break
    x = min(max(x0 + dx, 0), width - side)
    y = min(max(y0 + dy, 0), height - side)
    return x, y, x + side, y + side


@dataclass(frozen=True)
class _Layout:
    """Everything random about one canvas: which digits and patches go where."""

    digit_indices: tuple[int, int]
    digit_boxes: tuple[Box, Box]
    patch_sources: tuple[tuple[int, int, int], ...]  # (digit index, row, column) of each patch
    patch_boxes: tuple[Box, ...]
    digit_warps: tuple[tuple[float, float, float], ...] = ()  # (degrees, scale, shear) per digit
    background: Background | None = None  # black


class TwoDigitCluttered(GeneratedCanvases):
    """Canvases with two MNIST digits and ``distractors`` 8x8 digit fragments.

    Item ``i`` is ``(image float32 [1, H, W] in [0, 1], label)`` with ``label`` an int64 scalar
    (identify, sum) or a float32 [10] multi-hot (mark). Digits and fragments scale with the canvas
    (side 28 and 8 on a 100x100 canvas) unless ``digit_size`` fixes the digit side in pixels.
    Intensities add and are clipped to [0, 1]. Train and test canvases draw from disjoint digits.
    With ``overlap`` that share of the canvases draw their second digit over the first, more than
    ``OVERLAP_SHARE`` of its box inside the first's (otherwise about 8% of canvases are such), to
    train more often on the canvases hardest to read; the other canvases are as without it.
    With ``augment`` each of the two digits is drawn rotated (up to ``WARP_DEGREES`` either way),
    scaled (``WARP_SCALE``) and sheared (``WARP_SHEAR``) at random, so that a training set of a
    few thousand digits shows each of them in many shapes; the layout is the same as without.
    With ``lazy`` item ``i`` is ``(PatchCanvas, label)`` ("add" mode, see :meth:`canvas`), which
    ``collate_canvases`` (the dataset's ``collate``) batches into a ``CanvasBatch``.
    ``background`` "white" or "clutter" paints the same canvases over a background drawn per
    canvas (``data.background``), as Megapixel MNIST does.
    """

    def __init__(
        self,
        task: str = "identify",
        canvas: int | tuple[int, int] = 100,
        n: int = 10000,
        distractors: int = 8,
        digit_size: int | None = None,
        split: str = "train",
        seed: int = 0,
        source: str = "bundled",
        root: str | Path | None = None,
        augment: bool = False,
        overlap: float = 0.0,
        lazy: bool = False,
        background: str = "black",
    ) -> None:
        _check_task(task)
        check_background(background)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n < 0 or distractors < 0:
            raise ValueError(
                f"n and distractors must be >= 0, got n={n}, distractors={distractors}"
            )
        if not 0 <= overlap <= 1:
            raise ValueError(f"overlap must lie in [0, 1], got {overlap}")
        if digit_size is not None and digit_size < 1:
            raise ValueError(f"digit_size must be positive, got {digit_size}")
        self.task, self.n, self.distractors, self.split, self.seed = (
            task,
            n,
            distractors,
            split,
            seed,
        )
        self.augment, self.overlap, self.lazy = augment, overlap, lazy
        self.background = background
        self.canvas_size = _canvas_shape(canvas)
        height, width = self.canvas_size
        if digit_size is None:
            scale = min(height, width) / REFERENCE_CANVAS
            self.digit_side = max(1, round(DIGIT_SIDE * scale))
        else:
            scale = digit_size / DIGIT_SIDE
            self.digit_side = digit_size
        self.patch_side = max(1, round(PATCH_SIDE * scale))
        if self.digit_side > min(height, width):
            raise ValueError(
                f"canvas {height}x{width} is smaller than a digit ({self.digit_side} px); "
                "use a larger canvas or a smaller digit_size"
            )
        self.digits, self.digit_labels = load_digits(source, split, root)
        self.classes = class_names(task)
        self.num_classes = len(self.classes)
        # The training loop batches with a dataset's own collate when it has one.
        self.collate = collate_canvases if lazy else None

    def _layout(self, i: int) -> _Layout:
        # A fresh generator per item makes each canvas independent of access order and workers.
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), i])
        height, width = self.canvas_size
        pool = len(self.digits)

        def place(side: int) -> Box:
            y0 = int(rng.integers(0, height - side + 1))
            x0 = int(rng.integers(0, width - side + 1))
            return x0, y0, x0 + side, y0 + side

        digit_indices = tuple(int(k) for k in rng.integers(0, pool, size=2))
        digit_boxes = (place(self.digit_side), place(self.digit_side))
        sources, boxes = [], []
        for _ in range(self.distractors):
            row, col = rng.integers(0, DIGIT_SIDE - PATCH_SIDE + 1, size=2)
            sources.append((int(rng.integers(0, pool)), int(row), int(col)))
            boxes.append(place(self.patch_side))
        # Drawn last, so that a canvas has the same digits and layout with and without warps.
        warps = tuple(
            (
                float(rng.uniform(-WARP_DEGREES, WARP_DEGREES)),
                float(rng.uniform(*WARP_SCALE)),
                float(rng.uniform(-WARP_SHEAR, WARP_SHEAR)),
            )
            for _ in range(2 if self.augment else 0)
        )
        if self.overlap and rng.random() < self.overlap:
            digit_boxes = (digit_boxes[0], _place_over(rng, digit_boxes[0], height, width))
        background = canvas_background(self.background, self.seed, SPLITS.index(self.split), i)
        return _Layout(digit_indices, digit_boxes, tuple(sources), tuple(boxes), warps, background)

    def describe(self, i: int) -> dict:
        """The digits drawn on canvas ``i``: their classes, indices into this split's digits,
        boxes ``(x0, y0, x1, y1)`` (exclusive ends), the boxes of the distractor patches and the
        background (``describe_background``)."""
        layout = self._layout(self._index(i))
        digits = [int(self.digit_labels[k]) for k in layout.digit_indices]
        return {
            "digits": digits,
            "digit_indices": list(layout.digit_indices),
            "boxes": list(layout.digit_boxes),
            "distractor_boxes": list(layout.patch_boxes),
            "label": label_name(self.task, *digits),
            "background": describe_background(self.background, layout.background),
        }

    def _canvas_of(self, layout: _Layout) -> PatchCanvas:
        digits = [self.digits[k] for k in layout.digit_indices]
        if layout.digit_warps:
            digits = [
                warp_digit(digit.float(), warp_matrix(*warp))
                for digit, warp in zip(digits, layout.digit_warps, strict=True)
            ]
        pieces = list(zip(digits, layout.digit_boxes, strict=True))
        pieces += [
            (self.digits[k, row : row + PATCH_SIDE, col : col + PATCH_SIDE], box)
            for (k, row, col), box in zip(layout.patch_sources, layout.patch_boxes, strict=True)
        ]
        height, width = self.canvas_size
        return PatchCanvas.from_pieces(
            height,
            width,
            [
                (_resize(patch.float() / 255.0, x1 - x0), (x0, y0))
                for patch, (x0, y0, x1, y1) in pieces
            ],
            mode="add",
            background=layout.background,
        )

    def canvas(self, i: int) -> PatchCanvas:
        """Canvas ``i`` as a lazy PatchCanvas ("add" mode): its digits and fragments resized
        (and warped) as drawn, so that ``canvas(i).dense()`` is ``self[i][0]`` of a dense
        dataset."""
        return self._canvas_of(self._layout(self._index(i)))

    def __getitem__(self, i: int) -> tuple[torch.Tensor | PatchCanvas, torch.Tensor]:
        layout = self._layout(self._index(i))
        canvas = self._canvas_of(layout)
        d1, d2 = (int(self.digit_labels[k]) for k in layout.digit_indices)
        return (canvas if self.lazy else canvas.dense()), label_of(self.task, d1, d2)

    def __repr__(self) -> str:
        height, width = self.canvas_size
        return (
            f"{type(self).__name__}(task={self.task!r}, canvas={height}x{width}, n={self.n}, "
            f"distractors={self.distractors}, digit_side={self.digit_side}, split={self.split!r}, "
            f"seed={self.seed}, augment={self.augment}, overlap={self.overlap}, lazy={self.lazy}, "
            f"background={self.background!r})"
        )
