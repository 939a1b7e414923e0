"""--threads: the commands that run a model choose torch's number of threads, and waiting threads
sleep rather than spin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pyro_saccade.cli import main
from pyro_saccade.data import save_image

COMMANDS = ["predict", "evaluate", "visualize", "posterior", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_that_runs_a_model_takes_threads(command: str) -> None:
    options = {param.name: param for param in main.commands[command].params}
    assert options["threads"].default == 0


@pytest.fixture
def predict(checkpoint: Path, tmp_path: Path) -> list[str]:
    """``saccade predict`` of a tiny model on one image."""
    save_image(torch.rand(1, 40, 40), tmp_path / "image.png")
    return ["predict", str(checkpoint), str(tmp_path / "image.png")]


def test_threads_sets_torch_threads_unless_zero(
    predict: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    for threads in (["--threads", "2"], [], ["--threads", "0"]):
        result = CliRunner().invoke(main, [*predict, *threads])
        assert result.exit_code == 0, result.output
    assert calls == [2]  # 0, the default, leaves torch's own number


@pytest.mark.parametrize(("given", "used"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_waiting_threads_sleep_unless_told_otherwise(
    predict: list[str], monkeypatch: pytest.MonkeyPatch, given: str | None, used: str
) -> None:
    if given is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", given)
    assert CliRunner().invoke(main, predict).exit_code == 0
    assert os.environ["OMP_WAIT_POLICY"] == used
