"""What a saccade model's glimpses read, measured on images whose deciding objects are known:
canvases, whose digits are, and photos with a ``boxes.csv`` (``data.photos.read_boxes``).

- **coverage**: the share of the digits that decide a canvas's label (``deciding_digits``) that
  are *covered*: at least ``COVER_SHARE`` of the digit's box inside one glimpse box whose side is
  at most ``COVER_RATIO`` times the digit's side, so that the crop shows the digit at no less
  than a quarter of its native resolution; with posterior draws, of each draw's glimpses (what
  the policy finds, not what many draws happen to cover);
- **pixels read**: the area of the union of a canvas's glimpse boxes, of every draw (what the
  prediction reads), clipped to the image, over the image's area;
- the mean glimpse **box side** in pixels.

``evaluate_glimpses`` reports them beside the accuracy, the accuracy of the same model with its
glimpses at random places (``random=True``: what the learned policy adds), and optionally that
of a baseline (the proxy-only CNN: what the proxy alone answers) on the same canvases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .calibration import reliability, scores
from .data import MEGAPIXEL_TASKS, TASKS, PhotoFolder, proxies_of, proxy_shape
from .familiar import shapes_of
from .glimpse import clip_boxes
from .model import SaccadeModel
from .prediction import Prediction, boxes, infer, predict
from .training.batches import collate, correct, prepare

COVER_SHARE = 0.5  # share of a digit's box that must lie inside one glimpse box
COVER_RATIO = 4.0  # largest glimpse side, in digit sides, that still counts as reading it


def deciding_digits(task: str, description: dict) -> list[int]:
    """Indices into ``description["digits"]`` (a dataset's ``describe(i)``) of the digits that
    decide the label: majority, the digits of the target class; max, those of the largest
    class; top, the topmost digit (leftmost on a tie); multi and the two-digit tasks, all."""
    digits, boxes = description["digits"], description["boxes"]
    if task == "majority":
        return [k for k, digit in enumerate(digits) if digit == description["target"]]
    if task == "max":
        return [k for k, digit in enumerate(digits) if digit == max(digits)]
    if task == "top":
        return [min(range(len(digits)), key=lambda k: (boxes[k][1], boxes[k][0]))]
    if task == "multi" or task in TASKS:
        return list(range(len(digits)))
    raise ValueError(f"no deciding digits for task {task!r} (known: {TASKS + MEGAPIXEL_TASKS})")


def deciding_boxes(task: str, description: dict) -> Tensor:
    """The boxes [D, 4] (x0, y0, x1, y1) of a canvas's deciding digits."""
    boxes = description["boxes"]
    chosen = [boxes[k] for k in deciding_digits(task, description)]
    return torch.tensor(chosen, dtype=torch.float64).view(-1, 4)


def has_deciding_boxes(dataset: Dataset) -> bool:
    """Whether the images of ``dataset`` say where the objects that decide their labels are:
    canvases that ``describe`` their digits, photos with a ``boxes.csv``."""
    if isinstance(dataset, PhotoFolder):
        return bool(dataset.boxes)
    return hasattr(dataset, "describe") and hasattr(dataset, "task")


def deciding_boxes_of(dataset: Dataset, i: int) -> Tensor:
    """The boxes [D, 4] of the objects that decide the label of image ``i`` of ``dataset``
    (``has_deciding_boxes``): a canvas's deciding digits, a photo's listed objects."""
    if isinstance(dataset, PhotoFolder):
        return dataset.object_boxes(i)
    return deciding_boxes(dataset.task, dataset.describe(i))


def box_sides(boxes: Tensor) -> Tensor:
    """The side of square boxes [..., 4] (x0, y0, x1, y1): their longer side, should one not be."""
    return torch.maximum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])


def covered(
    digits: Tensor, glimpses: Tensor, share: float = COVER_SHARE, ratio: float = COVER_RATIO
) -> Tensor:
    """Which digit boxes [D, 4] are covered by glimpse boxes [N, 4] (all (x0, y0, x1, y1)): at
    least ``share`` of the digit's box inside one glimpse box of side at most ``ratio`` times
    the digit's side. Bool [D]."""
    digits, glimpses = digits.double()[:, None], glimpses.double()[None]
    width = (
        torch.minimum(digits[..., 2], glimpses[..., 2])
        - torch.maximum(digits[..., 0], glimpses[..., 0])
    ).clamp(min=0)
    height = (
        torch.minimum(digits[..., 3], glimpses[..., 3])
        - torch.maximum(digits[..., 1], glimpses[..., 1])
    ).clamp(min=0)
    area = (digits[..., 2] - digits[..., 0]) * (digits[..., 3] - digits[..., 1])
    inside = width * height >= share * area
    close = box_sides(glimpses) <= ratio * box_sides(digits)
    return (inside & close).any(-1)


