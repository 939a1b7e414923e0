"""Pictures of where the model looks (the paper's Fig. 4).

Figures are built on ``matplotlib.figure.Figure`` and rendered by the Agg canvas, without pyplot,
so drawing needs no display and leaves the caller's matplotlib backend alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .calibration import calibration_error
from .data import Photo, as_batch
from .data.photo import reduction_for
from .labels import predicted
from .model import SaccadeModel
from .prediction import boxes, infer, shown
from .training.batches import prepare

DISPLAY_SIDE = 800  # larger images are shown downsampled to this longer side
PER_ROW = 5  # glimpses in a row of crops and neighbourhoods below the image
AROUND = 2.5  # a neighbourhood's side, in sides of its glimpse's box
NEIGHBOURHOOD_SIDE = 256  # pixels across a neighbourhood read from a photo (at least)
COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


def colour(t: int) -> str:
    return COLOURS[t % len(COLOURS)]


def light(colour: str) -> bool:
    """Whether white text on this colour is hard to read (its luma above 0.65)."""
    red, green, blue = to_rgb(colour)
    return 0.299 * red + 0.587 * green + 0.114 * blue > 0.65


def line_style(t: int) -> dict[str, str]:
    """Colour, marker and dashes of line t: past the palette the colours repeat, so each
    further round of them is drawn with other markers and dashes."""
    markers, dashes = "osD^v", ["-", "--", "-.", ":"]
    round_ = t // len(COLOURS)
    return {
        "color": colour(t),
        "marker": markers[round_ % len(markers)],
        "linestyle": dashes[round_ % len(dashes)],
    }


def for_display(image: Tensor, side: int = DISPLAY_SIDE) -> Tensor:
    """An image [C, H, W] as [H', W', C] for imshow, area-downsampled so the longer side <= side."""
    height, width = image.shape[-2:]
    factor = side / max(height, width)
    if factor < 1:
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        image = F.interpolate(image[None].float(), size=size, mode="area")[0]
    return image.clamp(0, 1).permute(1, 2, 0).cpu()


def show(
    ax: object, image: Tensor, extent: tuple[float, float, float, float] | None = None
) -> None:
    """Draw an image [C, H, W] in [0, 1] (gray or RGB), without ticks."""
    pixels = for_display(image).numpy()
    if pixels.shape[-1] == 1:
        ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=1, extent=extent)
    else:
        ax.imshow(pixels, extent=extent)
    ax.set_xticks([])
    ax.set_yticks([])


def box_patch(box: Tensor, **style: object) -> Rectangle:
    x0, y0, x1, y1 = box.tolist()
    return Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, **style)


def plot_glimpses(
    image: Tensor,
    boxes: Tensor,
    crops: Tensor,
    cloud: Tensor | None = None,
    title: str = "",
    title_colour: str = "black",
    size: tuple[int, int] | None = None,
    around: Sequence[Neighbourhood] | None = None,
) -> Figure:
    """The image with its glimpse boxes numbered in order, and below, for each glimpse, its
    neighbourhood enlarged (if ``around`` is given) and the crop the model read.

    image [C, H, W]; boxes [T, 4] pixel boxes (x0, y0, x1, y1); crops [T, C, L, L];
    cloud [S, T, 4] (optional) sampled boxes, drawn faintly behind; size (optional) the
    (height, width) the boxes refer to when ``image`` is a reduced view of a larger image;
    around (optional) one ``Neighbourhood`` per glimpse, read from the full image.
    """
    height, width = size or image.shape[-2:]
    glimpses = boxes.shape[0]
    # At most PER_ROW glimpses a row, the rows as even as they can be, and never wider than a
    # quarter of the figure.
    rows = -(-glimpses // PER_ROW)
    columns = max(-(-glimpses // rows), 4)
    figure_width = 7.0
    image_height = min(figure_width * height / width, 9.0)
    cell = figure_width / columns
    # Per row of glimpses: the neighbourhoods (square cells), then the crops at half their size.
    strips = [cell, cell / 2] if around is not None else [cell]
    heights = [image_height, *(strips * rows)]
    # Room for the title and the size note of the image, and a title above each row of cells.
    figure = Figure(figsize=(figure_width, sum(heights) + 0.7 + 0.3 * rows))
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(heights), columns, height_ratios=heights)
    ax = figure.add_subplot(grid[0, :])
    # The extent puts the (possibly downsampled) picture in the full image's pixel coordinates,
    # with 0 and W at the outer pixel edges as in glimpse_boxes, so boxes need no rescaling.
    show(ax, image, extent=(0, width, height, 0))
    shown = for_display(image).shape[:2]
    note = f"{width}x{height} px" + (
        f", shown at {shown[1]}x{shown[0]}" if tuple(shown) != (height, width) else ""
    )
    ax.set_xlabel(note, fontsize=8)
    if cloud is not None:
        alpha = min(0.4, max(0.04, 4 / cloud.shape[0]))
        for t in range(glimpses):
            patches = [box_patch(b) for b in cloud[:, t]]
            ax.add_collection(
                PatchCollection(
                    patches, facecolor="none", edgecolor=colour(t), linewidth=0.7, alpha=alpha
                )
            )
    for t, box in enumerate(boxes):
        ax.add_patch(box_patch(box, edgecolor=colour(t), linewidth=2.2))
    number_boxes(ax, boxes, width / figure_width, height / image_height)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    if title:
        ax.set_title(title, color=title_colour, fontsize=11)
    for t in range(glimpses):
        row, column = divmod(t, columns)
        first = 1 + row * len(strips)
        if around is not None:
            near = figure.add_subplot(grid[first, column])
            show_neighbourhood(near, around[t], boxes, t)
            near.set_title(f"glimpse {t}", color=colour(t), fontsize=9)
        crop_ax = figure.add_subplot(grid[first + len(strips) - 1, column])
        show(crop_ax, crops[t])
        if around is None:
            crop_ax.set_title(f"glimpse {t}", color=colour(t), fontsize=9)
        elif column == 0:
            crop_ax.set_ylabel("read", fontsize=8)
        for spine in crop_ax.spines.values():
            spine.set_edgecolor(colour(t))
            spine.set_linewidth(2)
    figure.tight_layout(h_pad=0.8, w_pad=1.0)
    return figure


def number_boxes(ax: object, boxes: Tensor, x_per_inch: float, y_per_inch: float) -> None:
    """Number each box just outside its top-left corner (or, at the image's edge, outside
    another corner), small, so that the number covers neither the box nor what it holds;
    numbers at (nearly) the same place go side by side. ``x_per_inch`` and ``y_per_inch``:
    image pixels per inch of the drawing."""
    # A number is about 10 points wide and high; in image pixels that depends on the drawing.
    reach_x, reach_y = 10 / 72 * x_per_inch, 10 / 72 * y_per_inch
    placed: list[tuple[float, float]] = []
    for t, box in enumerate(boxes):
        x0, y0, x1, y1 = box.tolist()
        left, above = x0 >= reach_x, y0 >= reach_y
        x, y = (x0 if left else x1), (y0 if above else y1)
        shift = sum(abs(x - u) < reach_x and abs(y - v) < reach_y for u, v in placed)
        placed.append((x, y))
        step = -11 if left else 11
        ax.annotate(
            str(t),
            (x, y),
            xytext=(step * shift + (-1 if left else 1), 1 if above else -1),
            textcoords="offset points",
            color="black" if light(colour(t)) else "white",
            fontsize=7,
            fontweight="bold",
            ha="right" if left else "left",
            va="bottom" if above else "top",
            bbox={"facecolor": colour(t), "edgecolor": "none", "pad": 0.8},
        )


@dataclass
class Neighbourhood:
    """The pixels [C, h, w] around a glimpse, covering ``region`` (x0, y0, x1, y1) of the image,
    to be shown in ``window`` (x0, y0, x1, y1): the region, or past the image's border where
    the window reaches beyond it (drawn black: the model reads zeros there)."""

    pixels: Tensor
    region: tuple[int, int, int, int]
    window: tuple[float, float, float, float]


def neighbourhood(image: Tensor | Photo, box: Tensor) -> Neighbourhood | None:
    """The square window AROUND times the side of ``box`` centred on it, read from the full
    image (a photo at the coarsest scale that keeps about NEIGHBOURHOOD_SIDE pixels across);
    None for a box wholly outside the image."""
    height, width = image.shape[-2:]
    x0, y0, x1, y1 = box.tolist()
    half = AROUND * max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    window = (cx - half, cy - half, cx + half, cy + half)
    rx0, ry0 = max(0, math.floor(window[0])), max(0, math.floor(window[1]))
    rx1, ry1 = min(width, math.ceil(window[2])), min(height, math.ceil(window[3]))
    if rx1 <= rx0 or ry1 <= ry0:
        return None
    if isinstance(image, Photo):
        reduce = reduction_for(min(rx1 - rx0, ry1 - ry0), NEIGHBOURHOOD_SIDE)
        pixels = image.read_region((rx0, ry0, rx1, ry1), reduce)
    else:
        pixels = image[:, ry0:ry1, rx0:rx1].cpu()
    return Neighbourhood(pixels, (rx0, ry0, rx1, ry1), window)


def show_neighbourhood(ax: object, near: Neighbourhood | None, boxes: Tensor, t: int) -> None:
    """Glimpse t's neighbourhood with its box outlined, and the other boxes in it thinner."""
    ax.set_facecolor("black")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour(t))
        spine.set_linewidth(1.5)
    if near is None:
        return
    x0, y0, x1, y1 = near.region
    show(ax, near.pixels, extent=(x0, x1, y1, y0))
    for u, box in enumerate(boxes):
        if u != t:
            ax.add_patch(box_patch(box, edgecolor=colour(u), linewidth=0.8, alpha=0.8))
    ax.add_patch(box_patch(boxes[t], edgecolor=colour(t), linewidth=1.8))
    wx0, wy0, wx1, wy1 = near.window
    ax.set_xlim(wx0, wx1)
    ax.set_ylim(wy1, wy0)


