"""The command line holds no copy of a library default: its options read them from
SaccadeConfig, TrainConfig and the API functions, --set reads KEY=VALUE settings, and --resume
compares the fields they set."""

from __future__ import annotations

import subprocess
import sys
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
from pyro_saccade.settings import parse_value


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
    args = ["--canvas", "30x50", "--task", "sum", "--digits", "bundled+5k"]
    with parsed([*args, "--out", str(tmp_path / "run")]) as ctx:
        training, model = given_fields(ctx, TRAINING), given_fields(ctx, MODEL)
    assert training["canvas"] == [30, 50] and training["source"] == "bundled+5k"
    assert model["task"] == "sum"


def test_set_reads_values_and_dotted_keys_as_sections(tmp_path: Path) -> None:
    settings = ["where=cells", "where.box_min=24", "where.learn=false", "evidence=crops"]
    settings += ["posterior_std_max=none", 'prior_args={"spread": 0.2}', "glimpses=3"]
    args = [word for setting in settings for word in ("--set", setting)]
    with parsed([*args, "--out", str(tmp_path / "run")]) as ctx:
        assert ctx.params["settings"] == {
            "where": {"kind": "cells", "box_min": 24, "learn": False},  # text names the kind
            "evidence": "crops",
            "posterior_std_max": None,
            "prior_args": {"spread": 0.2},
            "glimpses": 3,
        }
    assert parse_value("0.5,1,1") == [0.5, 1, 1] and parse_value("1e-4") == 1e-4
    assert parse_value("True") is True and parse_value('"7"') == "7"
    assert parse_value("[1, 2]") == [1, 2] and parse_value("1,x") == "1,x"
    both = ["--set", "crop=16", "--set", "crop.side=24", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, ["train", *both])
    assert result.exit_code == 2, result.output
    assert "crop is given both the value 16 and fields (crop.side)" in result.output


def test_help_imports_no_torch() -> None:
    # The defaults train -h shows come from SaccadeConfig and TrainConfig, whose modules import
    # no torch; benchmark --help needs neither torch nor the benchmark's code.
    for words in (["train", "-h"], ["benchmark", "--help"]):
        code = (
            "import sys\nfrom pyro_saccade.cli import main\n"
            f"try:\n    main({words!r})\nexcept SystemExit:\n    pass\n"
            "sys.exit(3 if 'torch' in sys.modules else 0)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0 and "Usage:" in done.stdout, (words, done.stderr)


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
TINY_RUN += ["--set", "where.scale_min=0.4", "--set", "where.scale_max=0.9"]
TINY_RUN += ["--prior-arg", "spread=0.2", "--prior", "centre"]


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


RUN_WHERE = "where={'kind': 'free', 'scale_min': 0.4, 'scale_max': 0.9}"


@pytest.mark.parametrize(
    ("args", "was"),
    [
        (["--set", "where.scale_min=0.3"], "where.scale_min=0.4"),
        (["--set", "where=cells", "--set", "where.learn=false"], "where.kind='free'"),
        (["--set", "where=cells"], RUN_WHERE),
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
