"""Priors over where to look (where_priors.py): the model draws where_t from them, the bound
holds the attention to them by the KL term of where_t, and checkpoints name them."""

from __future__ import annotations

from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from tiny import TINY

from pyro_saccade import SaccadeConfig, SaccadeModel
from pyro_saccade.checkpoint import load, save_checkpoint
from pyro_saccade.data import make_proxy
from pyro_saccade.posterior import sample_posterior
from pyro_saccade.training.loss import ELBOLoss
from pyro_saccade.where_priors import (
    WhereContext,
    WherePrior,
    make_where_prior,
    register_where_prior,
)

CLASSES = [str(k) for k in range(10)]


def cells_model(prior: str = "attention", **args: object) -> SaccadeModel:
    torch.manual_seed(0)
    where = dict(kind="cells", box_min=8, box_max=24, prior=prior, prior_args=args)
    config = dict(TINY, proxy=32, glimpses=3, where=where, evidence="crops")
    return SaccadeModel(SaccadeConfig(classes=CLASSES, task="majority", **config))


def traces_look(model: SaccadeModel, images: torch.Tensor) -> tuple:
    """What the attention reads before the first glimpse: its base terms, the proxy's feature
    map and h_{-1} = 0."""
    proxies = make_proxy(images, model.config.proxy)
    _, contrast = model.contrast(images, proxies)
    features, maps = model.proxy_encoder.encode(contrast)
    look = model.where.start(images, contrast, maps)
    return look.base, look.maps, features.new_zeros(len(images), model.config.hidden)


def traces(model: SaccadeModel, images: torch.Tensor) -> tuple[poutine.Trace, poutine.Trace]:
    """The guide's trace and the model's, replayed on the guide's draws."""
    proxies = make_proxy(images, model.config.proxy)
    guide = poutine.trace(model.guide).get_trace(images, proxies)
    replayed = poutine.replay(model.model, trace=guide)
    return guide, poutine.trace(replayed).get_trace(images, proxies)


def test_the_default_prior_is_the_attention_and_its_kl_is_zero() -> None:
    model = cells_model()
    guide, trace = traces(model, torch.rand(2, 1, 96, 96))
    for t in range(3):
        p, q = trace.nodes[f"where_{t}"]["fn"].probs, guide.nodes[f"where_{t}"]["fn"].probs
        torch.testing.assert_close(p, q)


def test_a_position_prior_is_the_models_where_and_the_bound_weighs_it() -> None:
    model = cells_model("position", y=-1.0, spread=0.3)
    images = torch.rand(2, 1, 96, 96)
    guide, trace = traces(model, images)
    p = trace.nodes["where_0"]["fn"].probs.view(2, 8, 8)
    # Before any look, the top row is the likeliest and the bottom row the least.
    rows = p.sum(-1)
    assert (rows[:, 0] > 0.5).all() and (rows.diff(dim=-1) < 0).all()
    # Cells already looked at are closed to the prior as to the guide.
    for t in (1, 2):
        closed = guide.nodes[f"where_{t}"]["fn"].probs == 0
        assert closed.any() and (trace.nodes[f"where_{t}"]["fn"].probs[closed] == 0).all()
    # The guide leans the same way, and the attention moves it away: a KL above zero.
    q = guide.nodes["where_0"]["fn"].probs
    kl = (q * (q.log() - p.view(2, -1).log())).sum(-1)
    assert (kl > 0.01).all()


def test_the_guide_is_the_belief_updated_by_the_attention() -> None:
    model = cells_model("position", y=-1.0, spread=0.3)
    images = torch.rand(4, 1, 96, 96)
    guide, trace = traces(model, images)
    q, p = guide.nodes["where_0"]["fn"], trace.nodes["where_0"]["fn"]
    attention = model.where.attention(*traces_look(model, images))
    torch.testing.assert_close(q.logits, (attention + p.logits).log_softmax(-1))
    # Before any look the top two rows hold most of the guide's mass, as of the prior's.
    top = q.probs.view(4, 8, 8)[:, :2].sum((-1, -2))
    assert (top > 0.6).all()


