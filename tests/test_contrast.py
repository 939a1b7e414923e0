"""The model reads contrast against the local background (contrast.py): bright marks on black
as before, dark marks on white as the same marks on black, and marks on a smooth field."""

import pytest
import torch
import torch.nn.functional as F
from tiny import TINY

from pyro_saccade import SaccadeConfig, SaccadeModel
from pyro_saccade.config import CELL, updated
from pyro_saccade.contrast import against, local_background, window_medians, window_of
from pyro_saccade.prediction import boxes, infer

CLASSES = [str(k) for k in range(10)]


def model_of(where: str) -> SaccadeModel:
    torch.manual_seed(0)
    if where == "cells":
        config = dict(TINY, proxy=64, where=dict(kind="cells", box_min=16, box_max=48))
        return SaccadeModel(SaccadeConfig(classes=CLASSES, evidence="crops", **config))
    return SaccadeModel(SaccadeConfig(classes=CLASSES, **TINY))


def marks(side: int, count: int, seed: int = 0) -> torch.Tensor:
    """A black image [1, 1, side, side] with ``count`` bright squares of side / 20."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 1, side, side)
    mark = side // 20
    for x, y in torch.randint(0, side - mark, (count, 2), generator=generator).tolist():
        image[..., y : y + mark, x : x + mark] = torch.rand(1, generator=generator) * 0.5 + 0.5
    return image


@pytest.mark.parametrize("window", [12, None])
def test_sparse_marks_on_black_have_no_background_and_read_as_they_are(window: int | None) -> None:
    proxies = marks(64, 6)
    background = local_background(proxies, window)
    assert torch.equal(background, torch.zeros_like(proxies))
    assert torch.equal(against(proxies, background), proxies)


def test_a_smooth_field_is_the_background_and_a_mark_stands_out_of_it() -> None:
    ramp = torch.linspace(0.2, 0.8, 64).expand(1, 1, 64, 64).clone()
    image = ramp.clone()
    image[..., 30:34, 40:44] = 0.0  # a dark mark
    contrast = against(image, local_background(image, 12))
    assert contrast[..., 30:34, 40:44].min() > 0.4
    outside = torch.ones_like(contrast, dtype=torch.bool)
    outside[..., 26:38, 36:48] = False
    assert contrast[outside].max() < 0.05


@pytest.mark.parametrize("where", ["cells", "free"])
def test_dark_marks_on_white_read_as_the_same_marks_on_black(where: str) -> None:
    model = model_of(where)
    black = marks(320, 5)
    on_black, on_white = (infer(model, image, samples=2, seed=3) for image in (black, 1 - black))
    assert torch.allclose(on_black.probs, on_white.probs, atol=1e-5)
    assert torch.allclose(on_black.z, on_white.z, atol=1e-4)


def test_the_first_glimpse_finds_a_dark_mark_on_a_smooth_field() -> None:
    model = model_of("cells")
    side, x0, y0 = 640, 400, 200
    field = torch.linspace(0.3, 0.7, side).expand(1, 1, side, side).clone()
    field[..., y0 : y0 + 28, x0 : x0 + 28] = 0.0
    out = infer(model, field, samples=0)
    box = boxes(model, out.z[0, 0], side, side, out.centres[0, 0])[0]
    centre = torch.stack([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    assert (centre - torch.tensor([x0 + 14.0, y0 + 14.0])).abs().max() <= side / 64


def test_the_window_spans_three_objects_so_that_a_large_object_keeps_its_contrast() -> None:
    config = model_of("cells").config  # a 64-pixel proxy, objects of 28 px
    assert window_of(config, 600) == 12  # three cells hold three 3-pixel objects
    large = updated(config, {"where": {"object_size": 200}})
    window = window_of(large, 640)  # objects 20 proxy pixels wide
    assert window >= 60 and (window // 4) % 2 == 1
    image = torch.zeros(1, 1, 64, 64)
    image[..., 20:40, 20:40] = 1.0
    assert torch.equal(against(image, local_background(image, window)), image)
    assert against(image, local_background(image, 12))[..., 28:32, 28:32].max() == 0  # erased


def test_window_medians_are_torch_medians_however_many_zeros() -> None:
    generator = torch.Generator().manual_seed(0)
    window = 3 * CELL  # 144 values: the median is the 72nd smallest
    for share in (0.0, 0.3, 0.5, 0.7, 1.0):
        images = torch.rand(3, 1, 40, 44, generator=generator)
        images[torch.rand(images.shape, generator=generator) < share] = 0.0
        images[0, :, :12, :12] = 0.0  # a block all zero
        images[1, :, :12, :12] = 1e-3  # with 72 zeros the median is 0, with 71 it is not
        images[1, :, :6, :12] = 0.0
        images[1, :, 12:24, :12] = 1e-3
        images[1, :, 12:18, :12] = 0.0
        images[1, :, 12, 0] = 1e-3
        for padded in (images, images - 0.5):  # non-negative, and not
            blocks = F.unfold(padded, window, stride=CELL).transpose(1, 2)
            expected = blocks.median(-1).values.view(3, 8, 9)
            assert torch.equal(window_medians(padded, window), expected)
