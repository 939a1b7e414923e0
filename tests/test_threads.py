"""--threads: the commands that run a model choose torch's number of threads, one by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny import TINY

from pyro_saccade import SaccadeConfig, SaccadeModel
from pyro_saccade.cli import main
from pyro_saccade.data import class_names, save_image
from pyro_saccade.training import TrainConfig, save_checkpoint

COMMANDS = ["predict", "evaluate", "visualize", "posterior", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_that_runs_a_model_takes_threads(command: str) -> None:
    options = {param.name: param for param in main.commands[command].params}
    assert options["threads"].default == 1


def test_threads_sets_torch_threads_unless_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = SaccadeModel(SaccadeConfig(classes=class_names("identify"), **TINY))
    save_checkpoint(tmp_path / "model.pt", model, TrainConfig(canvas=[40, 40]))
    save_image(torch.rand(1, 40, 40), tmp_path / "image.png")
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    for threads in (["--threads", "2"], [], ["--threads", "0"]):
        args = ["predict", str(tmp_path / "model.pt"), str(tmp_path / "image.png"), *threads]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert calls == [2, 1]  # 0 leaves torch's own number
