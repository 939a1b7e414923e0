"""Pictures of the glimpses (``saccade visualize``)."""

from __future__ import annotations

import json
from pathlib import Path

import pyro
import pytest
import tiny
import torch
from click.testing import CliRunner
from matplotlib.patches import Rectangle
from PIL import Image

from pyro_saccade.checkpoint import save_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.data import class_names, save_image
from pyro_saccade.model import SaccadeConfig, SaccadeModel
from pyro_saccade.prediction import boxes, infer, predict
from pyro_saccade.viz import for_display, glimpse_figure

TINY = {**tiny.TINY, "glimpses": 3}


@pytest.fixture(scope="module")
def model() -> SaccadeModel:
    pyro.set_rng_seed(0)
    return SaccadeModel(SaccadeConfig(classes=class_names("identify"), **TINY)).eval()


def thick_boxes(figure: object) -> list[list[float]]:
    """(x0, y0, x1, y1) of the boxes drawn for the posterior-mean glimpses, in drawing order."""
    ax = figure.axes[0]
    return thick_boxes_of([p for p in ax.patches if p.get_linewidth() > 2])


def thick_boxes_of(patches: list) -> list[list[float]]:
    boxes = [p for p in patches if isinstance(p, Rectangle)]
    return [
        [b.get_x(), b.get_y(), b.get_x() + b.get_width(), b.get_y() + b.get_height()] for b in boxes
    ]


def test_boxes_land_in_image_pixels_even_when_shown_downsampled(model: SaccadeModel) -> None:
    height, width = 1200, 2000  # larger than the 800 px display side
    image = torch.rand(1, height, width)
    figure = glimpse_figure(model, image, cloud=8, true_label="3-7")

    expected = boxes(model, infer(model, image[None]).z[0, 0], height, width)
    torch.testing.assert_close(torch.tensor(thick_boxes(figure)), expected, atol=1e-3, rtol=0)
    ax = figure.axes[0]
    shown = ax.images[0]
    assert shown.get_array().shape[:2] == (480, 800)  # downsampled, aspect kept
    assert tuple(shown.get_extent()) == (0, width, height, 0)  # drawn in full-image pixels
    assert [t.get_text() for t in ax.texts] == ["0", "1", "2"]  # numbered in order
    assert len(ax.collections) == 3  # one faint cloud of sampled boxes per glimpse
    assert len(figure.axes) == 1 + 3  # the image and a strip of three crops (boxes not small)
    assert "true 3-7" in ax.get_title() and "predicted" in ax.get_title()


def test_title_colour_says_whether_the_prediction_is_right(model: SaccadeModel) -> None:
    image = torch.rand(1, 50, 50)
    predicted = model.config.classes[int(predict(model, image[None]).argmax())]
    wrong = next(name for name in model.config.classes if name != predicted)
    right_title = glimpse_figure(model, image, cloud=0, true_label=predicted).axes[0].title
    wrong_title = glimpse_figure(model, image, cloud=0, true_label=wrong).axes[0].title
    assert right_title.get_color() != wrong_title.get_color()
    unknown = glimpse_figure(model, image, cloud=0).axes[0]
    assert "true" not in unknown.get_title() and not unknown.collections


@pytest.fixture(scope="module")
def small_boxes() -> SaccadeModel:
    """A model whose glimpses are small in the image, as a megapixel model's are."""
    where = {"kind": "free", "scale_min": 0.02, "scale_max": 0.05}
    pyro.set_rng_seed(0)
    config = SaccadeConfig(classes=class_names("identify"), **{**TINY, "where": where})
    return SaccadeModel(config).eval()


def test_small_boxes_are_shown_enlarged_in_their_neighbourhood(small_boxes: SaccadeModel):
    from pyro_saccade.viz import AROUND

    height, width = 900, 1200
    image = torch.rand(1, height, width)
    figure = glimpse_figure(small_boxes, image, cloud=0)
    placed = torch.tensor(thick_boxes(figure))
    # The image, then per glimpse its neighbourhood and the crop the model read.
    assert len(figure.axes) == 1 + 2 * 3
    for t, near in enumerate(figure.axes[1::2]):
        assert near.get_title() == f"glimpse {t}"
        x0, y0, x1, y1 = placed[t].tolist()
        side = AROUND * max(x1 - x0, y1 - y0)
        left, right = near.get_xlim()
        assert right - left == pytest.approx(side) and (left + right) / 2 == pytest.approx(
            (x0 + x1) / 2
        )
        # Read from the full image, not from its downsampled view: one pixel per pixel.
        ex0, ex1, ey1, ey0 = (int(v) for v in near.images[0].get_extent())
        pixels = torch.as_tensor(near.images[0].get_array())
        torch.testing.assert_close(pixels, image[0, ey0:ey1, ex0:ex1])
        outlined = [p for p in near.patches if p.get_linewidth() > 1.5]  # thicker than the rest
        (box,) = thick_boxes_of(outlined)
        assert box == pytest.approx(placed[t].tolist(), abs=1e-3)


