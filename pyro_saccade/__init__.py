"""pyro_saccade: classify very large images from a few small crops (variational saccading)."""

from __future__ import annotations

__version__ = "0.1.0"

from .data import TwoDigitCluttered, class_names, load_digits, load_image, make_proxy
from .errors import CheckpointError, SaccadeError, TrainingDiverged
from .glimpse import extract_glimpse, glimpse_boxes
from .model import Prediction, SaccadeConfig, SaccadeModel
from .priors import (
    CentreBiasedPrior,
    FixedGaussianPrior,
    GlimpsePrior,
    LearnedPrior,
    StandardNormalPrior,
    register_prior,
)
from .train import TrainConfig, evaluate, load, predict, pretrained_names, train

__all__ = [
    "__version__",
    "CentreBiasedPrior",
    "CheckpointError",
    "FixedGaussianPrior",
    "GlimpsePrior",
    "LearnedPrior",
    "Prediction",
    "SaccadeConfig",
    "SaccadeError",
    "SaccadeModel",
    "StandardNormalPrior",
    "TrainConfig",
    "TrainingDiverged",
    "TwoDigitCluttered",
    "class_names",
    "evaluate",
    "extract_glimpse",
    "glimpse_boxes",
    "load",
    "load_digits",
    "load_image",
    "make_proxy",
    "predict",
    "pretrained_names",
    "register_prior",
    "train",
]