def shows_neighbourhoods(boxes: Tensor, height: int, width: int) -> bool:
    """Whether the picture enlarges the glimpses' neighbourhoods: when the boxes are small in
    the image, so that on the whole image what they hold is hard to see."""
    sides = torch.maximum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])
    return bool(AROUND * sides.max() <= min(height, width) / 2)


@torch.no_grad()
def glimpse_figure(
    model: SaccadeModel,
    image: Tensor | Photo,
    cloud: int = 32,
    true_label: str | None = None,
    *,
    samples: int | None = None,
    seed: int = 0,
) -> Figure:
    """Where ``model`` looks in one image [C, H, W] or photo on disk, and what it concludes.

    Boxes and crops are the posterior-mean glimpses (what ``saccade predict`` shows), the faint
    ``cloud`` that many posterior draws (0: none); the title gives the model's prediction, that
    of ``prediction.shown`` (``samples`` draws averaged, None: the model's predict_samples,
    from ``seed``: what ``saccade predict`` gives) and, if known, the true label. When the
    boxes are small in the image, each one's neighbourhood is shown enlarged below it.
    A photo is read only where the glimpses and the proxy need it, and shown from a reduced view.
    """
    c = model.config
    device = next(model.parameters()).device
    height, width = image.shape[-2:]
    batch, proxies = prepare(as_batch([image], c.proxy_side), device, c.proxy_side)
    probs, prediction = shown(model, batch, proxies, samples, seed=seed)
    z = prediction.z[0, 0]  # [T, 3]
    centres = None if prediction.centres is None else prediction.centres[0, 0]  # [T, 2]
    background, _ = model.contrast(batch, proxies)  # the crops as the model reads them
    crops = torch.cat(
        [
            model.where.glimpse(
                batch, z[t : t + 1], None if centres is None else centres[t : t + 1], background
            )[0]
            for t in range(c.glimpses)
        ]
    )
    placed = boxes(model, z, height, width, centres).cpu()
    drawn = None
    if cloud:
        # ``shown`` has warned about an image unlike the training images.
        draws = infer(model, batch, proxies, samples=cloud, seed=seed, warn=False)
        drawn = boxes(
            model,
            draws.z[:, 0],
            height,
            width,
            None if draws.centres is None else draws.centres[:, 0],
        ).cpu()
    around = None
    if shows_neighbourhoods(placed, height, width):
        around = [neighbourhood(image, box) for box in placed]
    label, probability = predicted(probs[0], c.classes, c.multilabel)
    title = f"predicted {label} (p={probability:.3f})"
    title_colour = "black"
    if true_label is not None:
        title += f"   true {true_label}"
        title_colour = "#1a7f37" if true_label == label else "#c62828"
    return plot_glimpses(
        image.view(DISPLAY_SIDE) if isinstance(image, Photo) else image.cpu(),
        placed,
        crops.cpu(),
        drawn,
        title,
        title_colour,
        size=(height, width),
        around=around,
    )


