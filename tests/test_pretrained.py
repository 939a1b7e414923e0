"""The shipped models predict as they did when they were shipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from pyro_saccade.checkpoint import load, pretrained_names, read_checkpoint, trained_config
from pyro_saccade.prediction import infer
from pyro_saccade.training import canvases
from pyro_saccade.training.batches import collate

# Posterior-mean probabilities and glimpses of each shipped model on the first two held-out
# canvases of its own task, as the release computed them.
REFERENCE = json.loads((Path(__file__).parent / "data/pretrained_predictions.json").read_text())


def test_every_shipped_model_has_a_reference() -> None:
    assert sorted(REFERENCE) == sorted(pretrained_names())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_shipped_model_predicts_as_released(name: str) -> None:
    model = load(name)
    data = canvases(trained_config(read_checkpoint(name)), model.config.task, "test", 2)
    images, _ = next(iter(DataLoader(data, batch_size=2, collate_fn=collate(data))))
    prediction = infer(model, images, samples=0)  # the posterior mean: no draws
    expected = REFERENCE[name]
    # Relative to each probability as well: CPUs with other vector units round differently, and
    # a softmax carries that into its smaller outputs (1e-4 of them seen), not into the answer.
    assert torch.allclose(prediction.probs, torch.tensor(expected["probs"]), rtol=1e-3, atol=1e-6)
    assert torch.allclose(prediction.z, torch.tensor(expected["z"]), atol=1e-5)
