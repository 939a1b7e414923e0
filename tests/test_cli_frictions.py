"""Small frictions of the command line: demo and demo --train side by side, one meaning of
--samples, predicted boxes inside the image, and Ctrl-C reported as an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pyro_saccade.cli import main
from pyro_saccade.data import save_image

# -- saccade demo, then saccade demo --train --------------------------------------------------


@pytest.fixture
def fake_demo(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The demo and its training without models: each writes what the real one writes, and
    the directories they were given are recorded."""
    from pyro_saccade.cli import demo_run

    given: list[Path] = []

    def run_demo(n: int, seed: int, out: Path, echo: object) -> list:
        given.append(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "identify-100_glimpses.png").write_text("demo picture")
        return []

    def run_training(
        epochs: int, train_size: int, seed: int, out: Path, progress: bool, echo: object
    ) -> float:
        given.append(out)
        # train refuses a directory that holds a run
        assert not (out / "checkpoint.pt").exists()
        out.mkdir(parents=True, exist_ok=True)
        for name in ("checkpoint.pt", "config.json", "metrics.jsonl"):
            (out / name).write_text("run")
        (out / "glimpses.png").write_text("trained picture")
        return 0.1

    monkeypatch.setattr(demo_run, "run_demo", run_demo)
    monkeypatch.setattr(demo_run, "run_training", run_training)
    return given


def test_demo_then_demo_train_in_the_readmes_order(tmp_path: Path, fake_demo: list[Path]):
    out = tmp_path / "demo"
    first = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, ["demo", "--train", "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert fake_demo == [out, out / "train"]  # the run has a directory of its own
    assert (out / "identify-100_glimpses.png").read_text() == "demo picture"
    assert sorted(p.name for p in out.iterdir()) == ["identify-100_glimpses.png", "train"]
    assert (out / "train/glimpses.png").read_text() == "trained picture"


def test_demo_train_then_demo_and_each_refuses_only_its_own_files(
    tmp_path: Path, fake_demo: list[Path]
) -> None:
    out = tmp_path / "demo"
    assert CliRunner().invoke(main, ["demo", "--train", "--out", str(out)]).exit_code == 0
    shown = CliRunner().invoke(main, ["demo", "--out", str(out)])  # train/ is not its own
    assert shown.exit_code == 0, shown.output
    again = CliRunner().invoke(main, ["demo", "--train", "--out", str(out)])
    assert again.exit_code == 2 and f"{out / 'train'} holds files" in again.output
    (out / "train/notes.txt").write_text("mine")
    forced = CliRunner().invoke(main, ["demo", "--train", "--force", "--out", str(out)])
    assert forced.exit_code == 0, forced.output  # the old run's files went first
    assert (out / "train/notes.txt").read_text() == "mine"  # nothing else did
    assert (out / "identify-100_glimpses.png").read_text() == "demo picture"
    refused = CliRunner().invoke(main, ["demo", "--out", str(out)])
    assert refused.exit_code == 2 and "--force" in refused.output


# -- --samples: draws averaged everywhere --------------------------------------------------------


def canvas(tmp_path: Path) -> Path:
    from pyro_saccade.data import TwoDigitCluttered

    # a canvas identify-100 is unsure of, where averaging draws moves the probability
    image, _ = TwoDigitCluttered("identify", 100, 1, split="test", seed=8)[0]
    path = tmp_path / "canvas.png"
    save_image(image, path)
    return path


def test_visualize_samples_are_predicts_and_its_cloud_has_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyro_saccade.viz as viz

    image = canvas(tmp_path)
    titles: list[str] = []
    drawn = viz.plot_glimpses

    def plot_glimpses(*args: object, **kwargs: object) -> object:
        titles.append(args[4])
        return drawn(*args, **kwargs)

    monkeypatch.setattr(viz, "plot_glimpses", plot_glimpses)
    for samples in ("0", "4"):
        args = ["identify-100", str(image), "--samples", samples, "--seed", "2"]
        predicted = CliRunner().invoke(main, ["predict", *args, "--json"])
        assert predicted.exit_code == 0, predicted.output
        probability = json.loads(predicted.output.splitlines()[-1])["probability"]
        out = tmp_path / f"pictures{samples}"
        shown = CliRunner().invoke(main, ["visualize", *args, "--cloud", "3", "--out", str(out)])
        assert shown.exit_code == 0, shown.output
        assert f"(p={probability:.3f})" in titles[-1]
    assert titles[0] != titles[1]  # the draws averaged changed the probability shown


def test_samples_means_draws_averaged_in_every_command() -> None:
    for words in (["predict"], ["visualize"], ["evaluate"]):
        help_text = CliRunner().invoke(main, [*words, "-h"]).output
        samples = help_text[help_text.index("--samples") :].split("--", 2)[1]
        assert "averaged" in " ".join(samples.split()), words
    assert "--cloud" in CliRunner().invoke(main, ["visualize", "-h"]).output


# -- predict --json: boxes inside the image ------------------------------------------------------


def test_predicted_boxes_are_clipped_to_the_image_and_say_so(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyro_saccade.prediction as prediction

    # A cells model's box may reach past the border (it reads zeros there).
    reaching = torch.tensor([[-15.4, 3.0, 20.0, 38.4], [5.0, 6.0, 25.0, 26.0]])
    monkeypatch.setattr(prediction, "boxes", lambda *args: reaching[None, None])
    image = tmp_path / "a.png"
    save_image(torch.rand(1, 40, 40), image)
    result = CliRunner().invoke(main, ["predict", str(checkpoint), str(image), "--json"])
    assert result.exit_code == 0, result.output
    glimpses = json.loads(result.output.splitlines()[-1])["glimpses"]
    assert [g["box"] for g in glimpses] == [[0.0, 3.0, 20.0, 38.4], [5.0, 6.0, 25.0, 26.0]]
    assert [g["clipped"] for g in glimpses] == [True, False]
    assert (glimpses[0]["x"], glimpses[0]["y"]) == (2.3, 20.7)  # where the model aimed


# -- Ctrl-C ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interrupt", "line"),
    [
        (KeyboardInterrupt(), "Interrupted"),
        (
            KeyboardInterrupt("interrupted; checkpoint saved in runs/x"),
            "Interrupted; checkpoint saved in runs/x",
        ),
    ],
)
def test_ctrl_c_is_an_interruption_not_an_error(
    tmp_path: Path,
    checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    interrupt: KeyboardInterrupt,
    line: str,
) -> None:
    import pyro_saccade.cli.predict as predict

    def interrupted(*args: object, **kwargs: object) -> None:
        raise interrupt

    monkeypatch.setattr(predict, "_saccade_model", interrupted)
    image = tmp_path / "a.png"
    save_image(torch.rand(1, 40, 40), image)
    result = CliRunner().invoke(main, ["predict", str(checkpoint), str(image)])
    assert result.exit_code == 130
    assert result.output.splitlines() == [line]


def test_the_demo_table_keeps_its_columns_for_long_model_names() -> None:
    from pyro_saccade.cli.demo_run import Shown, table

    def shown(name: str) -> Shown:
        return Shown(name, "majority", (1500, 1500), 20, 0.9, 0.1, 0.1, 1.2, Path("p.png"))

    lines = table([shown("short"), shown("a-model-name-longer-than-twenty")])
    assert len({line.index(" majority") for line in lines[1:]}) == 1
    assert lines[0].index("task") == lines[1].index("majority")
