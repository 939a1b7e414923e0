"""Tests of pyro_saccade.data and ``saccade data export``: fast, deterministic, offline."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pyro_saccade.cli import main
from pyro_saccade.data import (
    MEGAPIXEL_TASKS,
    TASKS,
    ImageError,
    MegapixelMNIST,
    TwoDigitCluttered,
    class_names,
    label_name,
    label_of,
    load_digits,
    load_image,
    make_proxy,
    num_classes,
    proxy_shape,
    read_idx,
    save_image,
)
from pyro_saccade.data.cluttered import warp_digit, warp_matrix
from pyro_saccade.data.mnist import BUNDLED_DIR
from pyro_saccade.data.photos import PhotoFolder, list_photos
from pyro_saccade.glimpse import box_share
from pyro_saccade.metrics import deciding_boxes
from pyro_saccade.training import TrainConfig, canvases

TINY_TRAIN = ["--canvas", "40", "--crop", "16", "--proxy", "16", "--glimpses", "1", "--epochs", "1"]
TINY_TRAIN += ["--train-size", "4", "--test-size", "4", "--batch-size", "4", "--quiet"]


def box_side(box: tuple[int, int, int, int]) -> tuple[int, int]:
    x0, y0, x1, y1 = box
    return y1 - y0, x1 - x0


# --- MNIST ---------------------------------------------------------------------------------------


def test_bundled_digits_follow_the_8000_2000_convention() -> None:
    all_images = read_idx(BUNDLED_DIR / "t10k-images-idx3-ubyte.gz")
    all_labels = read_idx(BUNDLED_DIR / "t10k-labels-idx1-ubyte.gz")
    assert all_images.shape == (10000, 28, 28) and all_labels.shape == (10000,)
    train_x, train_y = load_digits("bundled", "train")
    test_x, test_y = load_digits("bundled", "test")
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    assert train_x.shape == (8000, 28, 28) and test_x.shape == (2000, 28, 28)
    assert np.array_equal(train_x.numpy(), all_images[:8000])
    assert np.array_equal(test_y.numpy(), all_labels[8000:])


def test_bundled_plus_5k_adds_unseen_training_digits_only() -> None:
    train_x, train_y = load_digits("bundled+5k", "train")
    assert train_x.shape == (13000, 28, 28) and train_y.shape == (13000,)
    assert torch.equal(train_x[:8000], load_digits("bundled", "train")[0])
    assert torch.equal(train_y[8000:].bincount(), torch.full((10,), 500))
    assert torch.equal(load_digits("bundled+5k", "test")[0], load_digits("bundled", "test")[0])
    # none of the added digits is one of the 10k test digits, so held-out canvases stay unseen
    test_rows = {row.tobytes() for row in read_idx(BUNDLED_DIR / "t10k-images-idx3-ubyte.gz")}
    assert not any(row.numpy().tobytes() in test_rows for row in train_x[8000:])


def test_bundled_plus_60k_reads_the_training_set_from_the_download_cache(tmp_path: Path) -> None:
    # torchvision's layout, as a download leaves it; here 30 digits stand in for the 60,000.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(30 * 28 * 28, dtype=np.uint8).reshape(30, 28, 28)
    labels = np.arange(30, dtype=np.uint8) % 10
    files = {
        "train-images-idx3-ubyte": images,
        "train-labels-idx1-ubyte": labels,
        "t10k-images-idx3-ubyte": images[:5],
        "t10k-labels-idx1-ubyte": labels[:5],
    }
    for name, x in files.items():  # idx: type code 8 (uint8), ndim, big-endian sides, data
        header = bytes([0, 0, 8, x.ndim]) + np.array(x.shape, ">u4").tobytes()
        (raw / name).write_bytes(header + x.tobytes())
    train_x, train_y = load_digits("bundled+60k", "train", root=tmp_path)
    assert train_x.shape == (8030, 28, 28)
    assert torch.equal(train_x[:8000], load_digits("bundled", "train")[0])
    assert np.array_equal(train_x[8000:].numpy(), images)
    assert np.array_equal(train_y[8000:].numpy(), labels)
    # held-out digits stay the bundled 2,000 and need nothing downloaded
    empty = tmp_path / "empty"
    test_x, _ = load_digits("bundled+60k", "test", root=empty)
    assert torch.equal(test_x, load_digits("bundled", "test")[0]) and not empty.exists()


def test_training_on_more_digits_from_the_cli(tmp_path: Path, monkeypatch) -> None:
    args = ["train", *TINY_TRAIN, "--digits", "bundled+5k", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "config.json").read_text())["train"]["source"] == "bundled+5k"
    result = CliRunner().invoke(main, [*args, "--resume", "--digits", "bundled"])
    assert result.exit_code != 0 and "source='bundled+5k'" in result.output
    result = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--digits", "bundled+10k"])
    assert result.exit_code == 2 and "directory of MNIST idx files" in result.output
    # a directory of digits is recorded as an absolute path, so --resume works from anywhere
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / "digits" / name).write_bytes((BUNDLED_DIR / name).read_bytes())
    result = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--digits", "digits", "--out", "run"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["source"]
    assert saved == str((tmp_path / "digits").resolve())


def test_directory_source_and_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_digits(str(tmp_path), "train")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((BUNDLED_DIR / name).read_bytes())
    images, labels = load_digits(str(tmp_path), "test")
    assert torch.equal(images, load_digits("bundled", "test")[0])
    with pytest.raises(ValueError, match="split"):
        load_digits("bundled", "validation")
    with pytest.raises(ValueError, match="bundled\\+5k.*or a directory"):
        load_digits("bundled+10k", "train")


def test_torchvision_source_reports_a_failed_download(monkeypatch, tmp_path: Path) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(RuntimeError, match="could not be downloaded.*bundled"):
        load_digits("torchvision", "train", root=tmp_path)
    # bundled+60k says where to put the training digits by hand
    with pytest.raises(RuntimeError, match=f"put the idx files into {tmp_path / 'MNIST' / 'raw'}"):
        load_digits("bundled+60k", "train", root=tmp_path)


# --- Tasks and labels ----------------------------------------------------------------------------


def test_class_counts_and_names() -> None:
    assert [num_classes(task) for task in TASKS] == [55, 19, 10]
    names = class_names("identify")
    assert names[:3] == ["0-0", "0-1", "0-2"] and names[-1] == "9-9"
    assert names == sorted(names) and len(set(names)) == 55
    assert class_names("sum") == [str(k) for k in range(19)]
    assert class_names("mark") == [str(k) for k in range(10)]
    assert int(label_of("identify", 7, 3)) == int(label_of("identify", 3, 7)) == names.index("3-7")
    assert int(label_of("sum", 9, 9)) == 18
    assert label_of("mark", 4, 4).tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert label_name("mark", 7, 3) == "3+7" and label_name("identify", 7, 3) == "3-7"
    with pytest.raises(ValueError, match="task"):
        class_names("count")


@pytest.mark.parametrize("task", TASKS)
def test_labels_agree_with_the_digits_drawn(task: str) -> None:
    dataset = TwoDigitCluttered(task, canvas=100, n=20, distractors=0)
    digits, labels = load_digits("bundled", "train")
    for i in range(len(dataset)):
        image, label = dataset[i]
        info = dataset.describe(i)
        assert info["digits"] == [int(labels[k]) for k in info["digit_indices"]]
        assert torch.equal(label, label_of(task, *info["digits"]))
        # On a 100x100 canvas digits are pasted unscaled, and intensities only add.
        for k, (x0, y0, x1, y1) in zip(info["digit_indices"], info["boxes"], strict=True):
            assert (image[0, y0:y1, x0:x1] >= digits[k] / 255.0 - 1e-6).all()
    expected = (torch.float32, (10,)) if task == "mark" else (torch.int64, ())
    assert (label.dtype, tuple(label.shape)) == expected


# --- Canvases ------------------------------------------------------------------------------------


def test_canvases_are_deterministic_per_seed_split_and_index() -> None:
    dataset = TwoDigitCluttered(canvas=100, n=10, seed=1)
    again = TwoDigitCluttered(canvas=100, n=10, seed=1)
    assert torch.equal(dataset[3][0], again[3][0]) and torch.equal(dataset[3][0], dataset[-7][0])
    assert not torch.equal(dataset[3][0], dataset[4][0])
    assert not torch.equal(dataset[3][0], TwoDigitCluttered(canvas=100, n=10, seed=2)[3][0])
    assert not torch.equal(dataset[3][0], TwoDigitCluttered(canvas=100, n=10, split="test")[3][0])
    with pytest.raises(IndexError):
        dataset[10]


def test_train_and_test_digit_pools_are_disjoint() -> None:
    train = TwoDigitCluttered(n=50, split="train")
    test = TwoDigitCluttered(n=50, split="test")
    train_rows = {row.numpy().tobytes() for row in train.digits}
    assert not any(row.numpy().tobytes() in train_rows for row in test.digits)
    used = {k for i in range(len(test)) for k in test.describe(i)["digit_indices"]}
    assert max(used) < len(test.digits) == 2000


def test_canvas_sizes_and_scaling() -> None:
    small = TwoDigitCluttered(canvas=100, n=1)
    assert small[0][0].shape == (1, 100, 100) and small.digit_side == 28 and small.patch_side == 8

    large = TwoDigitCluttered(canvas=2528, n=1)
    image, _ = large[0]
    assert image.shape == (1, 2528, 2528) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5
    assert all(box_side(box) == (708, 708) for box in large.describe(0)["boxes"])

    wide = TwoDigitCluttered(canvas=(300, 500), n=5)
    assert wide[0][0].shape == (1, 300, 500) and wide.digit_side == 84
    for i in range(len(wide)):
        for x0, y0, x1, y1 in wide.describe(i)["boxes"] + wide.describe(i)["distractor_boxes"]:
            assert 0 <= x0 < x1 <= 500 and 0 <= y0 < y1 <= 300


def test_digit_size_option() -> None:
    dataset = TwoDigitCluttered(canvas=200, n=3, digit_size=40)
    info = dataset.describe(0)
    assert all(box_side(box) == (40, 40) for box in info["boxes"])
    assert all(box_side(box) == (11, 11) for box in info["distractor_boxes"])  # round(8 * 40/28)
    with pytest.raises(ValueError, match="smaller than a digit"):
        TwoDigitCluttered(canvas=30, digit_size=40)
    with pytest.raises(ValueError, match="smaller than a digit"):
        TwoDigitCluttered(canvas=(300, 30), digit_size=40)


def test_without_distractors_only_the_digit_boxes_are_lit() -> None:
    dataset = TwoDigitCluttered(canvas=(120, 160), n=5, distractors=0)
    for i in range(len(dataset)):
        image, _ = dataset[i]
        mask = torch.zeros_like(image, dtype=torch.bool)
        for x0, y0, x1, y1 in dataset.describe(i)["boxes"]:
            mask[0, y0:y1, x0:x1] = True
        assert image[~mask].abs().max() == 0 and image[mask].max() > 0.5
        assert dataset.describe(i)["distractor_boxes"] == []


def test_warp_rotates_and_scales_a_digit_about_its_centre() -> None:
    digit = load_digits("bundled", "train")[0][0].float()
    assert torch.allclose(warp_digit(digit, warp_matrix(0.0, 1.0, 0.0)), digit, atol=1e-4)
    # A quarter turn of the square is exact; which way it turns is fixed by the sign.
    assert torch.allclose(
        warp_digit(digit, warp_matrix(90.0, 1.0, 0.0)), torch.rot90(digit, -1), atol=1e-3
    )
    # At half the size the digit keeps all its ink on a quarter of the area.
    # Plain floats: pytest.approx takes numbers, and some pytest versions reject a 0-d tensor.
    ink = warp_digit(digit, warp_matrix(0.0, 0.5, 0.0)).sum().item()
    assert ink == pytest.approx(digit.sum().item() / 4, rel=0.05)


def test_augment_warps_the_digits_and_keeps_the_layout() -> None:
    plain = TwoDigitCluttered(canvas=100, n=5, distractors=0, seed=4)
    warped = TwoDigitCluttered(canvas=100, n=5, distractors=0, seed=4, augment=True)
    for i in range(len(plain)):
        (image, label), (warped_image, warped_label) = plain[i], warped[i]
        assert warped.describe(i) == plain.describe(i) and torch.equal(warped_label, label)
        assert not torch.equal(warped_image, image)
        assert torch.equal(warped_image, warped[i][0])  # a pure function of (seed, split, index)
        mask = torch.zeros_like(image, dtype=torch.bool)
        for x0, y0, x1, y1 in warped.describe(i)["boxes"]:
            mask[0, y0:y1, x0:x1] = True
        assert warped_image[~mask].abs().max() == 0  # each digit stays in its box
        ink = warped_image.sum() / image.sum()
        assert 0.6 < ink < 1.4  # scaled by 0.9-1.1 at most, a little lost at the edges


def test_only_training_canvases_are_augmented(tmp_path: Path) -> None:
    config = TrainConfig(augment=True)
    assert canvases(config, "identify", "train", 4).augment
    assert not canvases(config, "identify", "test", 4).augment
    assert not canvases(TrainConfig(), "identify", "train", 4).augment
    result = CliRunner().invoke(main, ["train", *TINY_TRAIN, "--augment", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "config.json").read_text())["train"]["augment"] is True


def test_overlap_draws_the_second_digit_over_the_first() -> None:
    plain = TwoDigitCluttered(canvas=60, n=40, seed=2)
    over = TwoDigitCluttered(canvas=60, n=40, seed=2, overlap=1.0)
    shares = []
    for i in range(len(plain)):
        before, after = plain.describe(i), over.describe(i)
        assert after["boxes"][0] == before["boxes"][0]
        assert after["distractor_boxes"] == before["distractor_boxes"]
        assert after["digits"] == before["digits"]
        first, second = torch.tensor(after["boxes"], dtype=torch.float)
        assert second.min() >= 0 and second.max() <= 60
        assert second[2] - second[0] == second[3] - second[1] == first[2] - first[0]
        # The measure the docs' accuracy-by-overlap uses (examples/glimpse_coverage.py).
        shares.append(float(box_share(second, first[None])))
    assert min(shares) > 0.5
    assert len(set(shares)) > 10  # placed at random, not stacked
    some = TwoDigitCluttered(canvas=60, n=40, seed=2, overlap=0.5)
    moved = sum(some.describe(i)["boxes"] != plain.describe(i)["boxes"] for i in range(40))
    assert 10 < moved < 30
    with pytest.raises(ValueError, match="overlap"):
        TwoDigitCluttered(overlap=1.5)


def test_only_training_canvases_are_overlapped(tmp_path: Path) -> None:
    config = TrainConfig(overlap=0.3)
    assert canvases(config, "identify", "train", 4).overlap == 0.3
    assert canvases(config, "identify", "test", 4).overlap == 0
    result = CliRunner().invoke(
        main, ["train", *TINY_TRAIN, "--overlap", "0.3", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "config.json").read_text())["train"]["overlap"] == 0.3


# --- Proxy ---------------------------------------------------------------------------------------


def test_proxy_is_an_area_average() -> None:
    images = torch.rand(2, 1, 64, 64)
    proxy = make_proxy(images, 32)
    assert proxy.shape == (2, 1, 32, 32)
    assert torch.allclose(proxy, images.reshape(2, 1, 32, 2, 32, 2).mean((3, 5)))
    assert make_proxy(images[0], (8, 16)).shape == (1, 8, 16)
    large = TwoDigitCluttered(canvas=2528, n=1)[0][0]
    proxy = make_proxy(large, 32)
    assert proxy.shape == (1, 32, 32) and torch.allclose(proxy.mean(), large.mean(), atol=1e-5)


def test_proxy_noise_and_dtype_device() -> None:
    images = torch.rand(3, 1, 40, 40, dtype=torch.float64)
    noisy = make_proxy(images, 10, noise_std=0.3, generator=torch.Generator().manual_seed(0))
    again = make_proxy(images, 10, noise_std=0.3, generator=torch.Generator().manual_seed(0))
    assert noisy.dtype == torch.float64 and torch.equal(noisy, again)
    assert not torch.allclose(noisy, make_proxy(images, 10))
    assert 0.0 <= noisy.min() and noisy.max() <= 1.0
    assert make_proxy(torch.rand(1, 50, 50, device="meta"), 10).device.type == "meta"
    assert make_proxy(torch.rand(1, 50, 50, dtype=torch.bfloat16), 10).dtype == torch.bfloat16
    with pytest.raises(TypeError):
        make_proxy(torch.zeros(1, 50, 50, dtype=torch.uint8))


# --- Image files ---------------------------------------------------------------------------------


def test_load_image_formats(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, gray])).save(tmp_path / "rgba.png")
    # JPEG is lossy, so it gets a smooth image that it can reproduce closely.
    ramp = np.linspace(0, 255, 30, dtype=np.uint8)
    smooth = np.broadcast_to(ramp[None, :, None], (20, 30, 3)).copy()
    smooth[..., 1] = 255 - smooth[..., 1]
    Image.fromarray(smooth).save(tmp_path / "smooth.jpg", quality=95)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.png")

    assert torch.equal(load_image(tmp_path / "gray.png")[0], torch.from_numpy(gray / 255.0).float())
    assert torch.allclose(
        load_image(tmp_path / "deep.png")[0], load_image(tmp_path / "gray.png")[0]
    )
    expected_rgb = torch.from_numpy(rgb / 255.0).float().permute(2, 0, 1)
    assert torch.equal(load_image(tmp_path / "rgb.png"), expected_rgb)
    assert torch.equal(load_image(tmp_path / "rgba.png"), expected_rgb)
    jpeg = load_image(tmp_path / "smooth.jpg")
    assert jpeg.shape == (3, 20, 30) and jpeg.dtype == torch.float32
    assert (jpeg - torch.from_numpy(smooth / 255.0).permute(2, 0, 1)).abs().max() < 0.05
    assert load_image(tmp_path / "gray.png", channels=3).shape == (3, 20, 30)
    luminance = load_image(tmp_path / "rgb.png", channels=1)
    pil_luminance = np.asarray(Image.fromarray(rgb).convert("L")) / 255.0
    assert luminance.shape == (1, 20, 30)
    assert np.abs(luminance[0].numpy() - pil_luminance).max() <= 1 / 255 + 1e-6

    for name, array in {
        "hw.npy": gray / 255.0,
        "chw.npy": rgb.transpose(2, 0, 1),
        "hwc.npy": rgb,
    }.items():
        np.save(tmp_path / name, array)
        image = load_image(tmp_path / name)
        assert image.dtype == torch.float32 and image.shape[1:] == (20, 30)
        assert 0.0 <= image.min() and image.max() <= 1.0


def test_load_image_errors_name_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    cases = {
        "missing.png": None,
        "empty.png": b"",
        "notes.png": b"this is not an image\n",
        "truncated.png": data[: len(data) // 2],
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan))
    np.save(tmp_path / "inf.npy", np.full((4, 4), np.inf))
    for name in [*cases, "nan.npy", "inf.npy"]:
        with pytest.raises(ImageError, match=name) as error:
            load_image(tmp_path / name)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError):  # ImageError is a ValueError
        load_image(tmp_path / "missing.png")


def test_save_image_round_trip(tmp_path: Path) -> None:
    image = torch.rand(3, 12, 16)
    save_image(image, tmp_path / "out.png")
    assert (load_image(tmp_path / "out.png") - image).abs().max() <= 0.5 / 255 + 1e-6
    save_image(image[0], tmp_path / "gray.png")
    assert load_image(tmp_path / "gray.png").shape == (1, 12, 16)


# --- Command line --------------------------------------------------------------------------------


def read_labels(out: Path) -> list[dict[str, str]]:
    with open(out / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("task", "canvas", "n", "size"),
    [
        ("identify", "100", 4, (100, 100)),
        ("mark", "2528", 2, (2528, 2528)),
        ("sum", "60x90", 3, (90, 60)),
    ],
)
def test_data_export(tmp_path: Path, task: str, canvas: str, n: int, size: tuple[int, int]) -> None:
    out = tmp_path / "canvases"
    args = ["data", "export", "--task", task, "--canvas", canvas, "--n", str(n), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = read_labels(out)
    dataset = TwoDigitCluttered(task, canvas=size[::-1], n=n, split="test")
    assert [row["file"] for row in rows] == [f"{i:06d}.png" for i in range(n)]
    assert [row["label"] for row in rows] == [dataset.describe(i)["label"] for i in range(n)]
    for row in rows:
        with Image.open(out / row["file"]) as png:
            assert png.size == size and png.mode == "L"
    if task == "mark":
        assert all("+" in row["label"] for row in rows)


def test_data_export_writes_jpegs_that_train_reads_as_photos(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    args = ["data", "export", "--task", "majority", "--canvas", "200x300", "--noise", "5"]
    args += ["--background", "clutter", "--n", "3", "--format", "jpg", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = read_labels(out)
    assert [row["file"] for row in rows] == [f"{i:06d}.jpg" for i in range(3)]
    dataset = MegapixelMNIST("majority", (200, 300), 3, noise=5, split="test", background="clutter")
    for i, row in enumerate(rows):
        with Image.open(out / row["file"]) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (300, 200)
            pixels = torch.from_numpy(np.asarray(jpeg, dtype=np.float32) / 255)
        # Quality 95: within a few grey levels of the canvas on average.
        assert (pixels - dataset[i][0][0]).abs().mean() < 0.01
    assert [label for _, label in list_photos(out / "labels.csv")] == [r["label"] for r in rows]
    # boxes.csv: where the digits that decide each label are, as the photos read them.
    photos = PhotoFolder(out / "labels.csv", proxy=16, channels=1)
    for i in range(3):
        expected = deciding_boxes("majority", dataset.describe(i))
        assert len(expected) >= 3 and torch.equal(photos.object_boxes(i), expected)


def test_data_export_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    export = ["data", "export", "--n", "1", "--out"]
    bad_canvas = runner.invoke(main, [*export, str(tmp_path), "--canvas", "100x"])
    assert bad_canvas.exit_code == 2 and "HxW" in bad_canvas.output
    (tmp_path / "file").write_text("")
    not_a_dir = runner.invoke(main, [*export, str(tmp_path / "file")])
    assert not_a_dir.exit_code == 2 and "--out" in not_a_dir.output
    too_small = runner.invoke(
        main, [*export, str(tmp_path), "--canvas", "20", "--digit-size", "28"]
    )
    assert too_small.exit_code == 2 and "smaller than a digit" in too_small.output


def test_cli_help_is_instant() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "data" in result.output
    assert CliRunner().invoke(main, ["data", "export", "--help"]).exit_code == 0
    # --help must not pay for importing torch: the CLI module imports it inside command bodies.
    code = "import sys, pyro_saccade.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_task_choices_match_the_data_module() -> None:
    export = main.commands["data"].commands["export"]
    task = next(param for param in export.params if param.name == "task")
    assert tuple(task.type.choices) == TASKS + MEGAPIXEL_TASKS


def test_the_proxy_keeps_the_images_shape() -> None:
    # J across the shorter side, the longer in proportion to a whole number of 4-px cells.
    assert proxy_shape(1500, 1500, 192) == (192, 192)
    assert proxy_shape(1500, 2000, 192) == (192, 256)  # a 4:3 photo
    assert proxy_shape(2000, 1500, 192) == (256, 192)  # the same, portrait
    assert proxy_shape(480, 640, 32) == (32, 44)  # 42.7 columns, to the nearest cell
    image = torch.rand(1, 60, 90)
    assert make_proxy(image, proxy_shape(60, 90, 16)).shape == (1, 16, 24)