def union_area(boxes: Tensor, height: int, width: int) -> float:
    """The area of the union of boxes [N, 4] (x0, y0, x1, y1) clipped to a ``height`` x
    ``width`` image, exactly: on the grid of the boxes' own coordinates (at most 2N x 2N cells,
    whatever the image's size), each cell is wholly inside a box or wholly outside."""
    boxes = clip_boxes(boxes.detach().double().reshape(-1, 4).cpu(), height, width)
    xs = torch.unique(boxes[:, [0, 2]])
    ys = torch.unique(boxes[:, [1, 3]])
    if len(xs) < 2 or len(ys) < 2:
        return 0.0
    # A cell [xs[i], xs[i + 1]) lies in a box when the box spans both its edges.
    in_x = (boxes[:, None, 0] <= xs[None, :-1]) & (xs[None, 1:] <= boxes[:, None, 2])
    in_y = (boxes[:, None, 1] <= ys[None, :-1]) & (ys[None, 1:] <= boxes[:, None, 3])
    inside = (in_y[:, :, None] & in_x[:, None, :]).any(0)
    cells = (ys[1:] - ys[:-1])[:, None] * (xs[1:] - xs[:-1])[None, :]
    return float((cells * inside).sum())


@dataclass
class GlimpseEvaluation:
    """Accuracy and what the glimpses read on ``n`` canvases; the glimpse measures are None for
    a model without glimpses (a baseline) and coverage also for canvases without ``describe``."""

    n: int
    accuracy: float
    # calibration.scores of the model's probabilities, and its reliability diagram: per bin of
    # confidence, [mean confidence, accuracy, answers]
    nll: float | None = None
    ece: float | None = None
    brier: float | None = None
    reliability: list[list[float]] | None = None
    glimpses: int | None = None
    coverage: float | None = None  # covered deciding digits / deciding digits, per draw
    deciding_digits: int | None = None  # how many, over all canvases (and posterior draws)
    # mean over canvases of the union of the boxes of every draw / image area: what a
    # prediction reads
    pixels_read: float | None = None
    box_side: float | None = None  # mean glimpse box side in pixels
    box_sides: list[float] | None = None  # the same per glimpse step
    random_glimpses_accuracy: float | None = None
    random_glimpses_coverage: float | None = None  # the coverage of those random glimpses
    proxy_baseline_accuracy: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class RNGStream:
    """A torch random stream of its own: what is drawn under ``active()`` continues this stream
    and leaves the global one as it was, so that an extra pass (random glimpses, noisy proxies
    of a baseline) changes neither the main pass's draws nor its accuracy."""

    def __init__(self, seed: int) -> None:
        self.state = torch.Generator().manual_seed(seed).get_state()

    @contextmanager
    def active(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            yield
            self.state = torch.get_rng_state()


class _Tally:
    """Running sums of the glimpse measures."""

    def __init__(self, glimpses: int) -> None:
        self.covered = self.deciding = 0
        self.read, self.canvases = 0.0, 0
        self.sides = torch.zeros(glimpses, dtype=torch.float64)
        self.boxes = 0

    def add(self, boxes: Tensor, height: int, width: int, digits: list[Tensor] | None) -> None:
        """Boxes [S, B, T, 4] of S draws on B canvases; the deciding digits' boxes [D_b, 4] of
        each canvas, or None."""
        boxes = boxes.detach().double().cpu()
        self.sides += box_sides(boxes).sum((0, 1))
        self.boxes += boxes.shape[0] * boxes.shape[1]
        for b in range(boxes.shape[1]):
            read = boxes[:, b].reshape(-1, 4)  # a prediction reads every draw's crops
            self.read += union_area(read, height, width) / (height * width)
            self.canvases += 1
            if digits is not None:  # the policy's coverage: each draw on its own
                for draw in boxes[:, b]:
                    self.covered += int(covered(digits[b], draw).sum())
                    self.deciding += len(digits[b])

    def add_prediction(
        self, model: SaccadeModel, out: Prediction, images: object, digits: list[Tensor] | None
    ) -> None:
        """The glimpses of a prediction ``out`` of ``images`` (a batch of images of one size,
        or photos of any), image by image at its own size."""
        for b, (_, height, width) in enumerate(shapes_of(images)):
            centres = None if out.centres is None else out.centres[:, b : b + 1]
            placed = boxes(model, out.z[:, b : b + 1], height, width, centres)
            self.add(placed, height, width, None if digits is None else digits[b : b + 1])

    @property
    def coverage(self) -> float:
        return self.covered / max(self.deciding, 1)

    def fill(self, result: GlimpseEvaluation, described: bool) -> None:
        sides = self.sides / max(self.boxes, 1)
        result.box_sides = sides.tolist()
        result.box_side = float(sides.mean())
        result.pixels_read = self.read / max(self.canvases, 1)
        if described:
            result.deciding_digits = self.deciding
            result.coverage = self.coverage


@torch.no_grad()
def evaluate_glimpses(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 100,
    samples: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    random_glimpses: bool = True,
    proxy_baseline: nn.Module | None = None,
    progress: bool | None = None,
    workers: int = 0,
) -> GlimpseEvaluation:
    """Accuracy on ``dataset`` (``samples`` and ``seed`` as ``prediction.infer`` takes them)
    and, for a ``SaccadeModel``, coverage, pixels read, box sides and the accuracy and coverage
    with random glimpses; with ``proxy_baseline``, that model's
    accuracy on the same canvases and proxies of its own side. Batches come from a DataLoader
    with the dataset's own collate (lazy canvases stay lazy); coverage needs to know where the
    deciding objects are (``has_deciding_boxes``; a Subset of such a dataset too).
    ``progress``: a tqdm bar (None: only when stderr is a terminal)."""
    device = next(model.parameters()).device
    saccade = isinstance(model, SaccadeModel)
    # Some of a dataset's canvases (a Subset) are described by the dataset they come from.
    source, indices = (
        (dataset.dataset, dataset.indices) if isinstance(dataset, Subset) else (dataset, None)
    )
    described = saccade and has_deciding_boxes(source)
    tally = _Tally(model.config.glimpses) if saccade else None
    random_tally = _Tally(model.config.glimpses) if saccade else None
    baseline_stream = RNGStream(seed)  # noisy proxies of the baseline, if trained with noise
    hits = random_hits = baseline_hits = total = 0
    answers: list[tuple[Tensor, Tensor]] = []  # probabilities and labels, for calibration
    multilabel = model.config.multilabel
    batches = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate(dataset)
    )
    bar = tqdm(
        batches, desc="evaluate", leave=False, disable=None if progress is None else not progress
    )
    for images, labels in bar:
        images, proxies = prepare(images, device, model.config.proxy_side, noise)
        labels = labels.to(device)
        if saccade:
            out = infer(model, images, proxies, samples, seed=seed, warn=False)
            probs = out.probs
            digits = None
            if described:
                at = [
                    total + b if indices is None else indices[total + b] for b in range(len(labels))
                ]
                digits = [deciding_boxes_of(source, i) for i in at]
            tally.add_prediction(model, out, images, digits)
            if random_glimpses:
                out = infer(model, images, proxies, samples, random=True, seed=seed, warn=False)
                random_hits += int(correct(out.probs, labels, multilabel).sum())
                random_tally.add_prediction(model, out, images, digits)
        else:
            probs = predict(model, images, proxies, samples=samples)
        hits += int(correct(probs, labels, multilabel).sum())
        answers.append((probs.cpu(), labels.cpu()))
        if proxy_baseline is not None:
            with baseline_stream.active():
                side = proxy_baseline.config.proxy
                # None: photo by photo, each photo's own proxy brought by the batch
                same = proxies is None or proxies.shape[-2:] == proxy_shape(
                    *images.shape[-2:], side
                )
                own = proxies if same else proxies_of(images, side, noise)
                probs = predict(proxy_baseline, images, own)
            baseline_hits += int(correct(probs, labels, multilabel).sum())
        total += len(labels)
        bar.set_postfix(acc=f"{hits / total:.3f}")
    bar.close()
    result = GlimpseEvaluation(n=total, accuracy=hits / max(total, 1))
    if answers:
        probs, labels = (torch.cat(part) for part in zip(*answers, strict=True))
        for name, value in scores(probs, labels, multilabel).to_dict().items():
            setattr(result, name, value)
        bins = reliability(probs, labels, multilabel)
        result.reliability = torch.stack(bins, -1).nan_to_num(0.0).tolist()
    if saccade:
        result.glimpses = model.config.glimpses
        tally.fill(result, described)
        if random_glimpses:
            result.random_glimpses_accuracy = random_hits / max(total, 1)
            if described:
                result.random_glimpses_coverage = random_tally.coverage
    if proxy_baseline is not None:
        result.proxy_baseline_accuracy = baseline_hits / max(total, 1)
    return result