def test_fitting_the_bound_shrinks_the_kl_of_where() -> None:
    pyro.set_rng_seed(0)
    model = cells_model("position", y=-1.0, spread=0.3)
    images = torch.rand(4, 1, 96, 96)
    proxies = make_proxy(images, 32)
    labels = torch.tensor([1, 2, 3, 4])

    def kl() -> float:
        with torch.no_grad():
            guide, trace = traces(model, images)
        q, p = guide.nodes["where_0"]["fn"].probs, trace.nodes["where_0"]["fn"].probs
        return float((q * (q.log() - p.log())).sum(-1).mean())

    before = kl()
    loss_fn = ELBOLoss(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        loss_fn(images, proxies, labels)[0].backward()
        optimizer.step()
    assert kl() < 0.7 * before


class BottomRight(WherePrior):
    """A prior a user writes: glimpses near the bottom-right corner."""

    def __init__(self, strength: float = 5.0) -> None:
        super().__init__()
        self.strength = strength

    def forward(self, context: WhereContext) -> torch.Tensor:
        return (self.strength * context.centres.sum(-1)).expand_as(context.attention)


def test_a_registered_prior_is_named_by_the_checkpoint(tmp_path: Path) -> None:
    register_where_prior("bottom_right", BottomRight)
    model = cells_model("bottom_right", strength=3.0)
    save_checkpoint(tmp_path / "checkpoint.pt", model)
    loaded = load(tmp_path / "checkpoint.pt")
    assert loaded.config.where.prior == "bottom_right"
    assert isinstance(loaded.where.prior, BottomRight) and loaded.where.prior.strength == 3.0
    # The prior's map in the ArviZ export: the bottom-right cell the likeliest before any look.
    result = sample_posterior(loaded, [torch.rand(1, 96, 96)], samples=2, seed=0)
    first = result.posterior.where_p[0, 0, 0]
    assert first.argmax() == first.numel() - 1
    assert not torch.allclose(first, result.posterior.where_q[0, 0, 0])


def test_unknown_priors_and_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown where-prior 'nowhere'"):
        make_where_prior("nowhere")
    with pytest.raises(ValueError, match="where-prior 'position'"):
        make_where_prior("position", {"height": 1})
    with pytest.raises(ValueError, match="spread"):
        make_where_prior("scan", {"glimpses": 3, "spread": 0})


def test_scan_and_contrast_priors_prefer_what_they_say() -> None:
    cells = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    centres = ((cells.flip(-1) + 0.5) / 4 * 2 - 1).view(-1, 2)  # (x, y), row by row
    contrast = torch.zeros(1, 16).index_fill_(1, torch.tensor([6]), 0.5)
    scan = make_where_prior("scan", {"glimpses": 4, "axis": "x", "spread": 0.2})
    for t in range(4):
        context = WhereContext(t, torch.zeros(1, 16), contrast, centres, torch.zeros(1, 8))
        assert int(scan(context).argmax()) % 4 == t  # glimpse t in column t
    context = WhereContext(0, torch.zeros(1, 16), contrast, centres, torch.zeros(1, 8))
    assert int(make_where_prior("contrast")(context).argmax()) == 6


def test_elbo_is_finite_with_every_built_in_prior() -> None:
    images = torch.rand(2, 1, 96, 96)
    proxies = make_proxy(images, 32)
    labels = torch.tensor([1, 2])
    for name, args in [
        ("uniform", {}),
        ("position", {"x": 1.0}),
        ("scan", {"glimpses": 3}),
        ("contrast", {"weight": 2.0}),
    ]:
        model = cells_model(name, **args)
        loss = Trace_ELBO().differentiable_loss(model.model, model.guide, images, proxies, labels)
        assert torch.isfinite(loss), name
