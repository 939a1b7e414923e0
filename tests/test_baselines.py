"""The resnet18 baselines: tiling, shapes, checkpointing, training and loading like the model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pyro_saccade import load
from pyro_saccade.baselines import FullImageResNet18, TiledResNet18, tile_grid
from pyro_saccade.checkpoint import save_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.prediction import predict
from pyro_saccade.training import evaluate


def test_tiles_cover_a_2528_canvas_with_144() -> None:
    grid = tile_grid(2528, 2528, 224)
    assert len(grid) == 144
    assert len(TiledResNet18(55).tiles(2528, 2528)) == 144
    # 2528 = 11 * 224 + 64: the last row and column are shifted back to end at the edge.
    assert max(grid) == (2304, 2304)
    covered = torch.zeros(2528, 2528, dtype=torch.bool)
    for y, x in grid:
        covered[y : y + 224, x : x + 224] = True
    assert covered.all()


def test_small_images_make_one_tile_of_their_own_size() -> None:
    assert tile_grid(100, 100, 224) == [(0, 0)]
    assert tile_grid(100, 500, 224) == [(0, 0), (0, 224), (0, 276)]


def test_tiled_output_is_the_head_of_summed_tile_features() -> None:
    torch.manual_seed(0)
    model = TiledResNet18(7, tile=32, chunk=2).eval()
    images = torch.rand(2, 1, 50, 75)
    probs = predict(model, images)
    assert probs.shape == (2, 7)
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    grid = model.tiles(50, 75)
    assert len(grid) == 6  # 2 rows x 3 columns, overlapping at the far edges
    with torch.no_grad():
        summed = sum(model.trunk(images[..., y : y + 32, x : x + 32]) for y, x in grid)
        assert torch.allclose(model.features(images), summed, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    images = torch.rand(2, 1, 64, 64)
    grads = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        model = TiledResNet18(5, tile=32, checkpoint=checkpoint, chunk=3)
        model(images).logsumexp(-1).sum().backward()
        grads.append(model.trunk.conv1.weight.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [FullImageResNet18, TiledResNet18])
def test_checkpoint_round_trip(cls: type, tmp_path: object) -> None:
    torch.manual_seed(0)
    model = cls(["a", "b", "c"], task="sum").eval()
    save_checkpoint(tmp_path / "checkpoint.pt", model)
    loaded = load(tmp_path)
    assert type(loaded) is cls
    assert loaded.config == model.config
    images = torch.rand(2, 1, 64, 64)
    assert torch.allclose(predict(loaded, images), predict(model, images))


def test_train_resnet18_through_the_cli(tmp_path: object) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", "resnet18", "--epochs", "1", "--train-size", "32"]
    args += ["--test-size", "16", "--batch-size", "16", "--quiet", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and 0 <= record["test_accuracy"] <= 1
    model = load(out)
    assert isinstance(model, FullImageResNet18)
    assert model.config.classes[:2] == ["0-0", "0-1"]
    from pyro_saccade.data import TwoDigitCluttered

    assert 0 <= evaluate(model, TwoDigitCluttered("identify", 100, 8, split="test")) <= 1
    # A baseline's weights cannot start a saccade model.
    args = ["train", "--init", str(out), "--epochs", "1", "--out", str(tmp_path / "other")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "holds a resnet18 model" in result.output
