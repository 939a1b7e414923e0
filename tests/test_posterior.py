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

from pyro_saccade.checkpoint import save_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.data import class_names, make_proxy
from pyro_saccade.labels import label_name, parse_label, true_labels
from pyro_saccade.model import SaccadeConfig, SaccadeModel
from pyro_saccade.posterior import WHERE, from_dict, read_posterior, sample_posterior
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


def posterior_of_two(
    checkpoint: Path, canvases: Path, samples: int, out: Path
) -> tuple[object, str]:
    """``saccade posterior`` of two exported canvases: the ArviZ data it wrote, and what it
    printed."""
    images = [str(canvases / "000000.png"), str(canvases / "000001.png")]
    args = ["posterior", str(checkpoint), *images, "--samples", str(samples), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return read_posterior(out), result.output


def test_posterior_command_writes_arviz_data(checkpoint: Path, canvases: Path, tmp_path: Path):
    data, output = posterior_of_two(checkpoint, canvases, 8, tmp_path / "p.nc")
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
    assert "000001.png: predicted" in output and f"true {written[1]}" in output
    assert output.count("glimpse 1: scale") == 2
    # A free model chooses no cell.
    assert not set(WHERE) & {*data.posterior.data_vars, *data.prior.data_vars}


def looking_cells_model() -> SaccadeModel:
    """A small ``where="cells"`` model on 8 x 8 cells whose attention reads h_{t-1} (untrained,
    its recall of h_{t-1} would be zero)."""
    torch.manual_seed(0)
    where = dict(kind="cells", box_min=16, box_max=48)
    config = SaccadeConfig(classes=class_names("identify"), **{**TINY, "proxy": 32, "where": where})
    model = SaccadeModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def cells_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cells") / "checkpoint.pt"
    save_checkpoint(path, looking_cells_model())
    return path


def assert_cell_maps(where: np.ndarray, maps: np.ndarray, reach: int) -> None:
    """Maps [..., T, G, G] of where_t's probabilities for the chosen cells [..., T]: each sums
    to 1 and gives its choice a positive probability; the first is positive everywhere, the
    second 0 exactly on the cells within ``reach`` rows and columns of the first choice."""
    cells = maps.shape[-1]
    flat = maps.reshape(*maps.shape[:-2], -1)
    np.testing.assert_allclose(flat.sum(-1), 1.0, atol=1e-5)
    assert (np.take_along_axis(flat, where[..., None], -1) > 0).all()
    assert (flat[..., 0, :] > 0).all()
    row, col = np.divmod(where[..., 0, None, None], cells)  # [..., 1, 1]
    lines = np.arange(cells)
    read = (np.abs(lines[:, None] - row) <= reach) & (np.abs(lines - col) <= reach)
    np.testing.assert_array_equal(maps[..., 1, :, :] == 0, read)


def test_posterior_command_writes_where_maps_of_a_cells_model(
    cells_checkpoint: Path, canvases: Path, tmp_path: Path
) -> None:
    data, _ = posterior_of_two(cells_checkpoint, canvases, 4, tmp_path / "p.nc")
    cells = 8  # a 32-pixel proxy, 4 of its pixels a cell
    # The cells a look marks as read: those an object of 28 pixels around its aim can reach,
    # ceil(14 * 8 / 100) rows and columns each way on these 100-pixel canvases.
    reach = 2
    for group in (data.posterior, data.prior):
        where, p = group["where"], group["where_p"]
        assert where.dims == ("chain", "draw", "image", "glimpse")
        assert where.shape == (1, 4, 2, 2) and where.dtype.kind == "i"
        assert p.dims == ("chain", "draw", "image", "glimpse", "cell_row", "cell_col")
        assert p.shape == (1, 4, 2, 2, cells, cells)
        assert list(p.coords["image"].values) == ["000000.png", "000001.png"]
        centres = (np.arange(cells) + 0.5) / cells
        np.testing.assert_allclose(p.coords["cell_row"].values, centres)
        np.testing.assert_allclose(p.coords["cell_col"].values, centres)
        assert_cell_maps(where.values, p.values, reach)
    q = data.posterior["where_q"]
    assert q.dims == data.posterior["where_p"].dims
    assert_cell_maps(data.posterior["where"].values, q.values, reach)
    # p and q are one attention: at the same h_{t-1}, the same map.
    np.testing.assert_array_equal(q.values, data.posterior["where_p"].values)
    assert "where_q" not in data.prior


def test_where_is_the_cell_a_glimpse_aims_at_and_where_q_the_guides_attention() -> None:
    model = looking_cells_model()
    images = [torch.rand(1, 96, 96, generator=torch.Generator().manual_seed(n)) for n in (1, 2)]
    images[1] = images[1][..., :64, :64]  # another size, the same aspect
    samples, cells = 6, model.config.cells
    result = sample_posterior(model, images, samples=samples, seed=1)

    for draws in (result.posterior, result.prior):
        row, col = draws.where.div(cells, rounding_mode="floor"), draws.where % cells
        centre = (torch.stack([col, row], -1) + 0.5) / cells * 2 - 1  # normalised (x, y)
        # A glimpse aims at the ink centroid of a window two cells wide around its cell: within
        # 3.5 proxy pixels of the cell's centre, nearer to it than to any other cell's.
        pixel = 2 / model.config.proxy
        assert ((draws.centres - centre).abs() <= 3.5 * pixel + 1e-5).all()
        assert (draws.where[..., 0] != draws.where[..., 1]).all()

    # where_q is the guide's attention: before the first glimpse (h_{-1} = 0), one map an image.
    proxies = make_proxy(images[0][None], model.config.proxy)
    with torch.no_grad():
        trace = poutine.trace(model.guide).get_trace(images[0][None], proxies)
    q = trace.nodes["where_0"]["fn"].probs.view(cells, cells)
    torch.testing.assert_close(result.posterior.where_q[:, 0, 0], q.expand(samples, -1, -1))
    # After it each draw has its own h_{t-1} and its own map.
    later = result.posterior.where_q[:, 0, 1]
    assert not torch.allclose(later[0], later[1])


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


def test_images_of_another_aspect_ratio_have_their_own_grid_of_cells() -> None:
    model = looking_cells_model()  # proxy 32: 8 x 8 cells on a square image
    image = torch.rand(1, 64, 96, generator=torch.Generator().manual_seed(3))
    result = sample_posterior(model, [image], samples=4, seed=1)
    # The proxy keeps the image's 2:3 shape, 32 x 48: 8 x 12 cells.
    assert result.posterior.where_q.shape[-2:] == (8, 12)
    row, col = result.posterior.where.div(12, rounding_mode="floor"), result.posterior.where % 12
    centre = (torch.stack([(col + 0.5) / 12, (row + 0.5) / 8], -1)) * 2 - 1
    pixel = 2 / 32
    assert ((result.posterior.centres - centre).abs() <= 3.5 * pixel + 1e-5).all()
    # With a square image beside it the maps do not stack: they are left out, with a warning.
    square = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(4))
    with pytest.warns(UserWarning, match="different aspect ratios"):
        both = sample_posterior(model, [image, square], samples=2, seed=1)
    assert both.posterior.where_q is None and both.posterior.where.shape == (2, 2, 2)
    assert "where_q" not in both.to_arviz()["posterior"]
