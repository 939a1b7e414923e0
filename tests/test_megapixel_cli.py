"""saccade data export for Megapixel MNIST."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from click.testing import CliRunner
from PIL import Image

from pyro_saccade.cli import main
from pyro_saccade.data import MegapixelMNIST


def test_data_export_writes_megapixel_canvases(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "max"
    args = ["data", "export", "--task", "max", "--canvas", "150x210", "--n", "3"]
    result = runner.invoke(main, [*args, "--noise", "5", "--split", "test", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = MegapixelMNIST("max", canvas=(150, 210), n=3, noise=5, split="test")
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["file"] for row in rows] == [f"{i:06d}.png" for i in range(3)]
    assert [row["label"] for row in rows] == [data.describe(i)["label"] for i in range(3)]
    for i, row in enumerate(rows):
        with Image.open(out / row["file"]) as png:
            assert png.size == (210, 150) and png.mode == "L"
            pixels = torch.tensor(list(png.getdata()), dtype=torch.float32).view(150, 210)
        assert torch.equal(pixels, (data[i][0][0] * 255).round())
    # --dataset megapixel alone means the majority task on 1500^2 canvases.
    out = tmp_path / "majority"
    result = runner.invoke(
        main, ["data", "export", "--dataset", "megapixel", "--n", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with Image.open(out / "000000.png") as png:
        assert png.size == (1500, 1500)
    with open(out / "labels.csv", newline="") as f:
        expected = MegapixelMNIST(n=1, split="test").describe(0)["label"]
        assert next(csv.DictReader(f))["label"] == expected


def test_data_export_rejects_options_of_the_other_dataset(tmp_path: Path) -> None:
    runner = CliRunner()
    export = ["data", "export", "--n", "1", "--out", str(tmp_path)]
    wrong_task = runner.invoke(main, [*export, "--dataset", "megapixel", "--task", "sum"])
    assert wrong_task.exit_code == 2 and "not a megapixel task" in wrong_task.output
    wrong_task = runner.invoke(main, [*export, "--dataset", "cluttered", "--task", "top"])
    assert wrong_task.exit_code == 2 and "not a cluttered task" in wrong_task.output
    noise = runner.invoke(main, [*export, "--noise", "3"])
    assert noise.exit_code == 2 and "--noise" in noise.output
    fragments = runner.invoke(main, [*export, "--task", "multi", "--distractors", "3"])
    assert fragments.exit_code == 2 and "--distractors" in fragments.output
    small = runner.invoke(main, [*export, "--task", "top", "--canvas", "100"])
    assert small.exit_code == 2 and "at least" in small.output
    assert not (tmp_path / "labels.csv").exists()
