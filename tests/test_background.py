"""Backgrounds of generated canvases: black (no background), white, and clutter, alike on dense
and on lazy canvases, and from the command line."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from pyro_saccade.cli import main
from pyro_saccade.data import (
    CanvasBatch,
    MegapixelMNIST,
    TwoDigitCluttered,
    collate_canvases,
    make_proxy,
)
from pyro_saccade.data.background import (
    BACKGROUNDS,
    CONTRASTS,
    LEVELS,
    Background,
    Backgrounds,
)
from pyro_saccade.glimpse import extract_glimpse
from pyro_saccade.training import TrainConfig
from pyro_saccade.training import config as train_config


def megapixel(background: str, **kwargs: object) -> MegapixelMNIST:
    settings = {"canvas": (180, 230), "n": 8, "noise": 12, "split": "test", **kwargs}
    return MegapixelMNIST(background=background, **settings)


def grid_sample(dense: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(dense, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def grids(generator: torch.Generator, batch: int, scale: float, turn: float) -> torch.Tensor:
    """Grids [B, 24, 24, 2] of boxes ``scale`` of the canvas wide anywhere in [-1.3, 1.3],
    axis-aligned as glimpses are (``turn`` 0) or sheared."""
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale * 0.8
    theta[:, 0, 1] = turn * scale
    theta[:, :, 2] = 2.6 * torch.rand(batch, 2, generator=generator) - 1.3
    return F.affine_grid(theta, [batch, 1, 24, 24], align_corners=False)


def boxes_mask(about: dict, shape: torch.Size) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for x0, y0, x1, y1 in about["boxes"]:
        mask[y0:y1, x0:x1] = True
    return mask


def test_black_is_ink_on_zero_and_white_its_inverse() -> None:
    black, white, clutter = (megapixel(kind) for kind in BACKGROUNDS)
    assert MegapixelMNIST(canvas=200, n=1).background == "black"
    assert black.canvas(0).background is None and white.canvas(0).background == Background(1.0)
    for i in range(len(black)):
        ink = black[i][0]
        assert torch.equal(white[i][0], 1 - ink)
        # The same digits and scribbles, painted over the canvas's own field in its colour.
        painted = clutter.canvas(i).background
        field = painted.field(180, 230)
        torch.testing.assert_close(clutter[i][0], field * (1 - ink) + painted.colour * ink)
        about = {key: value for key, value in clutter.describe(i).items() if key != "background"}
        assert about == {k: v for k, v in black.describe(i).items() if k != "background"}
        assert white.describe(i)["background"] == {
            "kind": "white",
            "level": 1.0,
            "contrast": 0.0,
            "colour": 0.0,
        }
    two = [TwoDigitCluttered(canvas=90, n=3, background=kind) for kind in ("black", "white")]
    assert all(torch.equal(two[1][i][0], 1 - two[0][i][0]) for i in range(3))
    with pytest.raises(ValueError, match="background"):
        megapixel("grey")


@pytest.mark.parametrize("background", BACKGROUNDS)
def test_lazy_crops_and_proxies_equal_the_dense_canvas(background: str) -> None:
    lazy = megapixel(background, lazy=True)
    batch, _ = collate_canvases([lazy[i] for i in range(8)])
    images = torch.stack([megapixel(background)[i][0] for i in range(8)])
    assert torch.equal(batch.dense(), images)
    generator = torch.Generator().manual_seed(0)
    for scale in (0.05, 0.3, 1.2):
        for turn in (0.0, 0.3):  # a glimpse's grid, evaluated row by row; any other, by points
            grid = grids(generator, 8, scale, turn)
            torch.testing.assert_close(
                batch.sample(grid), grid_sample(images, grid), atol=1e-5, rtol=0
            )
    z = torch.randn(8, 3, generator=generator)
    torch.testing.assert_close(
        extract_glimpse(batch, z, 16, 0.05, 0.8, antialias=2),
        extract_glimpse(images, z, 16, 0.05, 0.8, antialias=2),
        atol=1e-5,
        rtol=0,
    )
    # Sides of at most 512 px: the field is averaged at every pixel, as make_proxy does.
    for size in (32, 45, 7, (5, 12), 300):
        torch.testing.assert_close(batch.proxies(size), make_proxy(images, size), atol=1e-5, rtol=0)


def test_lazy_proxies_of_large_canvases_average_the_field_closely() -> None:
    """Past 512 px a proxy bin averages the field at points at most 12 px apart (the midpoint
    rule): within 3e-3 of the exact mean, less than an 8-bit grey level."""
    lazy = MegapixelMNIST(n=2, split="test", background="clutter", lazy=True)
    batch, _ = collate_canvases([lazy[0], lazy[1]])
    images = batch.dense()
    for size in (32, 192):
        torch.testing.assert_close(batch.proxies(size), make_proxy(images, size), atol=3e-3, rtol=0)
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        extract_glimpse(batch, z, 32, 0.02, 0.1, antialias=2),
        extract_glimpse(images, z, 32, 0.02, 0.1, antialias=2),
        atol=1e-5,
        rtol=0,
    )


def test_two_digit_canvases_take_a_background_lazily_too() -> None:
    kwargs = {"canvas": 160, "n": 4, "digit_size": 28, "background": "clutter"}
    lazy = TwoDigitCluttered("sum", lazy=True, **kwargs)
    batch, _ = collate_canvases([lazy[i] for i in range(4)])
    images = torch.stack([TwoDigitCluttered("sum", **kwargs)[i][0] for i in range(4)])
    assert torch.equal(batch.dense(), images)
    grid = grids(torch.Generator().manual_seed(2), 4, 0.3, 0.0)
    torch.testing.assert_close(batch.sample(grid), grid_sample(images, grid), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.proxies(24), make_proxy(images, 24), atol=1e-5, rtol=0)


def test_clutter_hides_the_objects_from_brightness_but_not_from_a_reader() -> None:
    n, side = 12, 800
    black = MegapixelMNIST(canvas=side, n=n, split="test", seed=5)
    clutter = MegapixelMNIST(canvas=side, n=n, split="test", seed=5, background="clutter")
    colours, visible, extreme = set(), [], {"black": [], "brighter": [], "darker": []}
    for i in range(n):
        background = clutter.canvas(i).background
        level, contrast = background.level, background.contrast
        assert LEVELS[0] <= level <= LEVELS[1] and CONTRASTS[0] <= contrast <= CONTRASTS[1]
        colours.add(background.colour)
        field, ink, image = background.field(side, side), black[i][0][0], clutter[i][0][0]
        # A field of about the drawn mean and extent, within it, and values within [0, 1].
        assert abs(float(field.mean()) - level) < 0.03
        assert 0.8 * contrast < float(field.max() - field.min()) <= contrast + 1e-6
        assert field.min() >= level - contrast / 2 - 1e-6 and field.max() <= level + contrast / 2
        assert image.min() >= 0 and image.max() <= 1
        about = clutter.describe(i)
        strokes = boxes_mask(about, ink.shape) & (ink > 0.5)
        visible.append(float((image - field)[strokes].abs().mean()))
        # The share of the digits whose proxy cell (of 32 x 32) is among the brightest 10% on
        # black, and among the brightest or the darkest 10% on clutter.
        centres = [
            ((y0 + y1) // 2 * 32 // side) * 32 + (x0 + x1) // 2 * 32 // side
            for x0, y0, x1, y1 in about["boxes"]
        ]
        for name, view, sign in (("black", ink, 1), ("brighter", image, 1), ("darker", image, -1)):
            cells = sign * make_proxy(view[None, None], 32).flatten()
            chosen = set(cells.topk(len(cells) // 10).indices.tolist())
            extreme[name].append(sum(c in chosen for c in centres) / len(centres))
    assert colours == {0.0, 1.0}  # marks in black on some canvases, in white on others
    assert min(visible) > 0.1 and sum(visible) / n > 0.3
    share = {name: sum(shares) / n for name, shares in extreme.items()}
    assert share["black"] > 0.9 and share["brighter"] < 0.3 and share["darker"] < 0.3, share
    # A function of the seed: drawn again alike, and another seed draws another field.
    again = MegapixelMNIST(canvas=side, n=n, split="test", seed=5, background="clutter")
    assert torch.equal(again[3][0], clutter[3][0])
    other = MegapixelMNIST(canvas=side, n=n, split="test", seed=6, background="clutter")
    assert other.canvas(3).background != clutter.canvas(3).background


def test_the_field_is_the_same_at_points_and_on_any_grid() -> None:
    """Dense grids, grids sparser than the finest lattice and grids wider than the narrow
    octaves' runs take different ways through the octaves; points take none of them."""
    fields = Backgrounds(
        [Background(0.5, 0.5, 0.0, 3), Background(0.4, 0.3, 1.0, 77)], 20_000, 30_000
    )
    generator = torch.Generator().manual_seed(4)
    # (step, columns, rows): runs of the lattice within reach, a run wider than the narrow
    # octaves', every sample's own nodes (sparser than the finest lattice), and both.
    for step, count, down in ((1.0, 40, 30), (1.0, 5000, 20), (7.0, 900, 600), (300.0, 50, 40)):
        xs = (torch.arange(count) * step + 13).double().expand(2, -1)
        ys = (torch.arange(down) * step * 1.3 - 40).double().expand(2, -1)
        grid = fields.grid(xs, ys)
        assert 0.25 <= grid.min() and grid.max() <= 0.75
        rows = torch.randint(0, down, (2, 500), generator=generator)
        cols = torch.randint(0, count, (2, 500), generator=generator)
        at = fields.points(xs.gather(1, cols), ys.gather(1, rows))
        torch.testing.assert_close(
            at, grid[torch.arange(2)[:, None], rows, cols], atol=1e-6, rtol=0
        )


