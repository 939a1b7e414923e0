"""Calibration: the measures, the fitted temperature, and a model saved with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny import TINY

from pyro_saccade.calibration import averaged_probs, fit_temperature, reliability, scores
from pyro_saccade.checkpoint import load, read_checkpoint, trained_config
from pyro_saccade.cli import main
from pyro_saccade.config import SaccadeConfig
from pyro_saccade.data import class_names
from pyro_saccade.metrics import evaluate_glimpses
from pyro_saccade.training import TrainConfig, canvases, train


def drawn(n: int = 4000, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [1, N, K] and labels drawn from their own softmax: calibrated at temperature 1."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, classes, generator=generator)
    labels = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
    return logits[None], labels


def test_the_measures_tell_calibrated_from_overconfident_probabilities() -> None:
    logits, labels = drawn()
    calibrated = scores(averaged_probs(logits, 1.0, False), labels, False)
    overconfident = scores(averaged_probs(logits, 0.4, False), labels, False)
    assert calibrated.ece < 0.03 < 0.1 < overconfident.ece
    assert calibrated.nll < overconfident.nll and calibrated.brier < overconfident.brier
    right = torch.nn.functional.one_hot(labels, 10).float()
    perfect = scores(right, labels, False)
    assert perfect.ece == pytest.approx(0.0) and perfect.brier == pytest.approx(0.0)


def test_reliability_bins_hold_every_answer() -> None:
    probs = torch.tensor([[0.95, 0.05], [0.55, 0.45], [0.3, 0.7]])
    mean, accuracy, counts = reliability(probs, torch.tensor([0, 1, 1]), False)
    assert counts.sum() == 3 and counts[9] == 1 and counts[5] == 1 and counts[7] == 1
    assert accuracy[9] == 1 and accuracy[5] == 0 and mean[7] == pytest.approx(0.7)
    marks = torch.tensor([[0.9, 0.2]])  # multi-label: each yes/no answer counts
    _, right, counts = reliability(marks, torch.tensor([[1, 1]]), True)
    assert counts.sum() == 2 and right[8] == 0 and right[9] == 1


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_the_fitted_temperature_undoes_a_miscalibration(scale: float) -> None:
    logits, labels = drawn()
    temperature = fit_temperature(logits * scale, labels, False)
    assert temperature == pytest.approx(scale, rel=0.1)
    fitted = averaged_probs(logits * scale, temperature, False)
    assert scores(fitted, labels, False).ece < 0.03
    assert torch.equal(fitted.argmax(-1), logits[0].argmax(-1))  # the answers stay


def test_calibrate_saves_a_model_whose_answers_stay_and_evaluate_reports_calibration(
    tmp_path: Path,
) -> None:
    run = TrainConfig(epochs=1, train_size=16, test_size=8, batch_size=8, canvas=[40, 40])
    train(SaccadeConfig(classes=class_names("identify"), **TINY), run, tmp_path / "run", False)
    out = tmp_path / "calibrated.pt"
    args = ["calibrate", str(tmp_path / "run"), "--n", "24", "--batch-size", "8", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    before, after = load(tmp_path / "run"), load(out)
    assert before.config.temperature == 1.0 != after.config.temperature
    assert f"temperature {after.config.temperature:.4f}" in result.output
    images = torch.rand(3, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    from pyro_saccade.prediction import predict

    assert torch.equal(predict(before, images).argmax(-1), predict(after, images).argmax(-1))
    assert before.familiar is None and after.familiar["images"] == 24
    # evaluate reads the probabilities predict gives: tempered, then mixed by the profile.
    data = canvases(trained_config(read_checkpoint(out)), "identify", "test", 8)
    measured = evaluate_glimpses(after, data, batch_size=3, random_glimpses=False)
    shown = torch.cat([predict(after, data[i][0]) for i in range(8)])
    labels = torch.tensor([data[i][1] for i in range(8)])
    assert measured.nll == pytest.approx(scores(shown, labels, False).nll, rel=1e-6)
    args = ["evaluate", str(out), "--n", "8", "--json", "--reliability", str(tmp_path / "r.png")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)
    assert {"nll", "ece", "brier"} <= measured.keys() and 0 <= measured["ece"] <= 1
    assert sum(row[2] for row in measured["reliability"]) == 8
    assert (tmp_path / "r.png").stat().st_size > 0