def test_numbers_cover_no_box(small_boxes: SaccadeModel) -> None:
    image = torch.rand(1, 1500, 1500)
    figure = glimpse_figure(small_boxes, image, cloud=0)
    ax = figure.axes[0]
    figure.canvas.draw()  # places the numbers' backgrounds
    renderer = figure.canvas.get_renderer()
    boxes = [p.get_window_extent(renderer) for p in ax.patches if p.get_linewidth() > 2]
    numbers = [text.get_bbox_patch().get_window_extent(renderer) for text in ax.texts]
    assert len(numbers) == len(boxes) == 3
    for number in numbers:
        for box in boxes:  # no more than a line's width inside any box
            inside_x = min(number.x1, box.x1) - max(number.x0, box.x0)
            inside_y = min(number.y1, box.y1) - max(number.y0, box.y0)
            assert min(inside_x, inside_y) <= 2, (number, box)


def test_for_display_keeps_small_images_and_averages_large_ones() -> None:
    small = torch.rand(3, 20, 30)
    assert torch.equal(for_display(small), small.permute(1, 2, 0))
    large = torch.rand(1, 1600, 1000)
    shown = for_display(large)
    assert shown.shape == (800, 500, 1)
    torch.testing.assert_close(shown.mean(), large.mean(), atol=1e-4, rtol=0)


def test_visualize_command_writes_one_picture_per_image(model: SaccadeModel, tmp_path: Path):
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model)
    images = tmp_path / "images"
    images.mkdir()
    save_image(torch.rand(1, 60, 90), images / "a.png")
    save_image(torch.rand(3, 70, 40), images / "b.png")
    (images / "labels.csv").write_text("file,label\na.png,3-7\nb.png,1-2\n")
    out = tmp_path / "pictures"
    args = ["visualize", str(checkpoint), str(images / "a.png"), str(images / "b.png")]
    result = CliRunner().invoke(main, [*args, "--cloud", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("a_glimpses.png", "b_glimpses.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and min(picture.size) > 200


def test_training_curves_plot(tmp_path) -> None:
    from pyro_saccade.viz import accuracy_curve, training_curves

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"epoch": e, "test_accuracy": 0.1 * e, "train_seconds": 60.0} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = training_curves({"run": run, "staged": [run, run]}, tmp_path / "curve.png")
    assert out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A model trained in two stages: the second stage's time runs on from the first's.
    assert accuracy_curve([run, run]) == ([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 10.0, 20.0])


def test_staged_curves_continue_a_drawn_line_and_are_whole_otherwise(tmp_path) -> None:
    from pyro_saccade.viz import curve_lines

    for name, accuracies in (("first", (0.5, 0.6)), ("second", (0.7, 0.8))):
        (tmp_path / name).mkdir()
        lines = [{"test_accuracy": a, "train_seconds": 60.0} for a in accuracies]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
    first, second = tmp_path / "first", tmp_path / "second"
    drawn = curve_lines({"first": first, "fine-tuned": [str(first), second]})
    assert drawn["fine-tuned"] == ([2.0, 3.0, 4.0], [60.0, 70.0, 80.0])  # from first's last epoch
    alone = curve_lines({"two stages": [first, second]})
    assert alone["two stages"] == ([1.0, 2.0, 3.0, 4.0], [50.0, 60.0, 70.0, 80.0])


def test_curves_past_the_palette_stay_distinguishable() -> None:
    from pyro_saccade.viz import COLOURS, line_style

    styles = [tuple(line_style(t).values()) for t in range(2 * len(COLOURS))]
    assert len(set(styles)) == len(styles)
    assert line_style(0)["color"] == line_style(len(COLOURS))["color"]  # the palette repeats
