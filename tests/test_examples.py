"""The example scripts run as documented (tiny budgets), each reading the run of the first."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).parents[1] / "examples"


def run(monkeypatch: pytest.MonkeyPatch, script: str, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")


def test_examples_train_evaluate_draw_and_export(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the scripts' default paths are relative: runs/examples/...
    run(monkeypatch, "train_identify.py", "--epochs", "1", "--train-size", "16", "--test-size", "8")
    assert (tmp_path / "runs/examples/identify/checkpoint.pt").is_file()
    run(monkeypatch, "evaluate.py", "--n", "8")
    assert "accuracy" in capsys.readouterr().out
    run(monkeypatch, "visualize.py", "--n", "1", "--cloud", "4")
    assert (tmp_path / "runs/examples/pictures/canvas_0.png").is_file()
    run(monkeypatch, "posterior.py", "--n", "1", "--samples", "4")
    assert (tmp_path / "runs/examples/posterior.nc").is_file()
    assert "canvas_0: predicted" in capsys.readouterr().out
    run(monkeypatch, "glimpse_coverage.py", "runs/examples/identify", "--n", "4")
    assert "digits at least 90% inside a glimpse" in capsys.readouterr().out
    run(monkeypatch, "shared_errors.py", *["runs/examples/identify"] * 2, "--n", "4")
    out = capsys.readouterr().out
    # A model shares every one of its errors with itself, and its vote is its own answer.
    errors = int(out.split(": ", 1)[1].split(" errors")[0])
    assert f"wrong for all: {errors}," in out and f"majority vote: {errors} " in out
    run(monkeypatch, "posterior_draws.py", "runs/examples/identify", "--n", "4", "--samples", "2")
    out = capsys.readouterr().out
    assert "posterior-mean glimpses" in out and "  2 draws averaged" in out
    assert "  4 draws averaged" not in out  # powers of two up to --samples only


def test_recipe_search_trains_the_variant_it_is_given(monkeypatch, tmp_path: Path, capsys) -> None:
    out = tmp_path / "variant"
    model = [
        "likelihood=aggregate",
        "kl_weight=0.5",
        "glimpses=2",
        "hidden=32",
        "crop=16",
        "proxy=16",
    ]
    train = ["epochs=1", "train_size=8", "test_size=4", "batch_size=4", "canvas=[40,40]"]
    run(monkeypatch, "recipe_search.py", str(out), "--model", *model, "--train", *train)
    assert "epoch 1: held-out accuracy" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["likelihood"] == "aggregate" and config["model"]["kl_weight"] == 0.5
    assert config["train"]["canvas"] == [40, 40]


def test_recipe_search_starts_a_variant_from_a_trained_model(
    monkeypatch, tmp_path: Path, capsys
) -> None:
    base, out = tmp_path / "base", tmp_path / "variant"
    model = ["glimpses=2", "hidden=32", "crop=16", "proxy=16"]
    train = ["epochs=1", "train_size=8", "test_size=4", "batch_size=4", "canvas=[40,40]"]
    run(monkeypatch, "recipe_search.py", str(base), "--model", *model, "--train", *train)
    args = ["--init", str(base), "--model", "posterior_std_max=0.3", "--train", *train]
    run(monkeypatch, "recipe_search.py", str(out), *args)
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["posterior_std_max"] == 0.3 and config["hidden"] == 32


def test_paint_order_paints_the_digits_last_on_the_same_layouts(monkeypatch, capsys) -> None:
    paint_order = runpy.run_path(str(EXAMPLES / "paint_order.py"))
    usual = paint_order["MegapixelMNIST"](canvas=200, n=3, noise=40, split="test")
    other = paint_order["DigitsOverScribbles"](canvas=200, n=3, noise=40, split="test")
    for i in range(3):
        about = usual.describe(i)
        assert about == other.describe(i)
        image = other[i][0][0]
        for k, (x0, y0, x1, y1) in zip(about["digit_indices"], about["boxes"], strict=True):
            assert torch.equal(image[y0:y1, x0:x1], usual.digits[k].float() / 255)
    run(monkeypatch, "paint_order.py", "megapixel-top", "--n", "2")
    out = capsys.readouterr().out
    assert "MegapixelMNIST: accuracy" in out and "DigitsOverScribbles: accuracy" in out


def test_visible_digits_counts_the_ink_the_scribbles_leave(monkeypatch, capsys) -> None:
    visible = runpy.run_path(str(EXAMPLES / "visible_digits.py"))
    data = visible["MegapixelMNIST"](canvas=200, n=4, noise=60, split="test", lazy=True)
    for i in range(4):
        canvas = data[i][0]
        drawn = canvas.dense()[0]
        for k, kept in enumerate(visible["ink_kept"](canvas)):
            x0, y0, x1, y1 = canvas.boxes[k].tolist()
            ink = canvas.patches[k, : y1 - y0, : x1 - x0]
            # What is left of a digit on the drawn canvas is its ink outside every scribble box.
            left = torch.where(drawn[y0:y1, x0:x1] == ink, ink, torch.zeros_like(ink))
            assert kept <= float(left.sum() / ink.sum()) + 1e-6
    about = {"digits": [3, 3, 3, 5, 5], "boxes": [[0, 0, 28, 28]] * 5, "target": 3}
    assert visible["decided"]("majority", about, [0, 1, 2, 3, 4]) == 1.0
    assert visible["decided"]("majority", about, [0, 1, 3, 4]) == 0.5  # a tie of 3s and 5s
    assert visible["decided"]("max", about, [0, 1, 2]) == 0.0  # the 5s erased
    run(monkeypatch, "visible_digits.py", "--task", "majority", "--n", "3", "--noise", "0")
    assert "decide 100.0% of 3 canvases" in capsys.readouterr().out


def test_other_clutter_paints_the_same_ink_over_another_field(monkeypatch, capsys) -> None:
    other_clutter = runpy.run_path(str(EXAMPLES / "other_clutter.py"))
    rng = np.random.default_rng(0)
    for _ in range(4):
        field = other_clutter["other_field"](rng, 300, 400)
        assert 0.1 <= float(field.max() - field.min()) <= 0.5 + 1e-6  # the drawn contrast
        assert 0.2 <= float(field.mean()) <= 0.8
    black = other_clutter["MegapixelMNIST"](canvas=200, n=3, noise=40, split="test")
    painted = other_clutter["OtherClutter"](canvas=200, n=3, noise=40, split="test")
    for i in range(3):
        (ink, label), (image, same) = black[i], painted[i]
        assert torch.equal(label, same) and image.shape == ink.shape
        assert 0 <= float(image.min()) and float(image.max()) <= 1
        colours = image[ink == 1].unique()  # full ink shows the canvas's one colour
        assert len(colours) == 1 and float(colours) in (0.0, 1.0)
    run(monkeypatch, "other_clutter.py", "megapixel-majority-clutter", "--n", "2")
    out = capsys.readouterr().out
    assert "the library's clutter: accuracy" in out and "the other field: accuracy" in out