def glimpse_lines(result: GlimpseEvaluation, baseline: str | None = None) -> list[str]:
    """The glimpse measures and baselines of an evaluation as lines of text (``saccade
    evaluate``); ``baseline`` names the proxy baseline's checkpoint."""
    lines = []
    if result.ece is not None:
        lines.append(
            f"calibration: ECE {result.ece:.4f}, NLL {result.nll:.4f}, Brier {result.brier:.4f}"
        )
    if result.box_side is not None:
        reads = [
            f"{result.glimpses} glimpses",
            f"mean box side {result.box_side:.1f} px",
            f"pixels read {100 * result.pixels_read:.2f}%",
        ]
        if result.coverage is not None:
            digits = result.deciding_digits
            reads.insert(0, f"coverage {result.coverage:.4f} of {digits} deciding digits")
        lines.append("; ".join(reads))
    if result.random_glimpses_accuracy is not None:
        line = f"random glimpses: accuracy {result.random_glimpses_accuracy:.4f}"
        if result.random_glimpses_coverage is not None:
            line += f", coverage {result.random_glimpses_coverage:.4f}"
        lines.append(line)
    if result.proxy_baseline_accuracy is not None:
        name = f" ({baseline})" if baseline else ""
        lines.append(f"proxy baseline{name}: accuracy {result.proxy_baseline_accuracy:.4f}")
    return lines
