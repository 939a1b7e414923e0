"""Posterior samples of the glimpses as ArviZ data, and ``saccade posterior``."""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from click.testing import CliRunner
from pyro import poutine
from tiny import TINY

from pyro_saccade.cli import main
from pyro_saccade.data import class_names, make_proxy
from pyro_saccade.labels import label_name, parse_label, true_labels
from pyro_saccade.model import SaccadeConfig, SaccadeModel
from pyro_saccade.posterior import from_dict, read_posterior, sample_posterior
from pyro_saccade.priors import FixedGaussianPrior
from pyro_saccade.training import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    config = SaccadeConfig(classes=class_names("identify"), **TINY)
    train_config = TrainConfig(epochs=1, train_size=64, test_size=16, batch_size=32)
    train(config, train_config, out=out, progress=False)
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def canvases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("canvases")
    result = CliRunner().invoke(main, ["data", "export", "--n", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_posterior_command_writes_arviz_data(checkpoint: Path, canvases: Path, tmp_path: Path):
    images = [str(canvases / "000000.png"), str(canvases / "000001.png")]
    out = tmp_path / "p.nc"
    args = ["posterior", str(checkpoint), *images, "--samples", "8", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output

    data = read_posterior(out)
    z = data.posterior["z"]
    assert z.dims == ("chain", "draw", "image", "glimpse", "coord")
    assert z.shape == (1, 8, 2, 2, 3)
    assert list(z.coords["coord"].values) == ["scale", "x", "y"]
    assert list(z.coords["glimpse"].values) == [0, 1]
    assert list(z.coords["image"].values) == ["000000.png", "000001.png"]
    assert data.prior["z"].shape == z.shape
    assert data.posterior["box"].dims[-1] == "corner"
    probs = data.posterior_predictive["probs"]
    assert list(probs.coords["class"].values) == class_names("identify")
    np.testing.assert_allclose(probs.sum("class").values, 1.0, atol=1e-5)
    # The true labels come from the labels.csv that `saccade data export` wrote beside the images.
    with open(canvases / "labels.csv") as f:
        written = [row["label"] for row in csv.DictReader(f)]
    observed = [class_names("identify")[i] for i in data.observed_data["label"].values]
    assert observed == written
    assert "000001.png: predicted" in result.output and f"true {written[1]}" in result.output
    assert result.output.count("glimpse 1: scale") == 2


def test_posterior_draws_come_from_the_guide_and_prior_draws_from_the_prior() -> None:
    pyro.set_rng_seed(0)
    prior = FixedGaussianPrior(32, loc=(1.0, -0.5, 0.5), scale=(0.2, 0.2, 0.2))
    model = SaccadeModel(SaccadeConfig(**TINY), prior=prior).eval()
    image = torch.rand(1, 40, 60)
    samples = 100
    result = sample_posterior(model, [image], samples=samples)

    # Before the first glimpse the guide's q(z_0 | c) is one fixed Normal: its draws must match.
    proxies = make_proxy(image[None], 16)
    with torch.no_grad():
        q = poutine.trace(model.guide).get_trace(image[None], proxies).nodes["z_0"]["fn"]
    draws = result.posterior.z[:, 0, 0]
    tolerance = 4 * q.stddev[0] / samples**0.5
    assert ((draws.mean(0) - q.mean[0]).abs() < tolerance).all()
    # Prior draws follow the prior at every step, whatever the glimpses before saw.
    prior_draws = result.prior.z[:, 0]  # [S, T, 3]
    tolerance = 4 * 0.2 / samples**0.5
    assert ((prior_draws.mean(0) - torch.tensor([1.0, -0.5, 0.5])).abs() < tolerance).all()
    assert torch.allclose(prior_draws.std(0), torch.full((2, 3), 0.2), rtol=0.25)


def test_images_of_any_size_and_multilabel_models() -> None:
    pyro.set_rng_seed(0)
    config = SaccadeConfig(classes=class_names("mark"), task="mark", **TINY)
    model = SaccadeModel(config).eval()
    sizes = [(40, 60), (40, 60), (90, 30)]
    images = [torch.rand(1, h, w) for h, w in sizes]
    labels = torch.stack([parse_label(name, config.classes, True) for name in ["3+7", "1", "2+2"]])
    result = sample_posterior(model, images, samples=4, names=["a", "b", "c"], labels=labels)

    boxes = result.boxes(result.posterior)  # [S, N, T, 4] pixels
    crops = result.crops(result.posterior)  # [S, N, T, 3] (scale, x, y)
    for n, (height, width) in enumerate(sizes):
        x0, y0, x1, y1 = boxes[:, n].unbind(-1)
        assert (x0 >= -1e-3).all() and (x1 <= width + 1e-3).all()
        assert (y0 >= -1e-3).all() and (y1 <= height + 1e-3).all()
        # Crops are square in pixels, scale is their side over the shorter image side.
        torch.testing.assert_close(x1 - x0, crops[:, n, :, 0] * min(height, width))
        torch.testing.assert_close(y1 - y0, x1 - x0)
        torch.testing.assert_close((x0 + x1) / 2, crops[:, n, :, 1] * width)

    data = result.to_arviz()
    assert data.posterior_predictive["label"].dims == ("chain", "draw", "image", "class")
    assert data.observed_data["label"].values.tolist()[0] == labels[0].tolist()
    assert [label_name(label, config.classes, True) for label in labels] == ["3+7", "1", "2"]


def test_labels_beside_images(tmp_path: Path) -> None:
    classes = class_names("identify")
    (tmp_path / "a.png").touch()
    (tmp_path / "b.png").touch()
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    assert true_labels(paths, classes, False) is None  # no labels.csv
    (tmp_path / "labels.csv").write_text("file,label\na.png,3-7\nb.png,0-0\n")
    assert true_labels(paths, classes, False).tolist() == [classes.index("3-7"), 0]
    (tmp_path / "labels.csv").write_text("file,label\na.png,3-7\n")
    assert true_labels(paths, classes, False) is None  # b.png's label unknown
    (tmp_path / "labels.csv").write_text("file,label\na.png,7-3\nb.png,0-0\n")
    with pytest.raises(ValueError, match=r"labels.csv, a.png: label '7-3'"):
        true_labels(paths, classes, False)


def test_arviz_1_gets_one_nested_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    """ArviZ 1.x converts {group: {variable: array}} with arviz_base.from_dict to a DataTree."""
    calls = []
    fake = types.ModuleType("arviz_base")
    fake.from_dict = lambda data, **kwargs: calls.append((data, kwargs)) or "datatree"
    monkeypatch.setitem(sys.modules, "arviz_base", fake)
    groups = {"posterior": {"z": np.zeros((1, 4, 3))}}
    dims, coords = {"z": ["coord"]}, {"coord": ["scale", "x", "y"]}
    assert from_dict(groups, dims, coords) == "datatree"
    assert calls == [(groups, {"dims": dims, "coords": coords})]


def test_posterior_command_errors(checkpoint: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "p.nc")
    missing = str(tmp_path / "missing.png")
    result = CliRunner().invoke(main, ["posterior", str(checkpoint), missing, "--out", out])
    assert result.exit_code == 1 and "missing.png: no such file" in result.output
    result = CliRunner().invoke(main, ["posterior", str(tmp_path), missing, "--out", out])
    assert result.exit_code == 1 and "no such checkpoint" in result.output
