"""A prediction is a function of the model, the image and the seed, whatever else is in the
batch: its probabilities, glimpses and posterior samples."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY

from pyro_saccade.config import SaccadeConfig
from pyro_saccade.data import CanvasBatch, MegapixelMNIST, collate_canvases
from pyro_saccade.model import SaccadeModel
from pyro_saccade.posterior import sample_posterior
from pyro_saccade.prediction import infer

ORDER = [6, 3, 0, 5, 1, 4, 2]  # image 3 second


def trained_looking(where: str) -> SaccadeModel:
    """A small model whose guide depends on the image (untrained, q and the attention would
    ignore the proxy's features)."""
    torch.manual_seed(0)
    model = SaccadeModel(SaccadeConfig(**{**TINY, "proxy": 32, "where": where})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def images() -> torch.Tensor:
    return torch.rand(7, 1, 96, 96, generator=torch.Generator().manual_seed(1))


def predictions(model: SaccadeModel, batch: torch.Tensor, size: int, seed: int) -> list:
    """infer over ``batch`` in chunks of ``size`` images: probabilities, glimpses and centres
    per image."""
    rows = []
    for chunk in batch.split(size):
        out = infer(model, chunk, samples=4, seed=seed)
        for b in range(len(chunk)):
            centres = None if out.centres is None else out.centres[:, b]
            rows.append((out.probs[b], out.z[:, b], centres))
    return rows


@pytest.mark.parametrize("where", ["free", "cells"])
def test_an_images_prediction_is_the_same_alone_and_in_any_batch(where: str) -> None:
    model, batch = trained_looking(where), images()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = predictions(model, batch[3:4], 1, seed=5)[0]
        for size in (2, 7):
            shuffled = predictions(model, batch[ORDER], size, seed=5)[1]
            for mine, theirs in zip(alone, shuffled, strict=True):
                assert (mine is None and theirs is None) or torch.equal(mine, theirs)
        torch.set_num_threads(2)
        two_threads = predictions(model, batch[ORDER], 7, seed=5)[1]
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(alone[0], two_threads[0], atol=1e-4, rtol=0)
    # ... and the seed, not the batch, decides the draws
    other = predictions(model, batch[3:4], 1, seed=6)[0]
    assert not torch.equal(alone[1], other[1])
    assert not torch.equal(alone[1][0], alone[1][1])  # the draws of one image differ


def clutter_canvases(order: list[int]) -> CanvasBatch:
    """Lazy canvases on clutter fields, whose extents differ from canvas to canvas."""
    data = MegapixelMNIST(
        canvas=(400, 500), n=7, noise=12, split="test", background="clutter", lazy=True
    )
    return collate_canvases([data[i] for i in order])[0]


def test_a_clutter_canvas_is_read_the_same_alone_and_in_any_batch() -> None:
    model = trained_looking("cells")
    alone = infer(model, clutter_canvases([3]), samples=4, seed=5, warn=False)
    together = infer(model, clutter_canvases(ORDER), samples=4, seed=5, warn=False)
    assert torch.equal(alone.probs[0], together.probs[1])
    assert torch.equal(alone.z[:, 0], together.z[:, 1])


def test_posterior_samples_of_an_image_do_not_depend_on_the_others() -> None:
    model, batch = trained_looking("cells"), images()
    alone = sample_posterior(model, [batch[3]], samples=3, seed=2)
    together = sample_posterior(model, list(batch[ORDER]), samples=3, seed=2)
    for group in ("posterior", "prior"):
        mine, theirs = getattr(alone, group), getattr(together, group)
        assert torch.equal(mine.z[:, 0], theirs.z[:, 1])
        assert torch.equal(mine.centres[:, 0], theirs.centres[:, 1])
        assert torch.equal(mine.probs[:, 0], theirs.probs[:, 1])
        assert torch.equal(mine.where[:, 0], theirs.where[:, 1])
        assert torch.equal(mine.where_p[:, 0], theirs.where_p[:, 1])
    assert torch.equal(alone.posterior.where_q[:, 0], together.posterior.where_q[:, 1])
