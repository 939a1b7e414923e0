"""The example scripts run as documented (tiny budgets), each reading the run of the first."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"


def run(monkeypatch: pytest.MonkeyPatch, script: str, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")


def test_examples_train_evaluate_draw_and_export(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the scripts' default paths are relative: runs/examples/...
    run(monkeypatch, "train_identify.py", "--epochs", "1", "--train-size", "16", "--test-size", "8")
    assert (tmp_path / "runs/examples/identify/checkpoint.pt").is_file()
    run(monkeypatch, "evaluate.py", "--n", "8")
    assert "accuracy" in capsys.readouterr().out
    run(monkeypatch, "visualize.py", "--n", "1", "--samples", "4")
    assert (tmp_path / "runs/examples/pictures/canvas_0.png").is_file()
    run(monkeypatch, "posterior.py", "--n", "1", "--samples", "4")
    assert (tmp_path / "runs/examples/posterior.nc").is_file()
    assert "canvas_0: predicted" in capsys.readouterr().out
