"""The command line's conventions (-h, --debug anywhere, CHECKPOINT explained, every option
described, one default seed, no silent overwrite) and the API's labels and unlike-input warning."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tiny import TINY

from pyro_saccade import SaccadeConfig, SaccadeModel, load
from pyro_saccade.checkpoint import pretrained_names
from pyro_saccade.cli import PRETRAINED_NAMES, _unique_stems, main
from pyro_saccade.data import class_names
from pyro_saccade.prediction import labels, predict


def commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> dict:
    """Every command of the CLI by its words, e.g. ("data", "export")."""
    found = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(commands(command, (*prefix, name)))
        else:
            found[(*prefix, name)] = command
    return found


def gray(path: Path, height: int = 40, width: int = 40, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("words", [[], ["data"], ["data", "export"], ["predict"], ["demo"]])
def test_short_help_option_everywhere(words: list[str]) -> None:
    result = CliRunner().invoke(main, [*words, "-h"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_debug_is_accepted_after_the_subcommand() -> None:
    quiet = CliRunner().invoke(main, ["evaluate", "nonexist.pt"])
    assert quiet.exit_code == 1 and "Error: nonexist.pt: no such" in quiet.output
    for args in (["--debug", "evaluate", "nonexist.pt"], ["evaluate", "nonexist.pt", "--debug"]):
        loud = CliRunner().invoke(main, args)
        assert loud.exit_code == 1 and "no such" in str(loud.exception)  # raised, not printed
        assert "Error:" not in loud.output


def test_every_option_is_described_and_every_seed_defaults_to_zero() -> None:
    for words, command in commands().items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"saccade {' '.join(words)} {param.opts[0]} has no help"
                if param.name == "seed":
                    assert param.get_default(click.Context(command)) == 0, words


def test_checkpoint_help_names_the_pretrained_models() -> None:
    assert PRETRAINED_NAMES == pretrained_names()
    for words, command in commands().items():
        if any(param.name == "checkpoint" for param in command.params if param.required):
            result = CliRunner().invoke(main, [*words, "--help"])
            # Click may wrap a line after a name's hyphen.
            text = " ".join(re.sub(r"-\n\s*", "-", result.output).split())
            assert "a checkpoint file, a run directory" in text, words
            assert all(name in text for name in PRETRAINED_NAMES), words


def test_export_writes_held_out_canvases_by_default() -> None:
    export = commands()[("data", "export")]
    assert next(p for p in export.params if p.name == "split").default == "test"


def test_unique_stems_tell_same_named_images_apart() -> None:
    paths = (Path("a/x.png"), Path("b/x.png"), Path("c/y.png"), Path("a/x.png"))
    assert _unique_stems(paths) == ["a_x", "b_x", "y", "a_x-2"]
    assert _unique_stems((Path("d/x.png"), Path("d/x.jpg"))) == ["x", "x-2"]


def test_visualize_writes_one_picture_per_image(tmp_path: Path, checkpoint: Path) -> None:
    images = [gray(tmp_path / "a/x.png"), gray(tmp_path / "b/x.png")]
    args = ["visualize", str(checkpoint), *map(str, images), "--samples", "0"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_x_glimpses.png",
        "b_x_glimpses.png",
    ]


def test_demo_refuses_to_overwrite_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo/keep.txt").write_text("mine")
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 2 and "--force" in result.output
    assert (tmp_path / "demo/keep.txt").read_text() == "mine"
    (tmp_path / "demo/train").mkdir()
    (tmp_path / "demo/train/checkpoint.pt").write_text("an old run")
    monkeypatch.setattr("pyro_saccade.cli.demo_run.pretrained_names", lambda: [])
    forced = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), "--force"])
    assert forced.exit_code == 0, forced.output
    # The demo overwrites its pictures only: the run of demo --train (OUT/train) stays, and so
    # does anything else.
    assert (tmp_path / "demo/train/checkpoint.pt").read_text() == "an old run"
    assert (tmp_path / "demo/keep.txt").read_text() == "mine"


def test_labels_name_the_predicted_classes() -> None:
    identify = SaccadeModel(SaccadeConfig(classes=class_names("identify"), **TINY))
    probs = torch.zeros(2, len(class_names("identify")))
    probs[0, 3], probs[1, 0] = 1.0, 1.0
    assert labels(identify, probs) == [class_names("identify")[3], class_names("identify")[0]]
    assert labels(identify, probs[0]) == [class_names("identify")[3]]
    mark = SaccadeModel(SaccadeConfig(classes=class_names("mark"), task="mark", **TINY))
    marks = torch.tensor([[0.9, 0.1, 0.0, 0.7, 0, 0, 0, 0, 0, 0.2]])
    assert labels(mark, marks) == ["0+3"]


def test_inputs_unlike_the_training_canvases_warn(tmp_path: Path, checkpoint: Path) -> None:
    model = load(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(model, torch.rand(1, 1, 40, 40))  # as trained: silent
        predict(model, torch.rand(1, 1, 60, 50))  # near it: silent
    for shape, words in [((1, 1, 40, 120), "40x120"), ((1, 1, 100, 100), "100x100")]:
        with pytest.warns(UserWarning, match=f"a {words} image for a model trained on 40x40"):
            predict(model, torch.rand(*shape))
    colour = gray(tmp_path / "colour.png", channels=3)
    result = CliRunner().invoke(main, ["predict", str(checkpoint), str(colour)])
    warning = "Warning: unlike the training images: a colour image for a model trained on gray"
    assert result.exit_code == 0 and warning in result.output
    wide = gray(tmp_path / "wide.png", 40, 120)
    args = [
        "posterior",
        str(checkpoint),
        str(wide),
        "--samples",
        "2",
        "--out",
        str(tmp_path / "p.nc"),
    ]
    result = CliRunner().invoke(main, args)
    warning = "Warning: unlike the training images: a 40x120 image for a model trained on 40x40"
    assert result.exit_code == 0 and warning in result.output


def test_demo_shows_a_shipped_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyro_saccade.cli import demo_run

    monkeypatch.setattr(demo_run, "pretrained_names", lambda: ["identify-100"])
    result = CliRunner().invoke(main, ["demo", "--n", "4", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("identify-100 "))
    assert "100x100" in row and row.count(" ms") == 2  # saccade and tiled resnet18 times
    assert (tmp_path / "demo/identify-100_glimpses.png").is_file()
