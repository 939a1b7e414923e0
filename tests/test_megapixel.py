"""Lazy canvases (PatchCanvas, CanvasBatch) and Megapixel MNIST."""

from __future__ import annotations

import math
import resource
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pyro_saccade.data import (
    MEGAPIXEL_TASKS,
    CanvasBatch,
    MegapixelMNIST,
    PatchCanvas,
    TwoDigitCluttered,
    collate_canvases,
    make_proxy,
    proxies_of,
    proxy_shape,
    read_idx,
)
from pyro_saccade.data import canvas as canvas_module
from pyro_saccade.data.megapixel import TARGET_SHARE
from pyro_saccade.data.mnist import BUNDLED_DIR
from pyro_saccade.glimpse import extract_glimpse
from pyro_saccade.training.config import TrainConfig
from pyro_saccade.training.data import canvases


def random_canvas(
    generator: torch.Generator, height: int, width: int, count: int, mode: str
) -> PatchCanvas:
    """Patches of sides 1..30 with sparse ink, some partly or wholly off the canvas."""
    pieces = []
    for _ in range(count):
        side = int(torch.randint(1, 31, (), generator=generator))
        x0 = int(torch.randint(-side - 2, width + 2, (), generator=generator))
        y0 = int(torch.randint(-side - 2, height + 2, (), generator=generator))
        ink = torch.rand(side, side, generator=generator) > 0.4
        pieces.append((torch.rand(side, side, generator=generator) * ink, (x0, y0)))
    return PatchCanvas.from_pieces(height, width, pieces, mode)


def random_grids(
    generator: torch.Generator, batch: int, scale: float, size: tuple[int, int]
) -> torch.Tensor:
    """Affine grids [B, h, w, 2] of boxes ``scale`` of the canvas wide, centred anywhere in
    [-1.3, 1.3] (so some reach off the canvas), some rotated and sheared."""
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale * (0.6 + 0.8 * torch.rand(batch, generator=generator))
    theta[:, 0, 1] = 0.3 * scale * torch.randn(batch, generator=generator)
    theta[:, :, 2] = 2.6 * torch.rand(batch, 2, generator=generator) - 1.3
    return F.affine_grid(theta, [batch, 1, *size], align_corners=False)