def accuracy_curve(stages: str | Path | Sequence[str | Path]) -> tuple[list[float], list[float]]:
    """Cumulative training minutes and held-out accuracy (%) after each epoch of a run directory,
    or of a sequence of them: one model trained in stages (a run, then a run started from its
    weights with ``--init``), its time running on from stage to stage."""
    return _curve(_stage_records(stages))


def _stage_paths(stages: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(stages)] if isinstance(stages, str | Path) else [Path(run) for run in stages]


def _stage_records(stages: str | Path | Sequence[str | Path]) -> list[list[dict]]:
    """The metrics.jsonl records of each stage of a run."""
    return [
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in _stage_paths(stages)
    ]


def _curve(stages: list[list[dict]]) -> tuple[list[float], list[float]]:
    records = [record for stage in stages for record in stage]
    minutes = torch.tensor([r.get("train_seconds", 0.0) for r in records]).cumsum(0) / 60
    return minutes.tolist(), [100 * r["test_accuracy"] for r in records]


def curve_lines(
    runs: dict[str, str | Path | Sequence[str | Path]],
) -> dict[str, tuple[list[float], list[float]]]:
    """The part of each run's curve (``accuracy_curve``) that ``training_curves`` draws: all of
    it, except for a model fine-tuned from a run that is another line, which is drawn from that
    run's last epoch on, so that it continues that line instead of drawing over it."""
    drawn = {tuple(_stage_paths(stages)) for stages in runs.values()}
    lines = {}
    for name, stages in runs.items():
        paths = _stage_paths(stages)
        records = _stage_records(paths)
        minutes, accuracy = _curve(records)
        start = len(minutes) - len(records[-1]) - 1 if tuple(paths[:-1]) in drawn else 0
        lines[name] = minutes[start:], accuracy[start:]
    return lines


