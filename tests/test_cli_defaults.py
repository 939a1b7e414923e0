"""The command line holds no copy of a library default: its options read them from
SaccadeConfig, TrainConfig and the API functions, and --resume compares the fields they set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pyro_saccade import SaccadeConfig, TrainConfig
from pyro_saccade.cli import main
from pyro_saccade.cli.params import (
    MODEL,
    TRAINING,
    CanvasType,
    canvas_text,
    given_fields,
    library_option,
)


def parsed(args: list[str]) -> click.Context:
    """The context of ``saccade train ARGS``, as it is when the command runs."""
    saccade = click.Context(main, info_name="saccade", **main.context_settings)
    return main.commands["train"].make_context("train", args, parent=saccade)


def test_train_without_options_builds_the_dataclasses_defaults(tmp_path: Path) -> None:
    with parsed(["--out", str(tmp_path / "run")]) as ctx:
        assert TrainConfig(**given_fields(ctx, TRAINING)) == TrainConfig()
        assert SaccadeConfig(**given_fields(ctx, MODEL)) == SaccadeConfig()
    text = " ".join(CliRunner().invoke(main, ["train", "-h"]).output.split())
    assert f"H or HxW pixels. [default: {canvas_text(TrainConfig().canvas)}]" in text


def test_train_options_set_the_fields_they_name(tmp_path: Path) -> None:
    args = ["--canvas", "30x50", "--scale-range", "0.2", "0.6", "--digits", "bundled+5k"]
    with parsed([*args, "--out", str(tmp_path / "run")]) as ctx:
        training, model = given_fields(ctx, TRAINING), given_fields(ctx, MODEL)
    assert training["canvas"] == [30, 50] and training["source"] == "bundled+5k"
    assert (model["scale_min"], model["scale_max"]) == (0.2, 0.6)


def test_a_library_option_shows_and_takes_a_field_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canvas = TrainConfig.__dataclass_fields__["canvas"]
    monkeypatch.setattr(canvas, "default_factory", lambda: [300, 500])

    @click.command()
    @library_option(TRAINING, "--canvas", type=CanvasType(), form=canvas_text, help="Size.")
    def command(canvas: tuple[int, int]) -> None:
        click.echo(f"{canvas}")

    assert "[default: 300x500]" in CliRunner().invoke(command, ["--help"]).output
    assert CliRunner().invoke(command, []).output == "(300, 500)\n"


def test_a_library_option_shows_and_takes_a_function_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def sample_posterior(model: object, images: object, samples: int = 9) -> None:
        """A stand-in with another default."""

    monkeypatch.setattr("pyro_saccade.posterior.sample_posterior", sample_posterior)

    @click.command()
    @library_option("posterior:sample_posterior", "--samples", type=int, help="Draws.")
    def command(samples: int) -> None:
        click.echo(f"{samples}")

    assert "[default: 9]" in CliRunner().invoke(command, ["--help"]).output
    assert CliRunner().invoke(command, []).output == "9\n"


def test_a_library_option_has_no_default_of_its_own() -> None:
    with pytest.raises(TypeError, match="TrainConfig"):
        library_option(TRAINING, "--epochs", default=3, help="Passes.")(lambda epochs: None)


TINY_RUN = ["train", "--canvas", "40", "--crop", "16", "--proxy", "16", "--glimpses", "1"]
TINY_RUN += ["--epochs", "1", "--train-size", "8", "--test-size", "4", "--batch-size", "4"]
TINY_RUN += ["--scale-range", "0.4", "0.9", "--prior-arg", "spread=0.2", "--prior", "centre"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained from the command line."""
    out = tmp_path_factory.mktemp("runs") / "run"
    result = CliRunner().invoke(main, [*TINY_RUN, "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_resume_takes_the_runs_own_settings_again(run: Path) -> None:
    again = [*TINY_RUN, "--digits", "bundled", "--set", "crop=16", "--resume", "--quiet"]
    result = CliRunner().invoke(main, [*again, "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "nothing left to train" in result.output


def test_resume_continues_a_run_saved_with_removed_fields(run: Path, tmp_path: Path) -> None:
    from pyro_saccade.checkpoint import atomic_save, read_checkpoint

    payload = read_checkpoint(run)
    config = {**json.loads(payload["config"]), "pair_evidence": False, "later_scale_max": None}
    trained = {**json.loads(payload["train_config"]), "ema": 0.0}

    def resume(train_config: dict) -> object:
        old = tmp_path / f"ema-{train_config['ema']}"
        shutil.copytree(run, old)
        configs = {"config": json.dumps(config), "train_config": json.dumps(train_config)}
        atomic_save({**payload, **configs}, old / "checkpoint.pt")
        return CliRunner().invoke(main, [*TINY_RUN, "--resume", "--quiet", "--out", str(old)])

    result = resume(trained)
    assert result.exit_code == 0, result.output
    assert "nothing left to train" in result.output
    result = resume({**trained, "ema": 0.999})
    assert result.exit_code == 1
    assert "ema=0.999: this version of pyro_saccade no longer has the ema option" in result.output


@pytest.mark.parametrize(
    ("args", "was"),
    [
        (["--scale-range", "0.3", "0.9"], "scale_range=[0.4, 0.9]"),
        (["--canvas", "50"], "canvas=[40, 40]"),
        (["--digits", "bundled+5k"], "source='bundled'"),
        (["--prior-arg", "spread=0.3"], "prior_args={'spread': 0.2}"),
        (["--set", "crop=20"], "crop=16"),
        (["--set", "nonsense=1"], "nonsense=None"),
    ],
)
def test_resume_refuses_other_settings_naming_the_runs(
    run: Path, args: list[str], was: str
) -> None:
    result = CliRunner().invoke(main, ["train", *args, "--resume", "--out", str(run)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"the run in {run} has {was}; --resume continues it as it was configured" in text
