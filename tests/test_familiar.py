"""The warning on inputs unlike the training images: each reason fires for an input that has it
and not for a canvas drawn as in training, all of them in one line."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import TINY

from pyro_saccade import familiar
from pyro_saccade.checkpoint import (
    atomic_save,
    export,
    load,
    read_checkpoint,
    save_checkpoint,
)
from pyro_saccade.data import TwoDigitCluttered, class_names, make_proxy
from pyro_saccade.model import SaccadeConfig, SaccadeModel
from pyro_saccade.prediction import infer
from pyro_saccade.training import TrainConfig

PROXY = 32  # TINY's 16 leaves a Laplacian pyramid too few levels to tell scales apart


def canvases(n: int, seed: int, side: int = 100, **options: object) -> torch.Tensor:
    data = TwoDigitCluttered("identify", side, n=n, split="test", seed=seed, **options)
    return torch.stack([data[i][0] for i in range(n)])


@pytest.fixture(scope="module")
def model() -> SaccadeModel:
    """An untrained tiny model on 100x100 canvases with a profile of 200 held-out ones."""
    torch.manual_seed(0)
    config = SaccadeConfig(classes=class_names("identify"), **{**TINY, "proxy": PROXY})
    model = SaccadeModel(config).eval()
    held_out = canvases(200, seed=1)
    proxies = make_proxy(held_out, PROXY)
    profile = familiar.profile(model, proxies, infer(model, held_out, proxies, warn=False))
    model.familiar = json.loads(json.dumps(profile))  # as a checkpoint keeps it
    model.trained_on = familiar.trained_on(1, [100, 100])
    return model


def reasons(model: SaccadeModel, images: torch.Tensor) -> list[list[str]]:
    proxies = make_proxy(images, PROXY)
    prediction = infer(model, images, proxies, warn=False)
    return familiar.reasons_for(model, images, proxies, prediction)


def share(found: list[list[str]], words: str) -> float:
    """The share of images with a reason that contains ``words``."""
    return sum(any(words in reason for reason in own) for own in found) / len(found)


def test_profile_is_json_of_floats(model: SaccadeModel) -> None:
    profile = model.familiar
    assert profile["images"] == 200 and profile["proxy"] == PROXY
    for part in ("intensity", "detail", "glimpses"):
        assert isinstance(profile[part]["quantile"], float)
    assert len(profile["glimpses"]["mean"]) == TINY["glimpses"]


def test_canvases_drawn_as_in_training_pass(model: SaccadeModel) -> None:
    assert not any(reasons(model, canvases(50, seed=2)))


def test_intensities_flag_another_background_noise_and_an_empty_image(
    model: SaccadeModel,
) -> None:
    typical = canvases(8, seed=3)
    white = reasons(model, 1 - typical)
    assert share(white, "proxy intensities unlike the training proxies' (brighter") == 1
    noise = reasons(model, torch.rand(8, 1, 100, 100, generator=torch.Generator().manual_seed(0)))
    assert share(noise, "proxy intensities unlike") == 1
    blank = reasons(model, torch.zeros(2, 1, 100, 100))
    assert share(blank, "proxy intensities unlike the training proxies' (darker") == 1


def test_detail_flags_smaller_and_larger_objects(model: SaccadeModel) -> None:
    typical = canvases(8, seed=3)
    # Zoomed in four times: the digits fill the proxy.
    zoomed = F.interpolate(typical[..., 36:61, 36:61], size=(100, 100), mode="bilinear")
    assert share(reasons(model, zoomed), "coarser detail") >= 0.5
    # A checkerboard of proxy pixels: detail at the finest level only.
    board = (torch.arange(PROXY)[:, None] + torch.arange(PROXY)).remainder(2).float()
    fine = F.interpolate(board[None, None], size=(100, 100), mode="nearest").expand(4, 1, -1, -1)
    assert share(reasons(model, fine * typical[:4].amax((2, 3), keepdim=True)), "finer detail") == 1


def test_size_and_channels_from_the_shape_alone() -> None:
    trained = familiar.trained_on(1, [1500, 1500])
    assert familiar.unfamiliar(trained, 1, 1500, 1500) == []
    assert familiar.unfamiliar(trained, 1, 2000, 2000) == []
    # A 4:3 photo of the same shorter side: the proxy keeps its objects' size and shape.
    assert familiar.unfamiliar(trained, 1, 1500, 2000) == []
    (wide,) = familiar.unfamiliar(trained, 1, 1500, 3000)  # a shape never trained on
    assert "another shape, its objects of the trained size" in wide
    (size,) = familiar.unfamiliar(trained, 1, 3000, 3000)
    assert "a 3000x3000 image" in size and "0.5 times as large on the proxy" in size
    # A proxy twice as large on it (``SaccadeConfig.proxy_for``) keeps its objects' size.
    assert familiar.unfamiliar(trained, 1, 3000, 3000, scale=2.0) == []
    colour, size = familiar.unfamiliar(trained, 3, 480, 640)  # both, the colour first
    assert "colour image" in colour and "480x640" in size
    assert familiar.unfamiliar(familiar.trained_on(3, None), 3, 480, 640) == []  # photos


def test_glimpses_that_found_nothing_familiar(model: SaccadeModel) -> None:
    images = canvases(4, seed=4)
    proxies = make_proxy(images, PROXY)
    prediction = infer(model, images, proxies, warn=False)
    assert not any(familiar.profile_reasons(model.familiar, features=prediction.features))
    std = torch.tensor(model.familiar["glimpses"]["std"])
    unlike = dataclasses.replace(prediction, features=prediction.features + 3 * std)
    found = familiar.profile_reasons(model.familiar, features=unlike.features)
    assert share(found, "glimpses that found nothing like what the model was trained to read") == 1
    # One glimpse that found something familiar is enough.
    one = prediction.features.clone()
    one[:, :, 1:] += 3 * std[1:]
    assert not any(familiar.profile_reasons(model.familiar, features=one))


def test_every_reason_in_one_line(model: SaccadeModel) -> None:
    image = 1 - canvases(1, seed=5, side=250, digit_size=28)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        infer(model, image)
    (warning,) = caught
    line = str(warning.message)
    assert "\n" not in line
    assert line.startswith("unlike the training images: a 250x250 image for a model trained on ")
    assert (
        "; proxy intensities unlike the training proxies' "
        "(brighter on average: another background?)" in line
    )
    assert line.endswith(": its answer may be unreliable")


def test_a_batch_counts_its_images() -> None:
    line = familiar.summary([["noise"], [], ["noise", "size"]])
    assert line == (
        "unlike the training images: noise (2 of 3 images); size (1 of 3 images): "
        "their answers may be unreliable"
    )
    assert familiar.summary([[], []]) is None


def test_checkpoints_keep_the_profile(model: SaccadeModel, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, TrainConfig(canvas=[100, 100]))
    assert load(path).familiar is None  # a model without a profile: its shape is still checked
    payload = read_checkpoint(path)
    payload["familiar"] = json.dumps(model.familiar)
    atomic_save(payload, path)
    shipped = export(path, tmp_path / "shipped.pt")
    loaded = load(shipped)
    assert loaded.familiar.keys() == model.familiar.keys() and loaded.trained_on == (1, 100, 100)
    for part in ("intensity", "detail", "glimpses"):
        for key, kept in loaded.familiar[part].items():
            assert torch.equal(torch.as_tensor(kept), torch.tensor(model.familiar[part][key]))
    with pytest.warns(UserWarning, match="proxy intensities unlike the training proxies'"):
        infer(loaded, 1 - canvases(1, seed=6))
