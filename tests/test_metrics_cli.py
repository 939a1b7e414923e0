"""`saccade evaluate`'s glimpse measures and baselines, and `saccade train --model proxy-cnn`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner
from test_metrics import tiny_saccade

from pyro_saccade import load
from pyro_saccade.baselines import ProxyCNN
from pyro_saccade.checkpoint import save_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.data import make_proxy
from pyro_saccade.model import SaccadeConfig
from pyro_saccade.prediction import predict
from pyro_saccade.training import TrainConfig


def test_cli_evaluate_reports_coverage_pixels_and_baselines(tmp_path: Path) -> None:
    run = TrainConfig(canvas=[40, 40])
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", tiny_saccade(), run)
    torch.manual_seed(0)
    proxy = ProxyCNN(SaccadeConfig().classes, 16)
    save_checkpoint(tmp_path / "proxy.pt", proxy, run)
    args = ["evaluate", str(tmp_path / "run"), "--n", "6", "--batch-size", "4", "--seed", "2"]
    args += ["--proxy-baseline", str(tmp_path / "proxy.pt")]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    keys = ["accuracy", "coverage", "pixels_read", "box_side", "random_glimpses_accuracy"]
    for key in [*keys, "random_glimpses_coverage"]:
        assert 0 <= report[key] <= (40 if key == "box_side" else 1), key
    assert report["n"] == 6 and report["deciding_digits"] == 12
    assert 0 <= report["proxy_baseline_accuracy"] <= 1
    assert report["proxy_baseline"] == str(tmp_path / "proxy.pt")
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    assert "accuracy" in text.output and "held-out 40x40 canvases" in text.output
    assert f"coverage {report['coverage']:.4f} of 12 deciding digits" in text.output
    assert f"random glimpses: accuracy {report['random_glimpses_accuracy']:.4f}" in text.output
    # A baseline that answers another task is refused.
    save_checkpoint(tmp_path / "sum.pt", ProxyCNN(19, 16, task="sum"), TrainConfig())
    args[-1] = str(tmp_path / "sum.pt")
    other = CliRunner().invoke(main, args)
    assert other.exit_code == 2 and "--proxy-baseline" in other.output


def test_cli_trains_the_proxy_cnn_on_the_proxies_it_is_given(tmp_path: Path) -> None:
    out = tmp_path / "proxy"
    args = ["train", "--model", "proxy-cnn", "--canvas", "40", "--proxy", "16", "--epochs", "1"]
    args += ["--train-size", "16", "--test-size", "8", "--batch-size", "8", "--quiet"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = load(out)
    assert isinstance(model, ProxyCNN) and model.config.proxy == 16
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and 0 <= record["test_accuracy"] <= 1
    # Given the proxies, it reads nothing else; without them it builds its own.
    images = torch.rand(2, 1, 40, 40)
    expected = predict(model, images)
    assert torch.equal(predict(model, object(), make_proxy(images, 16)), expected)
