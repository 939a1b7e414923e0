"""The predictive that knows when its glimpses read nothing familiar: r(x) from the glimpse
score, the mixture with the uniform it weighs, and the answers it keeps."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from tiny import TINY

from pyro_saccade import familiar
from pyro_saccade.calibration import averaged_probs
from pyro_saccade.data import TwoDigitCluttered, class_names, make_proxy
from pyro_saccade.model import SaccadeConfig, SaccadeModel
from pyro_saccade.prediction import infer, unsure

GLIMPSES, FEATURES = 2, 64


def gaussian_profile(quantile: float = 1.0) -> dict:
    """The glimpse part of a profile: features of mean 0 and standard deviation 1."""
    zeros, ones = [[0.0] * FEATURES] * GLIMPSES, [[1.0] * FEATURES] * GLIMPSES
    return {"glimpses": {"mean": zeros, "std": ones, "quantile": quantile}}


def features_at(*scores: float) -> torch.Tensor:
    """Features [1, B, T, F] whose every glimpse has the mean squared z-score given, per image."""
    values = torch.tensor(scores, dtype=torch.float64).sqrt()
    return values[None, :, None, None].expand(1, len(scores), GLIMPSES, FEATURES).float()


def test_read_probability_is_one_at_the_mean_one_half_at_the_threshold_and_falls_away() -> None:
    profile = gaussian_profile(quantile=1.0)
    threshold = familiar.MARGIN * 1.0
    r = familiar.read_probability(profile, features_at(0.0, threshold, threshold + 0.1, 100.0))
    assert r[0] == pytest.approx(1.0, abs=1e-12)
    assert r[1] == pytest.approx(0.5, abs=1e-4)
    # The log odds are F/2 (s* - s): 3.2 at 0.1 beyond the threshold.
    assert r[2] == pytest.approx(1 / (1 + math.exp(FEATURES / 2 * 0.1)), rel=1e-4)
    assert r[3] == familiar.READ_FLOOR


def test_read_probability_falls_below_one_half_where_the_glimpse_warning_fires() -> None:
    profile = {"proxy": 32, **gaussian_profile()}
    features = features_at(1.4, 1.6)
    r = familiar.read_probability(profile, features)
    warned = familiar.profile_reasons(profile, features=features)
    assert r[0] > 0.5 > r[1] and not warned[0] and warned[1]


def test_one_familiar_glimpse_is_enough_and_no_profile_reads_everything() -> None:
    features = features_at(50.0).clone()
    features[:, :, 0] = 0.0  # the first glimpse at the profile's mean
    assert familiar.read_probability(gaussian_profile(), features)[0] == pytest.approx(1.0)
    ones = torch.ones(1, dtype=torch.float64)
    assert torch.equal(familiar.read_probability(None, features_at(50.0)), ones)
    other = features_at(50.0)[..., :32]  # other features: not comparable with the profile
    assert torch.equal(familiar.read_probability(gaussian_profile(), other), ones)


def test_unsure_mixes_with_the_uniform_and_keeps_every_answer() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.45, 0.45 - 1e-4]])
    read = torch.tensor([1.0, familiar.READ_FLOOR])
    mixed = unsure(probs, read, multilabel=False)
    assert torch.equal(mixed[0], probs[0])  # r = 1: the probabilities to the bit
    assert mixed[1].sum() == pytest.approx(1.0)
    assert torch.allclose(mixed[1], torch.full((3,), 1 / 3), atol=1e-3)
    assert torch.equal(mixed.argmax(-1), probs.argmax(-1))
    marks = torch.tensor([[0.9, 0.2, 0.5 + 1e-3]])  # multi-label: each label's side of 1/2
    mixed = unsure(marks, torch.tensor([familiar.READ_FLOOR]), multilabel=True)
    assert torch.allclose(mixed, torch.full((1, 3), 0.5), atol=1e-3)
    assert torch.equal(mixed > 0.5, marks > 0.5)


def canvases(n: int, seed: int) -> torch.Tensor:
    data = TwoDigitCluttered("identify", 100, n=n, split="test", seed=seed)
    return torch.stack([data[i][0] for i in range(n)])


@pytest.fixture(scope="module")
def model() -> SaccadeModel:
    """An untrained tiny model with a profile of 100 held-out canvases."""
    torch.manual_seed(0)
    config = SaccadeConfig(classes=class_names("identify"), **{**TINY, "proxy": 32})
    model = SaccadeModel(config).eval()
    held_out = canvases(100, seed=1)
    proxies = make_proxy(held_out, 32)
    profile = familiar.profile(model, proxies, infer(model, held_out, proxies, warn=False))
    model.familiar = json.loads(json.dumps(profile))
    return model


def test_glimpses_far_from_the_profile_give_uniform_probabilities_and_the_same_answers(
    model: SaccadeModel,
) -> None:
    images = canvases(6, seed=2)
    far = copy.deepcopy(model.familiar)
    std = torch.tensor(far["glimpses"]["std"])
    far["glimpses"]["mean"] = (torch.tensor(far["glimpses"]["mean"]) + 10 * std).tolist()
    alone = copy.copy(model)
    alone.familiar = None
    own = infer(alone, images, samples=2, warn=False)
    assert own.read is None
    assert torch.equal(own.probs, averaged_probs(own.logits, model.config.temperature, False))
    unlike = copy.copy(model)
    unlike.familiar = far
    mixed = infer(unlike, images, samples=2, warn=False)
    assert torch.equal(mixed.read, torch.full((6,), familiar.READ_FLOOR))
    uniform = torch.full_like(mixed.probs, 1 / 55)
    assert torch.allclose(mixed.probs, uniform, atol=1e-5)
    assert not torch.allclose(own.probs, uniform, atol=1e-4)  # an untrained model's are near
    assert torch.equal(mixed.probs.argmax(-1), own.probs.argmax(-1))
    assert torch.equal(mixed.z, own.z) and torch.equal(mixed.logits, own.logits)


def test_the_mixture_is_the_models_own_prediction_image_by_image(model: SaccadeModel) -> None:
    images = canvases(5, seed=3)
    together = infer(model, images, samples=2, warn=False)
    expected = familiar.read_probability(model.familiar, together.features).float()
    assert torch.equal(together.read, expected)
    tempered = averaged_probs(together.logits, model.config.temperature, False)
    assert torch.equal(together.probs, unsure(tempered, expected, False))
    alone = infer(model, images[3:4], samples=2, warn=False)  # batch-independent
    assert torch.equal(alone.probs[0], together.probs[3])
    assert torch.equal(alone.read[0], together.read[3])
    # Random glimpses are not the model's reading of the image: no mixture.
    random = infer(model, images, samples=2, random=True, warn=False)
    assert random.read is None
    assert torch.equal(random.probs, averaged_probs(random.logits, 1.0, False))
