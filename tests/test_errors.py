"""Bad input gets one clear line on stderr and a non-zero exit code (2 for usage errors), from
every command; the Python API raises specific exceptions with the same messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tiny import TINY

from pyro_saccade import CheckpointError, SaccadeConfig, SaccadeModel, load, train
from pyro_saccade.checkpoint import save_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.config import FORMAT_VERSION
from pyro_saccade.data import ImageError, class_names, load_image
from pyro_saccade.prediction import infer
from pyro_saccade.training import TrainConfig

RUN = dict(canvas=[40, 40], train_size=8, test_size=8, batch_size=8, epochs=1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run, and every kind of bad file."""
    root = tmp_path_factory.mktemp("inputs")
    config = SaccadeConfig(classes=class_names("identify"), **TINY)
    train(config, TrainConfig(**RUN), out=root / "tiny-run", progress=False)
    payload = torch.load(root / "tiny-run/checkpoint.pt", weights_only=True)
    save_checkpoint(root / "model.pt", SaccadeModel(config), TrainConfig(**RUN))
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(root / "ok.png")
    Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(root / "small.png")
    Image.fromarray((rng.random((80, 80, 3)) * 255).astype(np.uint8)).save(root / "big.jpg")
    for name in ("ok.png", "big.jpg", "tiny-run/checkpoint.pt"):
        data = (root / name).read_bytes()
        (root / f"truncated-{Path(name).name}").write_bytes(data[: len(data) // 2])
    (root / "empty.png").touch()
    (root / "empty.pt").touch()
    (root / "text.png").write_text("not a picture\n")
    (root / "garbage.pt").write_bytes(b"\x00garbage" * 64)
    image = rng.random((40, 40)).astype(np.float32)
    image[3, 4] = np.nan
    np.save(root / "nan.npy", image)
    image[3, 4] = np.inf
    np.save(root / "inf.npy", image)
    np.save(root / "two-channels.npy", rng.random((2, 40, 40)).astype(np.float32))
    labelled = root / "labelled"
    labelled.mkdir()
    Image.open(root / "ok.png").save(labelled / "a.png")
    (labelled / "labels.csv").write_text("file,label\na.png,cat\n")
    photo_classes = SaccadeConfig(classes=["cats", "dogs"], task="photo", channels=3, **TINY)
    save_checkpoint(root / "photo-model.pt", SaccadeModel(photo_classes), TrainConfig(**RUN))
    (root / "birds/birds").mkdir(parents=True)
    Image.open(root / "big.jpg").save(root / "birds/birds/1.jpg")
    torch.save({**payload, "format_version": 0}, root / "old-format.pt")
    bigger = json.dumps({**json.loads(payload["config"]), "hidden": 64})
    torch.save({**payload, "config": bigger}, root / "other-config.pt")
    unknown = json.dumps({**json.loads(payload["config"]), "wings": 2})
    torch.save({**payload, "config": unknown}, root / "newer-config.pt")
    (root / "blocker").write_text("a file where a directory should be\n")
    return root


def invoke(inputs: Path, args: list[str], monkeypatch: pytest.MonkeyPatch) -> object:
    """Run ``saccade ARGS`` in the inputs directory, so that messages name relative paths."""
    monkeypatch.chdir(inputs)
    return CliRunner().invoke(main, args)


def error_line(result: object) -> str:
    """The one "Error: ..." line on stderr; usage errors show the usage above it."""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    return errors[0]


CK = "model.pt"
OUT = ["--out", "blocker/out"]
TRAIN = ["train", "--canvas", "40", "--crop", "16", "--proxy", "16", "--glimpses", "1"]
TRAIN += ["--epochs", "1", "--train-size", "8", "--test-size", "8", "--quiet"]

CASES = {
    # missing files
    "predict-missing-checkpoint": (
        ["predict", "nonexist.pt", "ok.png"],
        1,
        "nonexist.pt: no such checkpoint file or pretrained model",
    ),
    "predict-missing-image": (["predict", CK, "nonexist.png"], 1, "nonexist.png: no such file"),
    "posterior-missing-image": (
        ["posterior", CK, "nonexist.png", "--out", "p.nc"],
        1,
        "nonexist.png: no such file",
    ),
    "visualize-missing-image": (
        ["visualize", CK, "nonexist.png", "--out", "pictures"],
        1,
        "nonexist.png: no such file",
    ),
    "evaluate-missing-checkpoint": (["evaluate", "nonexist.pt"], 1, "nonexist.pt: no such"),
    "train-init-missing": (
        [*TRAIN, "--init", "nonexist.pt", "--out", "r"],
        1,
        "nonexist.pt: no such",
    ),
    "train-data-dir-missing": (
        [*TRAIN, "--data-dir", "nonexist", "--out", "r"],
        2,
        "'nonexist' does not exist",
    ),
    # empty, truncated, not an image
    "predict-empty-image": (["predict", CK, "empty.png"], 1, "empty.png: file is empty"),
    "predict-empty-checkpoint": (["predict", "empty.pt", "ok.png"], 1, "empty.pt: file is empty"),
    "predict-truncated-png": (
        ["predict", CK, "truncated-ok.png"],
        1,
        "truncated-ok.png: unreadable image header (image file is truncated)",
    ),
    "predict-truncated-jpeg": (
        ["predict", CK, "truncated-big.jpg"],
        1,
        "truncated-big.jpg: truncated or corrupt image",
    ),
    "posterior-truncated-png": (  # photos are opened lazily, as by predict
        ["posterior", CK, "truncated-ok.png", "--out", "p.nc"],
        1,
        "truncated-ok.png: unreadable image header (image file is truncated)",
    ),
    "predict-not-an-image": (["predict", CK, "text.png"], 1, "text.png: not an image"),
    "visualize-not-an-image": (
        ["visualize", CK, "text.png", "--out", "pictures"],
        1,
        "text.png: not an image",
    ),
    # images the model cannot use
    "predict-too-small": (
        ["predict", CK, "small.png"],
        1,
        "small.png: 8x8 pixels, smaller than the model's 16x16 crop and proxy",
    ),
    "posterior-too-small": (
        ["posterior", CK, "small.png", "--out", "p.nc"],
        1,
        "small.png: 8x8 pixels",
    ),
    "evaluate-canvas-too-small": (
        ["evaluate", CK, "--canvas", "10", "--n", "4"],
        2,
        "Invalid value for --canvas: 10x10 pixels, smaller than the model's 16x16 crop",
    ),
    "train-canvas-too-small": (
        [*TRAIN, "--canvas", "12", "--out", "r"],
        2,
        "Invalid value for --canvas: 12x12 pixels, smaller than the model's 16x16 crop",
    ),
    "predict-nan": (["predict", CK, "nan.npy"], 1, "nan.npy: contains NaN or infinite values"),
    "predict-inf": (["predict", CK, "inf.npy"], 1, "inf.npy: contains NaN or infinite values"),
    "visualize-nan": (
        ["visualize", CK, "nan.npy", "--out", "pictures"],
        1,
        "nan.npy: contains NaN or infinite values",
    ),
    "predict-two-channels": (
        ["predict", CK, "two-channels.npy"],
        1,
        "two-channels.npy: array of shape (2, 40, 40); expected [H, W], or [C, H, W] or "
        "[H, W, C] with 1, 3 or 4 channels",
    ),
    "posterior-label-outside-classes": (
        ["posterior", CK, "labelled/a.png", "--out", "p.nc"],
        1,
        "labelled/labels.csv, a.png: label 'cat' is not one of this model's classes",
    ),
    "evaluate-label-outside-classes": (
        ["evaluate", "photo-model.pt", "--data-dir", "birds"],
        1,
        "birds: labels ['birds'] are not among the classes ['cats', 'dogs']",
    ),
    "visualize-label-outside-classes": (
        ["visualize", CK, "labelled/a.png", "--out", "pictures"],
        1,
        "labelled/labels.csv, a.png: label 'cat' is not one of this model's classes",
    ),
    # checkpoints
    "predict-unknown-pretrained": (
        ["predict", "identify-9999", "ok.png"],
        1,
        "identify-9999: no such checkpoint file or pretrained model (pretrained: ",
    ),
    "predict-corrupted-checkpoint": (
        ["predict", "garbage.pt", "ok.png"],
        1,
        "garbage.pt: not a readable checkpoint",
    ),
    "evaluate-truncated-checkpoint": (
        ["evaluate", "truncated-checkpoint.pt"],
        1,
        "truncated-checkpoint.pt: not a readable checkpoint",
    ),
    "visualize-image-as-checkpoint": (
        ["visualize", "ok.png", "ok.png", "--out", "pictures"],
        1,
        "ok.png: not a readable checkpoint",
    ),
    "predict-old-format": (
        ["predict", "old-format.pt", "ok.png"],
        1,
        f"old-format.pt: checkpoint format version 0, this pyro_saccade reads {FORMAT_VERSION}",
    ),
    "evaluate-other-config": (
        ["evaluate", "other-config.pt"],
        1,
        "other-config.pt: weights do not match its config (",
    ),
    "posterior-newer-config": (
        ["posterior", "newer-config.pt", "ok.png", "--out", "p.nc"],
        1,
        "newer-config.pt: a model config that this version cannot build (unknown config fields: "
        "wings)",
    ),
    "train-init-corrupted": (
        [*TRAIN, "--init", "garbage.pt", "--out", "r"],
        1,
        "garbage.pt: not a readable checkpoint",
    ),
    # outputs that cannot be written
    "train-unwritable-out": (
        TRAIN + OUT,
        2,
        "Invalid value for '--out': cannot write to blocker/out: blocker is not a directory",
    ),
    "posterior-unwritable-out": (
        ["posterior", CK, "ok.png", "--out", "blocker/p.nc"],
        2,
        "cannot write to blocker/p.nc: blocker is not a directory",
    ),
    "visualize-unwritable-out": (["visualize", CK, "ok.png", *OUT], 2, "cannot write to blocker"),
    "export-unwritable-out": (["data", "export", "--n", "1", *OUT], 2, "cannot write to blocker"),
    "demo-unwritable-out": (["demo", *OUT], 2, "cannot write to blocker"),
    "benchmark-unwritable-out": (["benchmark", *OUT], 2, "cannot write to blocker"),
    # nonsensical options
    "train-zero-epochs": (
        ["train", "--epochs", "0", "--out", "r"],
        2,
        "Invalid value for '--epochs': 0 is not in the range x>=1.",
    ),
    "train-zero-glimpses": (
        ["train", "--glimpses", "0", "--out", "r"],
        2,
        "Invalid value for '--glimpses': 0 is not in the range x>=1.",
    ),
    "train-proxy-not-multiple-of-4": (
        [*TRAIN, "--proxy", "30", "--out", "r"],
        2,
        "proxy must be a positive multiple of 4, got 30",
    ),
    "train-unknown-prior": ([*TRAIN, "--prior", "nope", "--out", "r"], 2, "unknown prior 'nope'"),
    "train-digits-larger-than-canvas": (
        [*TRAIN, "--digit-size", "50", "--out", "r"],
        2,
        "canvas 40x40 is smaller than a digit (50 px)",
    ),
    "predict-negative-samples": (
        ["predict", CK, "ok.png", "--samples", "-1"],
        2,
        "Invalid value for '--samples'",
    ),
    "posterior-zero-samples": (
        ["posterior", CK, "ok.png", "--samples", "0", "--out", "p.nc"],
        2,
        "Invalid value for '--samples'",
    ),
    "evaluate-zero-n": (["evaluate", CK, "--n", "0"], 2, "Invalid value for '--n'"),
    "export-zero-n": (["data", "export", "--n", "0", "--out", "x"], 2, "Invalid value for '--n'"),
    "demo-zero-epochs": (["demo", "--epochs", "0"], 2, "Invalid value for '--epochs'"),
    "benchmark-zero-size": (["benchmark", "--sizes", "0"], 2, "Invalid value for '--sizes'"),
    "predict-unknown-device": (["predict", CK, "ok.png", "--device", "gpu7"], 2, "--device"),
    # runs
    "train-over-an-existing-run": (
        [*TRAIN, "--out", "tiny-run"],
        2,
        "Invalid value for --out: tiny-run holds a run already: continue it with --resume",
    ),
    "train-resume-other-model": (
        ["train", "--resume", "--glimpses", "3", "--out", "tiny-run"],
        2,
        "Invalid value for '--glimpses': the run in tiny-run has glimpses=2; --resume continues it",
    ),
    "train-resume-other-config": (
        ["train", "--resume", "--epochs", "5", "--out", "tiny-run"],
        2,
        "Invalid value for '--epochs': the run in tiny-run has epochs=1; --resume continues it "
        "as it was configured",
    ),
}


@pytest.mark.parametrize(("args", "code", "message"), CASES.values(), ids=CASES.keys())
def test_bad_input_gets_one_line(
    inputs: Path, args: list[str], code: int, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke(inputs, args, monkeypatch)
    assert result.exit_code == code, result.output + result.stderr
    line = error_line(result)
    assert message in line, line


def test_debug_shows_the_traceback(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke(inputs, ["--debug", "predict", "nonexist.pt", "ok.png"], monkeypatch)
    assert isinstance(result.exception, CheckpointError)
    assert str(result.exception).startswith("nonexist.pt: no such checkpoint file")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nonexist.png", "no such file"),
        ("empty.png", "file is empty"),
        ("truncated-ok.png", "truncated or corrupt image"),
        ("text.png", "not an image"),
        ("nan.npy", "contains NaN or infinite values"),
        ("two-channels.npy", "array of shape (2, 40, 40)"),
    ],
)
def test_the_api_raises_image_errors_with_the_same_messages(
    inputs: Path, name: str, message: str
) -> None:
    with pytest.raises(ImageError) as error:
        load_image(inputs / name)
    assert str(error.value).startswith(f"{inputs / name}: {message}")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nonexist.pt", "no such checkpoint file or pretrained model"),
        ("empty.pt", "file is empty"),
        ("garbage.pt", "not a readable checkpoint"),
        ("old-format.pt", "checkpoint format version 0"),
        ("other-config.pt", "weights do not match its config"),
    ],
)
def test_the_api_raises_checkpoint_errors_with_the_same_messages(
    inputs: Path, name: str, message: str
) -> None:
    with pytest.raises(CheckpointError, match=f"^{inputs / name}: {message}"):
        load(inputs / name)


def test_the_api_rejects_images_the_model_cannot_use(inputs: Path) -> None:
    model = load(inputs / CK)
    for images, message in [
        (torch.rand(1, 3, 40, 40), "images [1, 3, 40, 40]: 3 channels, but the model takes 1"),
        (torch.rand(2, 1, 8, 8), "images [2, 1, 8, 8]: 8x8 pixels, smaller than the model's"),
        (torch.full((1, 1, 40, 40), float("nan")), "images contain NaN or infinite values"),
        (torch.rand(1, 40, 40), "expected images [B, C, H, W], got shape [1, 40, 40]"),
    ]:
        with pytest.raises(ValueError, match=f"^{message.replace('[', '.').replace(']', '.')}"):
            infer(model, images)
    with pytest.raises(ValueError, match="^canvas of 12x12 pixels, smaller than"):
        train(model.config, TrainConfig(**{**RUN, "canvas": [12, 12]}), out=inputs / "never")
