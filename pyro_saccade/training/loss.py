"""The training objective: the negative ELBO of a SaccadeModel, or a baseline's own loss."""

from __future__ import annotations

import warnings

import pyro
from pyro.infer import Trace_ELBO
from torch import Tensor, nn

from ..model import SaccadeModel, Step


class ELBOLoss(nn.Module):
    """The negative ELBO of a SaccadeModel as a module, so DDP can wrap it."""

    def __init__(self, model: SaccadeModel) -> None:
        super().__init__()
        self.saccade = model
        self.elbo = Trace_ELBO()

    def forward(
        self, images: Tensor, proxies: Tensor, labels: Tensor, annealing: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """The negative ELBO per image, and the class probabilities [B, K] it found (detached,
        for the training accuracy)."""
        steps: list[Step] = []  # the guide's glimpses, which the model's replay reuses
        # The training loop reports a non-finite loss itself, as one clear error: without
        # Pyro's argument checks and its NaN warning, a NaN in the network reaches it as a NaN
        # loss rather than as an error inside a distribution.
        with warnings.catch_warnings(), pyro.validation_enabled(False):
            warnings.filterwarnings("ignore", message="Encountered NaN")
            loss = self.elbo.differentiable_loss(
                self.saccade.model, self.saccade.guide, images, proxies, labels, annealing, steps
            )
        probs = self.saccade.class_probs(self.saccade.read(steps))
        return loss / images.shape[0], probs.detach()


def objective(model: nn.Module) -> nn.Module:
    """The training loss of a model: the negative ELBO, or a baseline's own ``loss()``."""
    return ELBOLoss(model) if isinstance(model, SaccadeModel) else model.loss()
