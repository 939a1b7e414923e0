"""Recipes: one command makes a model by its stages, resumable, and records how it was made."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pyro_saccade.checkpoint import load, read_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.recipes import load_recipe, recipe_for, recipe_names, starting_model

TINY_RECIPE = """
description = "a tiny model in two stages"
task = "identify"

[data]
canvas = [40, 40]
train_size = 16
test_size = 8
batch_size = 8

[model]
glimpses = 2
hidden = 32
crop = 16
proxy = 16
crop_width = 8
crop_features = 16
proxy_width = 8
proxy_features = 16
z_features = 8

[[stages]]
name = "first"
epochs = 1
data = { lr = 1e-3, seed = 0 }

[[stages]]
name = "second"
epochs = 1
data = { lr = 3e-4, seed = 1 }
model = { kl_weight = 0.01 }

[export]
predict_samples = 2

[calibrate]
n = 10
seed = 10
"""


def make(recipe: Path, out: Path, *more: str) -> str:
    result = CliRunner().invoke(
        main, ["train", "--recipe", str(recipe), "--out", str(out), "--quiet", *more]
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny recipe file and the run it made."""
    root = tmp_path_factory.mktemp("recipe")
    recipe = root / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    make(recipe, root / "run")
    return recipe, root / "run"


def test_a_recipe_runs_its_stages_and_exports_the_model(tiny: tuple[Path, Path]) -> None:
    recipe, run = tiny
    for stage in ("first", "second"):
        lines = (run / "stages" / stage / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1
    model = load(run)
    # The second stage's model setting and the export's prediction setting, calibrated.
    assert model.config.kl_weight == 0.01 and model.config.predict_samples == 2
    assert model.config.temperature != 1.0 and model.familiar is not None
    assert model.config.proxy_for == 40  # the canvas side its proxy side is for
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "tiny"
    assert config["command"] == f"saccade train --recipe {recipe} --out {run}"
    made_by = json.loads(read_checkpoint(run)["made_by"])
    assert made_by["recipe"] == "tiny"


def test_a_recipe_run_resumes_where_it_stopped(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, run = tiny
    again = tmp_path / "run"
    shutil.copytree(run, again)
    # As if stopped after the first stage: the second and the export are made again, alike.
    shutil.rmtree(again / "stages" / "second")
    (again / "checkpoint.pt").unlink()
    first = (again / "stages" / "first" / "checkpoint.pt").stat().st_mtime_ns
    output = make(recipe, again, "--resume")
    assert (again / "stages" / "first" / "checkpoint.pt").stat().st_mtime_ns == first
    made, remade = load(run).state_dict(), load(again).state_dict()
    assert all(torch.equal(made[key], remade[key]) for key in made)
    assert "checkpoint:" in output
    # A run in --out is not overwritten without --resume.
    result = CliRunner().invoke(main, ["train", "--recipe", str(recipe), "--out", str(again)])
    assert result.exit_code != 0 and "--resume" in result.output


def test_recipe_options_and_errors(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, _ = tiny
    runner = CliRunner()
    args = ["train", "--recipe", str(recipe), "--epochs", "3", "--out", str(tmp_path / "a")]
    result = runner.invoke(main, args)
    assert (
        result.exit_code != 0 and "--epochs" in result.output and "copy the recipe" in result.output
    )
    result = runner.invoke(main, ["train", "--recipe", "nowhere", "--out", str(tmp_path / "b")])
    assert result.exit_code != 0 and "megapixel-max" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_RECIPE.replace("train_size", "canvases_per_epoch"))
    result = runner.invoke(main, ["train", "--recipe", str(bad), "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "bad.toml" in result.output
    assert "canvases_per_epoch" in result.output


def test_shipped_recipes_read_and_the_task_picks_its_recipe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert {"megapixel-majority", "megapixel-max", "megapixel-top", "megapixel-multi"} <= set(
        recipe_names()
    )
    for name in recipe_names():
        recipe = load_recipe(name)
        assert recipe.task and recipe.stages and recipe.description
    for task in ("majority", "max", "top", "multi"):
        assert recipe_for(task, [1500, 1500]) == f"megapixel-{task}"
    assert recipe_for("max", [1000, 1000]) is None
    assert recipe_for("majority", [1500, 1500], "clutter") == "megapixel-majority-clutter"
    made = []
    monkeypatch.setattr(
        "pyro_saccade.recipes.run_recipe", lambda name, out, **kwargs: made.append(name)
    )
    result = CliRunner().invoke(
        main, ["train", "--task", "max", "--canvas", "1500", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert made == ["megapixel-max"] and "recipe megapixel-max" in result.output


def test_a_recipe_starts_from_a_stage_of_another_run(tiny: tuple[Path, Path]) -> None:
    recipe, run = tiny
    later = recipe.parent / "later.toml"
    later.write_text(f'start = "{run.name}:first"\n' + TINY_RECIPE)
    start = starting_model(load_recipe(later), recipe.parent / "later", False, None)
    first = load(run / "stages" / "first").state_dict()
    assert all(torch.equal(first[key], value) for key, value in start.state_dict().items())
    later.write_text(f'start = "{run.name}:third"\n' + TINY_RECIPE)
    with pytest.raises(ValueError, match="no stage 'third'"):
        starting_model(load_recipe(later), recipe.parent / "later", False, None)