def training_curves(runs: dict[str, str | Path | Sequence[str | Path]], out: str | Path) -> Path:
    """Plot held-out accuracy against wall time, one line per run (see ``curve_lines``)."""
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for t, (name, (minutes, accuracy)) in enumerate(curve_lines(runs).items()):
        ax.plot(minutes, accuracy, label=name, **line_style(t))
    ax.set_xlabel("training wall time (minutes, without evaluation)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")  # the curves rise to the upper right
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    return Path(out)


def reliability_figure(diagrams: dict[str, Sequence[Sequence[float]]], out: str | Path) -> Path:
    """Reliability diagrams side by side, one per name, from rows per bin of confidence of
    [mean confidence, accuracy, answers] (``GlimpseEvaluation.reliability``): each bin's
    accuracy against its answers' mean confidence, on the diagonal for a calibrated model, the
    share of answers in each bin below, and the expected calibration error in the title."""
    figure = Figure(figsize=(3.2 * len(diagrams), 3.6))
    FigureCanvasAgg(figure)
    for i, (name, rows) in enumerate(diagrams.items()):
        ax = figure.add_subplot(1, len(diagrams), i + 1)
        bins = torch.tensor(rows, dtype=torch.float64)
        confidence, accuracy, answers = bins.unbind(-1)
        held, share = answers > 0, answers / answers.sum()
        ece = calibration_error(confidence, accuracy, answers)
        edges = torch.linspace(0, 1, len(bins) + 1)
        width = 1 / len(bins)
        ax.bar(
            edges[:-1],
            share,
            width,
            align="edge",
            color="grey",
            alpha=0.3,
            label="share of answers",
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="calibrated")
        ax.plot(
            confidence[held],
            accuracy[held],
            "o-",
            color="#c62828",
            markersize=4,
            label="accuracy per bin",
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name}\nECE {ece:.3f}", fontsize="medium")
        ax.set_xlabel("confidence")
        if i == 0:
            ax.set_ylabel("accuracy")
            ax.legend(loc="upper left", fontsize="x-small")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    return Path(out)
