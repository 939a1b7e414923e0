"""Photos of any size: lazy regions, proxies, glimpses, folder datasets and the CLI on photos."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile
from tiny import TINY
from torch.utils.data import DataLoader, Subset

from pyro_saccade import viz
from pyro_saccade.checkpoint import save_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.data import (
    ImageError,
    Photo,
    PhotoBatch,
    PhotoFolder,
    as_batch,
    load_image,
    make_proxy,
    photo_classes,
    save_tiled_tiff,
    synthetic_photo,
)
from pyro_saccade.data.photo import reduction_for
from pyro_saccade.data.proxy import proxy_shape
from pyro_saccade.glimpse import extract_glimpse
from pyro_saccade.model import SaccadeConfig, SaccadeModel
from pyro_saccade.posterior import read_posterior
from pyro_saccade.prediction import boxes, infer, predict
from pyro_saccade.training import ELBOLoss, TrainConfig

SIZES = [(640, 480), (480, 640), (1000, 304)]  # width, height: landscape, portrait, panorama
LOSSLESS = ["png", "strips.tif", "deflate.tif", "tiles.tif", "tiles-deflate.tif"]


def write(image: Image.Image, path: Path) -> Path:
    kind = path.name.split(".", 1)[1]
    if kind == "jpg":
        image.save(path, quality=92)
    elif kind == "strips.tif":
        image.save(path)  # PIL writes uncompressed strips
    elif kind == "deflate.tif":
        image.save(path, compression="tiff_adobe_deflate")
    elif kind.startswith("tiles"):
        compression = kind.split(".")[0].removeprefix("tiles").strip("-") or "none"
        save_tiled_tiff(image, path, tile=128, compression=compression)
    else:
        image.save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], dict[str, Path]]:
    root = tmp_path_factory.mktemp("photos")
    kinds = [*LOSSLESS, "jpg", "tiles-jpeg.tif"]
    return {
        size: {
            kind: write(synthetic_photo(i, *size, seed=i), root / f"{size[0]}x{size[1]}.{kind}")
            for kind in kinds
        }
        for i, size in enumerate(SIZES)
    }


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", [*LOSSLESS, "jpg", "tiles-jpeg.tif"])
def test_region_is_the_decoded_photo_cut(photos: dict, size: tuple[int, int], kind: str) -> None:
    photo = Photo(photos[size][kind])
    full = load_image(photos[size][kind], channels=3)
    width, height = size
    assert photo.shape == (3, height, width)
    assert photo.streams == (kind != "png")
    box = (37, 51, width - 90, height - 13)
    region = photo.read_region(box)
    assert torch.equal(region, full[:, box[1] : box[3], box[0] : box[2]])


@pytest.mark.parametrize("kind", LOSSLESS)
@pytest.mark.parametrize("reduce", [2, 4, 8])
def test_reduced_region_is_the_area_average(photos: dict, kind: str, reduce: int) -> None:
    path = photos[(1000, 304)][kind]
    box = (16, 8, 1000, 301)  # ends off the block grid: partial blocks average what they hold
    region = Photo(path).read_region(box, reduce)
    full = load_image(path, channels=3)[None, :, box[1] : box[3], box[0] : box[2]]
    expected = F.avg_pool2d(full, reduce, ceil_mode=True)[0]
    assert region.shape == expected.shape
    assert torch.allclose(region, expected, atol=1e-6)


@pytest.fixture
def jpeg_decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The (width, height) of every JPEG decode during the test, as it happens."""
    decoded = []
    load = JpegImageFile.load

    def spy(self: JpegImageFile) -> object:
        decoded.append(self.size)  # the reduced size once PIL's draft mode has chosen it
        return load(self)

    monkeypatch.setattr(JpegImageFile, "load", spy)
    return decoded


def test_jpeg_is_decoded_only_at_the_reduced_scale(photos: dict, jpeg_decodes: list) -> None:
    decoded = jpeg_decodes
    photo = Photo(photos[(640, 480)]["jpg"])
    photo.proxy(16)  # wants at least 2 x 16 pixels across: 1/8 scale gives 60
    photo.read_region((200, 100, 520, 420), 8)
    assert set(decoded) == {(80, 60)}


