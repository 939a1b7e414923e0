"""Pictures of where the model looks (the paper's Fig. 4).

Figures are built on ``matplotlib.figure.Figure`` and rendered by the Agg canvas, without pyplot,
so drawing needs no display and leaves the caller's matplotlib backend alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .data import Photo, as_batch
from .labels import predicted
from .model import SaccadeModel
from .prediction import boxes, infer, shown
from .training.batches import prepare

DISPLAY_SIDE = 800  # larger images are shown downsampled to this longer side
COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


def colour(t: int) -> str:
    return COLOURS[t % len(COLOURS)]


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
) -> Figure:
    """The image with its glimpse boxes numbered in order, and the crops in a strip below.

    image [C, H, W]; boxes [T, 4] pixel boxes (x0, y0, x1, y1); crops [T, C, L, L];
    cloud [S, T, 4] (optional) sampled boxes, drawn faintly behind; size (optional) the
    (height, width) the boxes refer to when ``image`` is a reduced view of a larger image.
    """
    height, width = size or image.shape[-2:]
    glimpses = boxes.shape[0]
    columns = max(glimpses, 4)
    figure_width = 7.0
    image_height = min(figure_width * height / width, 9.0)
    strip_height = figure_width / columns
    figure = Figure(figsize=(figure_width, image_height + strip_height + 0.8))
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, columns, height_ratios=[image_height, strip_height])
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
    # A number label is about 14 points; in image pixels that depends on how the image is shown.
    label = 14 / 72 * max(width / figure_width, height / image_height)
    corners: list[tuple[float, float]] = []
    for t, box in enumerate(boxes):
        ax.add_patch(box_patch(box, edgecolor=colour(t), linewidth=2.2))
        x, y = float(box[0]), float(box[1])
        # Labels of glimpses at (nearly) the same place go side by side instead of on top.
        shift = sum(abs(x - u) < label and abs(y - v) < label for u, v in corners)
        corners.append((x, y))
        ax.annotate(
            str(t),
            (x, y),
            xytext=(shift * 13, 0),
            textcoords="offset points",
            color="white",
            fontsize=9,
            fontweight="bold",
            ha="left",
            va="top",
            bbox={"facecolor": colour(t), "edgecolor": "none", "pad": 1.5},
        )
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    if title:
        ax.set_title(title, color=title_colour, fontsize=11)
    for t in range(glimpses):
        crop_ax = figure.add_subplot(grid[1, t])
        show(crop_ax, crops[t])
        crop_ax.set_title(f"glimpse {t}", color=colour(t), fontsize=9)
        for spine in crop_ax.spines.values():
            spine.set_edgecolor(colour(t))
            spine.set_linewidth(2)
    figure.tight_layout()
    return figure


@torch.no_grad()
def glimpse_figure(
    model: SaccadeModel, image: Tensor | Photo, samples: int = 32, true_label: str | None = None
) -> Figure:
    """Where ``model`` looks in one image [C, H, W] or photo on disk, and what it concludes.

    Boxes and crops are the posterior-mean glimpses (what ``saccade predict`` shows), the faint
    cloud ``samples`` posterior draws; the title gives the model's prediction (``predict``) and,
    if known, the true label.
    A photo is read only where the glimpses and the proxy need it, and shown from a reduced view.
    """
    c = model.config
    device = next(model.parameters()).device
    height, width = image.shape[-2:]
    batch, proxies = prepare(as_batch([image], c.proxy), device, c.proxy)
    probs, prediction = shown(model, batch, proxies)
    z = prediction.z[0, 0]  # [T, 3]
    centres = None if prediction.centres is None else prediction.centres[0, 0]  # [T, 2]
    crops = torch.cat(
        [
            model.where.glimpse(
                batch, z[t : t + 1], None if centres is None else centres[t : t + 1]
            )[0]
            for t in range(c.glimpses)
        ]
    )
    placed = boxes(model, z, height, width, centres)
    cloud = None
    if samples:
        draws = infer(model, batch, proxies, samples=samples)
        cloud = boxes(
            model,
            draws.z[:, 0],
            height,
            width,
            None if draws.centres is None else draws.centres[:, 0],
        )
    label, probability = predicted(probs[0], c.classes, c.multilabel)
    title = f"predicted {label} (p={probability:.2f})"
    title_colour = "black"
    if true_label is not None:
        title += f"   true {true_label}"
        title_colour = "#1a7f37" if true_label == label else "#c62828"
    return plot_glimpses(
        image.view(DISPLAY_SIDE) if isinstance(image, Photo) else image.cpu(),
        placed.cpu(),
        crops.cpu(),
        None if cloud is None else cloud.cpu(),
        title,
        title_colour,
        size=(height, width),
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
