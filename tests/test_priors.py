"""Pluggable priors p(z_t | h_{t-1}): choice by name and arguments, and checkpoint round trips."""

from __future__ import annotations

from pathlib import Path

import pyro.distributions as dist
import pytest
import torch
from click.testing import CliRunner
from torch import Tensor

from pyro_saccade.checkpoint import load, save_checkpoint
from pyro_saccade.cli import main
from pyro_saccade.errors import CheckpointError
from pyro_saccade.model import SaccadeConfig, SaccadeModel
from pyro_saccade.priors import (
    PRIORS,
    CentreBiasedPrior,
    FixedGaussianPrior,
    GlimpsePrior,
    make_prior,
    register_prior,
)

SMALL = ["--glimpses", "1", "--crop", "8", "--proxy", "8"]
QUICK = ["--epochs", "1", "--train-size", "4", "--test-size", "2", "--batch-size", "4", "--quiet"]


def test_train_command_records_the_prior_and_its_arguments(tmp_path: Path) -> None:
    args = ["--prior", "fixed", "--prior-arg", "loc=0.5,0,0", "--prior-arg", "scale=0.5,1,1"]
    result = CliRunner().invoke(main, ["train", *SMALL, *QUICK, *args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    model = load(tmp_path)
    assert model.config.prior == "fixed"
    assert model.config.prior_args == {"loc": [0.5, 0, 0], "scale": [0.5, 1, 1]}
    assert isinstance(model.prior, FixedGaussianPrior)
    assert model.prior.loc.tolist() == [0.5, 0, 0] and model.prior.scale.tolist() == [0.5, 1, 1]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--prior-arg", "spread"], 2, "expected KEY=VALUE"),
        (["--prior", "fixed", "--prior-arg", "width=2"], 2, "unexpected keyword argument 'width'"),
        (["--prior", "fixed", "--prior-arg", "scale=1,0,1"], 2, "scale must be positive"),
        (["--prior", "fixed", "--prior-arg", "loc=0,0"], 2, "loc needs 1 or 3 values"),
        (["--prior", "nonesuch"], 2, "unknown prior 'nonesuch'"),
    ],
)
def test_bad_prior_choices_are_reported(args: list[str], code: int, message: str, tmp_path):
    result = CliRunner().invoke(main, ["train", *SMALL, *QUICK, *args, "--out", str(tmp_path)])
    assert result.exit_code == code
    assert message in result.output


def test_shipped_priors_have_the_documented_shape_and_beliefs() -> None:
    h = torch.randn(5, 16)
    for name in PRIORS:
        prior = make_prior(name, 16)
        d = prior(h, 0)
        assert d.batch_shape == (5,) and d.event_shape == (3,)
    centre = CentreBiasedPrior(16, spread=0.2)(h, 3)
    assert centre.mean[0].tolist() == [-1.0, 0.0, 0.0]  # small crops at the centre
    assert torch.allclose(centre.stddev[0], torch.tensor([1.0, 0.2, 0.2]))
    one_number = FixedGaussianPrior(16, loc=0.0, scale=0.5)(h, 0)
    assert torch.allclose(one_number.stddev, torch.full((5, 3), 0.5))


class ShiftedPrior(GlimpsePrior):
    """N(shift, 1) with a learnable shift: a custom prior with state of its own."""

    def __init__(self, hidden: int, shift: float = 0.0) -> None:
        super().__init__(hidden)
        self.shift = torch.nn.Parameter(torch.full((3,), float(shift)))

    def forward(self, h: Tensor, t: int) -> dist.Distribution:
        return dist.Normal(self.shift.expand(h.shape[0], 3), 1.0).to_event(1)


def test_registered_prior_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    register_prior("shifted", ShiftedPrior)
    try:
        config = SaccadeConfig(
            glimpses=1, crop=8, proxy=8, prior="shifted", prior_args={"shift": 2}
        )
        model = SaccadeModel(config)
        with torch.no_grad():
            model.prior.shift[1] = -3.0  # trained state, not the constructor's
        save_checkpoint(tmp_path / "model.pt", model)

        loaded = load(tmp_path / "model.pt")
        assert isinstance(loaded.prior, ShiftedPrior)
        assert loaded.prior.shift.tolist() == [2.0, -3.0, 2.0]
    finally:
        del PRIORS["shifted"]
    # A new process that did not register it gets told how to fix that.
    with pytest.raises(CheckpointError, match="register_prior"):
        load(tmp_path / "model.pt")