def test_a_100000_pixel_clutter_canvas_costs_no_more_than_its_patches() -> None:
    side = 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    data = MegapixelMNIST(canvas=side, n=2, lazy=True, background="clutter")
    batch, _ = collate_canvases([data[0], data[1]])
    x0, y0, x1, y1 = data.describe(0)["boxes"][0]
    # A crop straight on the first digit (double precision: see test_megapixel).
    theta = torch.zeros(2, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 28 / side
    theta[:, 0, 2] = (x0 + x1) / side - 1
    theta[:, 1, 2] = (y0 + y1) / side - 1
    crops = batch.sample(F.affine_grid(theta, [2, 1, 28, 28], align_corners=False))
    generator = torch.Generator().manual_seed(0)
    wide = batch.sample(grids(generator, 2, 0.9, 0.2))
    glimpse = extract_glimpse(batch, torch.randn(2, 3, generator=generator), 32, 0.5, 0.9, 2)
    proxies = batch.proxies(32)
    elapsed = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    # The same canvas's ink (on black) painted over the field at the digit's pixels.
    black = MegapixelMNIST(canvas=side, n=2, lazy=True).canvas(0)
    ink = CanvasBatch([black]).sample(F.affine_grid(theta[:1], [1, 1, 28, 28], False))[0, 0]
    pixels = torch.arange(28, dtype=torch.float64)
    field = batch.backgrounds.grid((x0 + pixels).expand(2, -1), (y0 + pixels).expand(2, -1))[0]
    colour = data.canvas(0).background.colour
    torch.testing.assert_close(crops[0, 0], field * (1 - ink) + colour * ink, atol=1e-5, rtol=0)
    assert ink.max() > 0.9
    assert wide.shape == (2, 1, 24, 24) and glimpse.shape == (2, 1, 32, 32)
    level = torch.tensor([data.canvas(i).background.level for i in range(2)])
    assert (proxies.mean((1, 2, 3)) - level).abs().max() < 0.05  # the ink is a speck on it
    assert elapsed < 10.0
    assert grown < 300_000  # KiB: a dense canvas would be 40 GB


TINY_TRAIN = ["train", "--canvas", "40", "--crop", "16", "--proxy", "16", "--glimpses", "1"]
TINY_TRAIN += ["--epochs", "1", "--train-size", "4", "--test-size", "4", "--batch-size", "4"]


def test_the_background_options_reach_the_run_and_the_files(tmp_path: Path) -> None:
    assert train_config.BACKGROUNDS == BACKGROUNDS  # spelled out where torch is not imported
    with pytest.raises(ValueError, match="background"):
        TrainConfig(background="grey")
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(
        main, [*TINY_TRAIN, "--background", "clutter", "--quiet", "--out", str(run)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["train"]["background"] == "clutter"
    evaluate = ["evaluate", str(run), "--n", "4", "--json"]
    for given, expected in (([], "clutter"), (["--background", "white"], "white")):
        result = runner.invoke(main, [*evaluate, *given])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output.splitlines()[-1])["background"] == expected
    out = tmp_path / "white"
    export = ["data", "export", "--task", "top", "--canvas", "150", "--n", "2", "--noise", "5"]
    result = runner.invoke(main, [*export, "--background", "white", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = MegapixelMNIST("top", canvas=150, n=2, noise=5, split="test", background="white")
    for i in range(2):
        with Image.open(out / f"{i:06d}.png") as png:
            pixels = torch.tensor(list(png.getdata()), dtype=torch.float32).view(150, 150)
        assert torch.equal(pixels, (data[i][0][0] * 255).round())
    result = runner.invoke(main, [*export, "--background", "grey", "--out", str(out)])
    assert result.exit_code == 2 and "'grey' is not one of" in result.output