def test_posterior_and_pictures_of_a_photo_decode_it_only_at_reduced_scale(
    photos: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jpeg_decodes: list
) -> None:
    classes = ["discs", "squares"]
    config = SaccadeConfig(
        classes=classes, task="photo", channels=3, glimpses=2, crop=8, proxy=16, hidden=32
    )
    checkpoint = tmp_path / "model.pt"
    model = SaccadeModel(config)
    save_checkpoint(checkpoint, model, TrainConfig())
    decoded = jpeg_decodes
    monkeypatch.setattr(viz, "DISPLAY_SIDE", 160)  # the picture needs a 1/4-scale view
    path = photos[(640, 480)]["jpg"]
    out = tmp_path / "posterior.nc"
    args = ["posterior", str(checkpoint), str(path), "--samples", "4", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    boxes = read_posterior(out).posterior["box"].values  # [chain, draw, image, glimpse, corner]
    assert boxes.shape == (1, 4, 1, 2, 4) and boxes[..., 2].max() <= 640
    args = ["visualize", str(checkpoint), str(path), "--samples", "4", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{path.stem}_glimpses.png").is_file()
    assert decoded and (640, 480) not in decoded
    batch = as_batch([Photo(photos[size]["jpg"]) for size in SIZES], config.proxy)
    assert torch.equal(predict(model, batch), predict(model, batch, batch.proxies))
    assert (640, 480) not in decoded


def test_jpeg_tiles_are_decoded_at_the_reduced_scale(
    photos: dict, monkeypatch: pytest.MonkeyPatch, jpeg_decodes: list
) -> None:
    path = photos[(1000, 304)]["tiles-jpeg.tif"]
    region = Photo(path).read_region((128, 0, 1000, 304), 8)
    assert set(jpeg_decodes) == {(16, 16)}  # 128 px tiles at 1/8
    monkeypatch.undo()
    full = load_image(path, channels=3)[None, :, :, 128:]
    assert (region - F.avg_pool2d(full, 8, ceil_mode=True)[0]).abs().mean() < 0.02


def test_tiled_tiff_reads_only_the_tiles_under_the_region(photos: dict, tmp_path: Path) -> None:
    path = tmp_path / "damaged.tif"
    path.write_bytes(photos[(640, 480)]["tiles-deflate.tif"].read_bytes())
    with Image.open(path) as image:
        first_tile = image.tag_v2[324][0]
    with open(path, "r+b") as f:  # wreck the compressed data of the top-left tile
        f.seek(first_tile)
        f.write(b"\xff" * 64)
    photo = Photo(path)
    far = photo.read_region((300, 200, 640, 480))
    assert torch.equal(far, load_image(photos[(640, 480)]["png"])[:, 200:480, 300:640])
    with pytest.raises(ImageError, match="damaged.tif"):
        photo.read_region((0, 0, 64, 64))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    image = synthetic_photo(0, 96, 64, seed=5)
    exif = image.getexif()
    exif[274] = orientation
    path = tmp_path / "turned.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    photo = Photo(path)
    full = load_image(path, channels=3)
    assert photo.shape == tuple(full.shape)
    _, height, width = full.shape
    box = (5, 9, width - 20, height - 3)
    assert torch.equal(photo.read_region(box), full[:, box[1] : box[3], box[0] : box[2]])


def test_gray_photos_give_three_equal_channels(tmp_path: Path) -> None:
    gray = synthetic_photo(2, 120, 80).convert("L")
    for name in ("gray.jpg", "gray.png"):
        gray.save(tmp_path / name)
        photo = Photo(tmp_path / name, channels=3)
        region = photo.read_region((0, 0, 120, 80))
        assert photo.shape == (3, 80, 120) and region.shape == (3, 80, 120)
        assert torch.equal(region[0], region[1]) and torch.equal(region[0], region[2])
        assert Photo(tmp_path / name, channels=1).proxy(16).shape == (1, 16, 24)  # its 2:3 shape


@pytest.mark.parametrize("kind", ["png", "tiles.tif", "jpg", "tiles-jpeg.tif"])
def test_proxy_is_the_area_downsample(photos: dict, kind: str) -> None:
    path = photos[(480, 640)][kind]
    proxy = Photo(path).proxy(32)
    image = load_image(path, channels=3)
    expected = make_proxy(image, proxy_shape(*image.shape[-2:], 32))
    assert proxy.shape == (3, *proxy_shape(*image.shape[-2:], 32))  # the photo's own shape
    assert min(proxy.shape[-2:]) == 32 and max(proxy.shape[-2:]) in (40, 44)
    # Exact when the whole photo is decoded; from a reduced decode the pooling bins shift a
    # little, which moves a bin at a sharp edge by up to 0.1.
    error = (proxy - expected).abs()
    assert error.max() < (1e-6 if kind == "png" else 0.1)
    assert error.mean() < (1e-6 if kind == "png" else 0.01)


def test_glimpses_match_extract_glimpse_values_and_gradients(photos: dict) -> None:
    torch.manual_seed(0)
    paths = [photos[size]["tiles-deflate.tif"] for size in SIZES]
    batch = PhotoBatch.of([Photo(p) for p in paths], proxy=16)
    assert batch.shape == (3, 3, -1, -1)
    z = torch.randn(len(paths), 3, requires_grad=True)
    # A crop as wide as the largest box: every crop is read at full resolution.
    crops = extract_glimpse(batch, z, 160, 0.15, 0.5)
    assert crops.shape == (3, 3, 160, 160)
    (grad,) = torch.autograd.grad(crops.square().sum(), z)
    for i, path in enumerate(paths):
        zi = z.detach()[i : i + 1].requires_grad_()
        expected = extract_glimpse(load_image(path)[None], zi, 160, 0.15, 0.5)
        assert torch.allclose(crops[i : i + 1], expected, atol=1e-4)
        (expected_grad,) = torch.autograd.grad(expected.square().sum(), zi)
        assert torch.allclose(grad[i], expected_grad[0], rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("proxy_for", [None, 300])
def test_a_cells_model_reads_photos_of_different_sizes_each_at_its_own_size(
    photos: dict, proxy_for: int | None
) -> None:
    torch.manual_seed(0)
    cells = dict(TINY, proxy=32, where=dict(kind="cells", box_min=16, box_max=48))
    config = SaccadeConfig(
        classes=["a", "b"], task="photo", channels=3, proxy_for=proxy_for, **cells
    )
    model = SaccadeModel(config)
    side = config.proxy_side  # with proxy_for, in proportion to each photo's shorter side
    paths = [photos[size]["png"] for size in SIZES]
    together = infer(model, PhotoBatch.of([Photo(p) for p in paths], proxy=side))
    for i, path in enumerate(paths):
        alone = infer(model, PhotoBatch.of([Photo(path)], proxy=side))
        torch.testing.assert_close(together.probs[i], alone.probs[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(together.centres[:, i], alone.centres[:, 0])
        height, width = load_image(path).shape[-2:]
        box = boxes(model, together.z[0, i], height, width, together.centres[0, i])
        assert ((box[:, 2] - box[:, 0] - box[:, 3] + box[:, 1]).abs() < 1e-3).all()  # square


def test_photos_sample_any_grid_as_grid_sample_on_the_decoded_photo(photos: dict) -> None:
    """Boxes placed in pixels (cells models) read photos from disk through ``sample``: as
    grid_sample on the decoded photo, gradients included, also across the border."""
    path = photos[(1000, 304)]["tiles-deflate.tif"]
    full = load_image(path)[None]
    batch = PhotoBatch.of([Photo(path)], proxy=16)
    for centre in ([0.2, -0.3], [0.98, 0.9]):  # inside, and reaching past the corner
        theta = torch.tensor([[[0.07, 0.0, centre[0]], [0.0, 0.2, centre[1]]]], requires_grad=True)
        grid = F.affine_grid(theta, [1, 3, 64, 64], align_corners=False)
        crop = batch.sample(grid)
        expected = F.grid_sample(full, grid, mode="bilinear", align_corners=False)
        assert torch.allclose(crop, expected, atol=1e-5)
        (grad,) = torch.autograd.grad(crop.square().sum(), theta)
        (expected_grad,) = torch.autograd.grad(expected.square().sum(), theta)
        assert torch.allclose(grad, expected_grad, rtol=1e-3, atol=1e-3)


def test_small_crops_sample_the_reduced_photo(photos: dict) -> None:
    path = photos[(640, 480)]["png"]
    full = load_image(path)[None]
    photo = Photo(path)
    for seed in range(4):
        z = torch.randn(1, 3, generator=torch.Generator().manual_seed(seed))
        crop = extract_glimpse(PhotoBatch.of([photo]), z, 16, 0.15, 0.5)
        side = (0.15 + 0.35 * torch.sigmoid(z[0, 0]).item()) * 480
        reduced = F.avg_pool2d(full, reduction_for(side, 16))  # sides divide: same geometry
        assert torch.allclose(crop, extract_glimpse(reduced, z, 16, 0.15, 0.5), atol=1e-5)


def make_folder(root: Path, per_class: int = 3) -> Path:
    for label, name in enumerate(["discs", "squares"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            width, height = [(96, 64), (64, 96), (120, 40)][i % 3]
            synthetic_photo(label, width, height, seed=10 * label + i).save(
                root / name / f"{i}.jpg"
            )
    return root


def test_folder_classes_split_and_skipped_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", per_class=5)
    (root / "discs" / "notes.txt").write_text("not a photo, not listed")
    (root / "discs" / "broken.jpg").write_text("not a photo")
    good = (root / "squares" / "0.jpg").read_bytes()
    (root / "squares" / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match=r"skipped 2 of 12 photos .*broken.jpg.*cut.jpg"):
        everything = PhotoFolder(root, proxy=16)
    assert everything.classes == ["discs", "squares"] and len(everything) == 10
    assert sorted(path.name for path, _ in everything.skipped) == ["broken.jpg", "cut.jpg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = PhotoFolder(root, "train", test_fraction=0.4, seed=3, proxy=16)
        test = PhotoFolder(root, "test", test_fraction=0.4, seed=3, proxy=16)
        again = PhotoFolder(root, "test", test_fraction=0.4, seed=3, proxy=16)
    assert test.samples == again.samples
    assert {label for _, label in test.samples} == {0, 1}  # stratified by class
    assert not {p for p, _ in train.samples} & {p for p, _ in test.samples}
    assert len(train) + len(test) == 10


def test_csv_lists_photos_with_or_without_header(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", per_class=2)
    table = tmp_path / "photos" / "labels.csv"
    table.write_text("file,label\ndiscs/0.jpg,round\nsquares/1.jpg,square\n")
    dataset = PhotoFolder(table, proxy=16)
    assert dataset.classes == ["round", "square"]
    assert [(p.name, label) for p, label in dataset.samples] == [("0.jpg", 0), ("1.jpg", 1)]
    table.write_text(f"{root / 'discs' / '1.jpg'},round\n")  # absolute path, no header
    assert len(PhotoFolder(table, classes=["round", "square"], proxy=16)) == 1
    with pytest.raises(ValueError, match="not among the classes"):
        PhotoFolder(table, classes=["square", "other"], proxy=16)


def test_proxies_are_cached_by_file_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "photos", per_class=2)
    cache = tmp_path / "cache"
    first = PhotoFolder(root, proxy=16, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 4
    computed = []
    proxy = Photo.proxy

    def counting(self: Photo, size: int = 32) -> torch.Tensor:
        computed.append(self.path.name)
        return proxy(self, size)

    monkeypatch.setattr(Photo, "proxy", counting)
    second = PhotoFolder(root, proxy=16, cache_dir=cache)
    assert computed == []
    assert all(torch.equal(a, b) for a, b in zip(first.proxies, second.proxies, strict=True))
    changed = root / "discs" / "0.jpg"
    synthetic_photo(0, 96, 64, seed=99).save(changed)
    os.utime(changed, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    PhotoFolder(root, proxy=16, cache_dir=cache)
    assert computed == ["0.jpg"]


def test_model_trains_on_batches_of_photos_of_one_aspect_ratio(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", per_class=3)
    for i, width in enumerate((48, 192)):  # two more of 96 x 64's shape, of other sizes
        synthetic_photo(0, width, width * 2 // 3, seed=50 + i).save(root / "discs" / f"x{i}.jpg")
    dataset = PhotoFolder(root, proxy=16)
    # The photos' proxies keep their three aspect ratios; an epoch orders them in whole
    # batches of one shape, the last of each filled up with its own.
    order = dataset.epoch_order(0, batch=4)
    assert sorted(set(order)) == list(range(len(dataset))) and len(order) % 4 == 0
    for start in range(0, len(order), 4):
        assert len({dataset.proxies[i].shape for i in order[start : start + 4]}) == 1
    batches = DataLoader(Subset(dataset, order), batch_size=4, collate_fn=dataset.collate)
    images, labels = next(iter(batches))
    assert isinstance(images, PhotoBatch) and len(images) == 4 and not images.mixed
    config = SaccadeConfig(
        classes=dataset.classes, task="photo", channels=3, glimpses=2, crop=8, proxy=16, hidden=32
    )
    model = SaccadeModel(config)
    loss, _ = ELBOLoss(model)(images, images.proxies, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.crop_encoder.body[0][0].weight.grad.abs().sum() > 0  # gradients reach the crops
    assert (
        model.where.posterior_net.cell.weight.grad.abs().sum() > 0
    )  # ... and the glimpse locations


def test_cli_trains_on_a_folder_and_predicts_evaluates_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_SACCADE_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "photos", per_class=3)
    run = tmp_path / "run"
    common = ["--epochs", "1", "--batch-size", "3", "--glimpses", "2", "--crop", "8"]
    result = CliRunner().invoke(
        main,
        ["train", "--data-dir", str(root), *common, "--proxy", "16", "--quiet", "--out", str(run)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["model"]["classes"] == ["discs", "squares"]
    photo = root / "squares" / "1.jpg"  # 64 wide, 96 high
    result = CliRunner().invoke(main, ["predict", "--json", str(run), str(photo)])
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.output)
    assert prediction["label"] in ("discs", "squares")
    for glimpse in prediction["glimpses"]:
        x0, y0, x1, y1 = glimpse["box"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 96
    result = CliRunner().invoke(main, ["evaluate", "--json", str(run)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["n"] == 2  # a seeded 20% of each class
    both = ["train", "--data-dir", str(root), "--csv", str(photo), "--out", str(run)]
    result = CliRunner().invoke(main, both)
    assert result.exit_code != 0 and "not both" in result.output


def test_exported_jpegs_fine_tune_a_digit_model_and_train_the_proxy_cnn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYRO_SACCADE_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    export = ["data", "export", "--task", "majority", "--canvas", "200x300", "--noise", "5"]
    export += ["--background", "clutter", "--n", "6", "--format", "jpg", "--out", str(photos)]
    assert CliRunner().invoke(main, export).exit_code == 0
    labels = str(photos / "labels.csv")
    torch.manual_seed(0)
    digits = photo_classes(labels)  # the digits the six photos' labels name
    cells = dict(kind="cells", box_min=24, box_max=64)
    config = SaccadeConfig(**{**TINY, "proxy": 32}, task="majority", classes=digits, where=cells)
    start = tmp_path / "digits.pt"
    save_checkpoint(start, SaccadeModel(config), TrainConfig())
    common = ["--csv", labels, "--test-data", labels, "--epochs", "1", "--batch-size", "3"]
    run = tmp_path / "run"
    args = ["train", *common, "--init", str(start), "--quiet", "--out", str(run)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # Photos labelled with the digit model's classes: it keeps its task (its head reads them).
    assert json.loads((run / "config.json").read_text())["model"]["task"] == "majority"
    proxy_cnn = tmp_path / "proxy-cnn"
    args = ["train", "--model", "proxy-cnn", *common, "--proxy", "32", "--quiet"]
    result = CliRunner().invoke(main, [*args, "--out", str(proxy_cnn)])
    assert result.exit_code == 0, result.output
    # A new model of photos reads three channels; beside the gray digit model it is given the
    # same proxies, replicated.
    assert json.loads((proxy_cnn / "config.json").read_text())["model"]["channels"] == 3
    args = ["evaluate", str(run), "--json", "--proxy-baseline", str(proxy_cnn)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output.splitlines()[-1])
    assert measured["n"] == 6 and 0 <= measured["proxy_baseline_accuracy"] <= 1
    # boxes.csv says where the deciding digits are (a row each, three or more per photo);
    # coverage counts them for every posterior draw.
    rows = (photos / "boxes.csv").read_text().splitlines()[1:]
    assert len(rows) >= 6 * 3
    draws = max(measured["samples"], 1)
    assert measured["deciding_digits"] == len(rows) * draws and 0 <= measured["coverage"] <= 1


def test_boxes_csv_lists_each_photos_objects_and_names_a_bad_row(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", per_class=2)
    boxes = root / "boxes.csv"
    boxes.write_text("file,x0,y0,x1,y1\ndiscs/0.jpg,1,2,11,12\ndiscs/0.jpg,20,20,30,30\n")
    photos = PhotoFolder(root, proxy=16)
    listed = [photos.object_boxes(i).tolist() for i in range(len(photos))]
    assert [[1, 2, 11, 12], [20, 20, 30, 30]] in listed  # discs/0.jpg's two objects
    assert listed.count([]) == len(photos) - 1  # the others are not listed
    boxes.write_text("file,x0,y0,x1,y1\ndiscs/0.jpg,1,2,11\n")
    with pytest.raises(ValueError, match="row 1 is not file,x0,y0,x1,y1"):
        PhotoFolder(root, proxy=16)