def grid_sample(dense: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(dense, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.fixture(params=["rounds", "cells", "rounds-corners", "cells-corners"])
def paint_path(request, monkeypatch) -> str:
    """Run a test through each of CanvasBatch.sample's two ways to find a crop's patches, and
    each of its two ways to read a 2x2 block (one row of four, or four look-ups)."""
    limit = math.inf if request.param.startswith("rounds") else 0.0
    monkeypatch.setattr(canvas_module, "_ROUND_LIMIT", limit)
    if request.param.endswith("corners"):
        monkeypatch.setattr(canvas_module, "_QUAD_BYTES", 0)
    return request.param


def test_patch_canvas_paints_in_order() -> None:
    ones, half = torch.ones(2, 2), torch.full((3, 3), 0.5)
    hole = torch.zeros(3, 3)
    pieces = [(ones, (0, 0)), (half, (1, 1)), (hole, (3, 3)), (ones, (4, -1))]
    replace = PatchCanvas.from_pieces(5, 5, pieces, "replace").dense()[0]
    expected = torch.zeros(5, 5)
    expected[0:2, 0:2] = 1.0
    expected[1:4, 1:4] = 0.5
    expected[3:5, 3:5] = 0.0  # a patch's zeros replace what is under it too
    expected[0:1, 4:5] = 1.0  # the part of the last patch on the canvas
    assert torch.equal(replace, expected)
    add = PatchCanvas.from_pieces(5, 5, pieces, "add").dense()[0]
    expected = torch.zeros(5, 5)
    expected[0:2, 0:2] += 1.0
    expected[1:4, 1:4] += 0.5
    expected[0:1, 4:5] += 1.0
    assert torch.equal(add, expected.clamp(0, 1))
    assert add[1, 1] == 1.0  # 1.5 clipped


def test_patch_canvas_checks_its_parts() -> None:
    with pytest.raises(ValueError, match="mode"):
        PatchCanvas(4, 4, torch.zeros(0, 1, 1), [], torch.zeros(0, 4), mode="max")
    with pytest.raises(ValueError, match="side x side"):
        PatchCanvas(4, 4, torch.zeros(1, 2, 2), [2], [[0, 0, 3, 2]])
    with pytest.raises(ValueError, match="one size and mode"):
        CanvasBatch(
            [PatchCanvas.from_pieces(4, 4, [], "add"), PatchCanvas.from_pieces(4, 5, [], "add")]
        )


@pytest.mark.parametrize("mode", ["replace", "add"])
@pytest.mark.parametrize("height, width", [(90, 90), (61, 117)])
def test_lazy_crops_equal_dense_grid_sample(
    mode: str, height: int, width: int, paint_path: str
) -> None:
    generator = torch.Generator().manual_seed(height + len(mode))
    canvases = [
        random_canvas(
            generator, height, width, int(torch.randint(0, 30, (), generator=generator)), mode
        )
        for _ in range(6)
    ]
    canvases.append(PatchCanvas.from_pieces(height, width, [], mode))  # a blank canvas
    batch = CanvasBatch(canvases)
    dense = batch.dense()
    for scale in (0.02, 0.1, 0.4, 1.0, 1.6):
        grid = random_grids(generator, len(batch), scale, (13, 17)).requires_grad_()
        lazy, expected = batch.sample(grid), grid_sample(dense, grid)
        assert lazy.shape == expected.shape == (len(batch), 1, 13, 17)
        torch.testing.assert_close(lazy, expected, atol=1e-5, rtol=0)
        # The glimpse coordinates are learned through the crops' bilinear weights.
        weights = torch.randn_like(expected)
        (lazy_grad,) = torch.autograd.grad((lazy * weights).sum(), grid)
        (dense_grad,) = torch.autograd.grad((expected * weights).sum(), grid)
        torch.testing.assert_close(lazy_grad, dense_grad, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_lazy_proxies_equal_make_proxy(mode: str) -> None:
    generator = torch.Generator().manual_seed(7)
    for height, width in ((96, 96), (100, 73)):
        canvases = [random_canvas(generator, height, width, 25, mode) for _ in range(4)]
        batch = CanvasBatch(canvases)
        dense = batch.dense()
        # Sizes that divide the sides, that do not (overlapping bins), rectangular, and larger.
        for size in (1, 8, 32, 7, 33, (5, 12), 150):
            torch.testing.assert_close(
                batch.proxies(size), make_proxy(dense, size), atol=1e-5, rtol=0
            )


def tiny_megapixel(**kwargs) -> MegapixelMNIST:
    return MegapixelMNIST(**{"canvas": 200, "n": 12, "noise": 12, **kwargs})


def test_megapixel_lazy_and_dense_agree(paint_path: str) -> None:
    lazy = tiny_megapixel(canvas=(180, 230), lazy=True)
    dense = tiny_megapixel(canvas=(180, 230))
    items = [lazy[i] for i in range(8)]
    assert all(isinstance(canvas, PatchCanvas) for canvas, _ in items)
    batch, labels = collate_canvases(items)
    images = torch.stack([dense[i][0] for i in range(8)])
    assert batch.shape == images.shape == (8, 1, 180, 230)
    assert torch.equal(batch.dense(), images)
    assert torch.equal(labels, torch.stack([dense[i][1] for i in range(8)]))
    generator = torch.Generator().manual_seed(0)
    for scale in (0.05, 0.15, 0.5, 1.2):
        grid = random_grids(generator, 8, scale, (24, 24))
        torch.testing.assert_close(batch.sample(grid), grid_sample(images, grid), atol=1e-5, rtol=0)
    for size in (32, 45):
        # The proxy keeps the canvas's shape: 32 x 40 and 45 x 56.
        shape = proxy_shape(180, 230, size)
        assert proxies_of(batch, size).shape == (8, 1, *shape) and shape[0] == size
        torch.testing.assert_close(
            proxies_of(batch, size), make_proxy(images, shape), atol=1e-5, rtol=0
        )
    # The model's crops: a CanvasBatch stands in for the image tensor.
    z = torch.randn(8, 3)
    torch.testing.assert_close(
        extract_glimpse(batch, z, 16, 0.05, 0.8),
        extract_glimpse(images, z, 16, 0.05, 0.8),
        atol=1e-5,
        rtol=0,
    )


def test_cluttered_lazy_and_dense_agree() -> None:
    kwargs = {"canvas": 160, "n": 6, "digit_size": 28, "distractors": 10}
    dense = TwoDigitCluttered("identify", **kwargs)
    lazy = TwoDigitCluttered("identify", lazy=True, augment=False, **kwargs)
    for i in range(6):
        image, label = dense[i]
        canvas, lazy_label = lazy[i]
        assert canvas.mode == "add" and torch.equal(lazy_label, label)
        assert torch.equal(canvas.dense(), image) and torch.equal(dense.canvas(i).dense(), image)
    # Warped, and at a scale where digits and fragments are resized.
    warped = TwoDigitCluttered("sum", canvas=250, n=4, augment=True, lazy=True)
    batch, _ = DataLoader(warped, batch_size=4, collate_fn=warped.collate).__iter__().__next__()
    images = torch.stack([warped.canvas(i).dense() for i in range(4)])
    expected = torch.stack(
        [TwoDigitCluttered("sum", canvas=250, n=4, augment=True)[i][0] for i in range(4)]
    )
    assert torch.equal(images, expected)
    grid = random_grids(torch.Generator().manual_seed(1), 4, 0.3, (20, 20))
    torch.testing.assert_close(batch.sample(grid), grid_sample(images, grid), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.proxies(24), make_proxy(images, 24), atol=1e-5, rtol=0)


def test_megapixel_canvases_are_pure_functions_of_seed_split_and_index() -> None:
    data = tiny_megapixel()
    forward = [data[i][0] for i in range(4)]
    backward = [tiny_megapixel()[i][0] for i in reversed(range(4))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward, strict=True))
    assert torch.equal(data[2][0], data[-10][0])
    assert not torch.equal(forward[0], forward[1])
    assert not torch.equal(forward[0], tiny_megapixel(seed=1)[0][0])
    assert data.describe(3) == tiny_megapixel().describe(3)
    # The noise patterns are drawn once per seed and split.
    assert torch.equal(data.noise_patterns, tiny_megapixel(n=1).noise_patterns)
    assert not torch.equal(data.noise_patterns, tiny_megapixel(split="test").noise_patterns)
    assert not torch.equal(data.noise_patterns, tiny_megapixel(seed=1).noise_patterns)
    assert data.noise_patterns.shape == (50, 28, 28)
    lit = data.noise_patterns[data.noise_patterns > 0]
    assert lit.min() >= 0.8 and lit.max() <= 1.0


def test_canvases_can_draw_their_own_scribbles() -> None:
    split_set, own = tiny_megapixel(), tiny_megapixel(pattern_set="canvas")
    patterns = []
    for i in range(3):
        assert split_set.describe(i) == own.describe(i)  # the same layout, other scribbles
        image, about = own[i][0][0], own.describe(i)
        x0, y0, x1, y1 = about["noise_boxes"][-1]
        patterns.append(image[y0:y1, x0:x1])
        assert not torch.equal(patterns[-1], split_set[i][0][0, y0:y1, x0:x1])
    assert torch.equal(own[1][0], tiny_megapixel(pattern_set="canvas")[1][0])
    with pytest.raises(ValueError, match="pattern_set"):
        MegapixelMNIST(pattern_set="epoch")


def test_only_training_canvases_take_the_runs_pattern_set() -> None:
    config = TrainConfig(canvas=[200, 200], noise=12, pattern_set="canvas")
    assert canvases(config, "max", "train", 4).pattern_set == "canvas"
    assert canvases(config, "max", "test", 4).pattern_set == "split"


def test_the_mixture_reading_expects_the_canvases_share_of_majority_digits() -> None:
    data = tiny_megapixel()
    for i in range(4):
        canvas = data.describe(i)
        shown = [digit == canvas["target"] for digit in canvas["digits"]]
        assert sum(shown) / len(shown) == TARGET_SHARE


def test_train_and_test_canvases_draw_from_disjoint_digits() -> None:
    # The bundled 10k digits: 0-7999 for training canvases, 8000-9999 for test canvases.
    all_digits = torch.from_numpy(read_idx(BUNDLED_DIR / "t10k-images-idx3-ubyte.gz"))
    used = {}
    for split, first in (("train", 0), ("test", 8000)):
        data = tiny_megapixel(n=60, split=split)
        assert len(data.digits) == {"train": 8000, "test": 2000}[split]
        used[split] = set()
        for i in range(len(data)):
            for k in data.describe(i)["digit_indices"]:
                assert torch.equal(data.digits[k], all_digits[first + k])
                used[split].add(first + k)
    assert used["train"] and used["test"] and not used["train"] & used["test"]


@pytest.mark.parametrize("task", MEGAPIXEL_TASKS)
def test_megapixel_labels_follow_the_digits_drawn(task: str) -> None:
    data = tiny_megapixel(task=task, n=30)
    assert data.classes == [str(k) for k in range(10)] and data.num_classes == 10
    for i in range(len(data)):
        about, (_, label) = data.describe(i), data[i]
        digits, boxes, target = about["digits"], about["boxes"], about["target"]
        assert digits == [int(data.digit_labels[k]) for k in about["digit_indices"]]
        assert digits[:3] == [target] * 3 and target not in digits[3:]
        if task == "multi":
            assert label.dtype == torch.float32 and label.shape == (10,)
            assert set(torch.nonzero(label)[:, 0].tolist()) == set(digits)
            assert about["label"] == "+".join(str(d) for d in sorted(set(digits)))
            continue
        assert label.dtype == torch.int64 and label.shape == ()
        top = min(range(5), key=lambda k: (boxes[k][1], boxes[k][0]))
        expected = {"majority": target, "max": max(digits), "top": digits[top]}[task]
        assert int(label) == expected and about["label"] == str(expected)


def test_megapixel_layout() -> None:
    data = tiny_megapixel(canvas=(150, 260), n=40, noise=30)
    height, width = data.canvas_size
    for i in range(len(data)):
        about = data.describe(i)
        boxes = about["boxes"]
        assert len(boxes) == 5 and len(about["noise_boxes"]) == 30
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            assert x1 - x0 == y1 - y0 == 28 and 0 <= x0 <= width - 28 and 0 <= y0 <= height - 28
            for a0, b0, _, _ in boxes[:k]:
                assert abs(x0 - a0) >= 28 or abs(y0 - b0) >= 28  # no two digits overlap
        for x0, y0, x1, y1 in about["noise_boxes"]:
            assert x1 - x0 == y1 - y0 == 28 and 28 <= x0 < width - 28 and 28 <= y0 < height - 28
    # Noise is painted last: the last noise box shows its pattern whole.
    image, about = data[0][0][0], data.describe(0)
    x0, y0, x1, y1 = about["noise_boxes"][-1]
    assert torch.equal(image[y0:y1, x0:x1], data.noise_patterns[about["noise_patterns"][-1]])
    # A digit no noise box touches shows whole.
    for k, (x0, y0, x1, y1) in enumerate(about["boxes"]):
        if all(
            max(x0, a0) >= min(x1, a1) or max(y0, b0) >= min(y1, b1)
            for a0, b0, a1, b1 in about["noise_boxes"]
        ):
            digit = data.digits[about["digit_indices"][k]].float() / 255
            assert torch.equal(image[y0:y1, x0:x1], digit)


def test_megapixel_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="task"):
        MegapixelMNIST("mark")
    with pytest.raises(ValueError, match="at least"):
        MegapixelMNIST(canvas=100)
    with pytest.raises(ValueError, match="split"):
        MegapixelMNIST(split="val")
    with pytest.raises(IndexError):
        tiny_megapixel(n=3)[3]
    text = repr(tiny_megapixel(lazy=True))
    assert "MegapixelMNIST(task='majority', canvas=200x200, n=12, noise=12" in text


def test_a_100000_pixel_canvas_costs_no_more_than_its_patches() -> None:
    side = 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    data = MegapixelMNIST(canvas=side, n=2, lazy=True)
    batch, _ = collate_canvases([data[0], data[1]])
    assert batch.shape == (2, 1, side, side)
    about = data.describe(0)
    x0, y0, x1, y1 = about["boxes"][0]
    # A crop straight on the first digit reads it at native resolution: 28x28 samples, one per
    # pixel centre (in double precision: float32 resolves a 100,000-px side to about 1/200 px).
    theta = torch.zeros(2, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 28 / side
    theta[:, 0, 2] = (x0 + x1) / side - 1
    theta[:, 1, 2] = (y0 + y1) / side - 1
    grid = F.affine_grid(theta, [2, 1, 28, 28], align_corners=False)
    crops = batch.sample(grid)
    wide = batch.sample(random_grids(torch.Generator().manual_seed(0), 2, 0.9, (48, 48)))
    proxies = batch.proxies(32)
    elapsed = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    shown = data.canvas(0).dense  # not called: it would allocate 40 GB
    assert callable(shown)
    digit = data.digits[about["digit_indices"][0]].float() / 255
    covered = any(
        max(x0, a0) < min(x1, a1) and max(y0, b0) < min(y1, b1)
        for a0, b0, a1, b1 in about["noise_boxes"]
    )
    if not covered:
        torch.testing.assert_close(crops[0, 0].float(), digit, atol=1e-5, rtol=0)
    assert wide.shape == (2, 1, 48, 48) and proxies.shape == (2, 1, 32, 32)
    # The proxy holds all the ink: its bins' sums add up to the patches' visible pixels.
    ink = proxies.double().sum((1, 2, 3)) * (side / 32) ** 2
    assert torch.all(ink > 5 * 50) and torch.all(ink < 55 * 28 * 28)
    assert elapsed < 10.0
    assert grown < 300_000  # KiB: a dense canvas would be 40 GB


def test_huge_canvas_crops_and_proxy_match_a_small_copy() -> None:
    """The same patches near the corner of a 100,000^2 canvas and of a 300^2 one: same crops
    there; and proxy bins that hold the whole cluster hold its whole ink."""
    generator = torch.Generator().manual_seed(3)
    small = random_canvas(generator, 300, 300, 40, "replace")
    boxes = small.boxes.clone()
    inside = (boxes >= 0).all(1) & (boxes <= 300).all(1)  # the huge canvas has no edge here
    small = PatchCanvas(300, 300, small.patches[inside], small.sides[inside], boxes[inside])
    offset = 50_000
    huge = PatchCanvas(
        100_000, 100_000, small.patches, small.sides, small.boxes + offset, mode="replace"
    )
    grid = random_grids(generator, 1, 0.5, (40, 40)).clamp(-1, 1)
    # The small canvas's grid, re-expressed on the huge canvas: x -> (x + 1) 300 / 2 + offset.
    # In double precision: float32 resolves a 100,000-px side only to about 1/200 px.
    huge_grid = ((grid.double() + 1) * 150 + offset) / 50_000 - 1
    small_crop = grid_sample(CanvasBatch([small]).dense(), grid)
    huge_crop = CanvasBatch([huge]).sample(huge_grid).float()
    torch.testing.assert_close(huge_crop, small_crop, atol=1e-4, rtol=0)
    ink = small.dense().double().sum()
    proxy = CanvasBatch([huge]).proxies(32).double()  # bins of 3125 px: the cluster sits in one
    bin = offset * 32 // 100_000
    assert proxy[0, 0, bin, bin] * 3125**2 == pytest.approx(float(ink), rel=1e-6)
    assert proxy.sum() == proxy[0, 0, bin, bin]


def test_canvas_batches_in_a_data_loader_and_on_a_device() -> None:
    data = tiny_megapixel(task="multi", lazy=True)
    loader = DataLoader(data, batch_size=5, collate_fn=data.collate)
    batch, labels = next(iter(loader))
    assert isinstance(batch, CanvasBatch) and len(batch) == 5 and labels.shape == (5, 10)
    moved = batch.to("cpu", non_blocking=True)
    assert moved.shape == batch.shape and moved.device == torch.device("cpu")
    torch.testing.assert_close(moved.proxies(16), batch.proxies(16))
    assert "5 canvases of 200x200" in repr(batch)
    assert tiny_megapixel().collate is None
