"""pyro_saccade: classify very large images from a few small crops (variational saccading).

The public API is imported lazily, so that ``import pyro_saccade.cli`` (and ``saccade --help``)
does not pay for importing torch and Pyro.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TwoDigitCluttered": ".data",
    "MegapixelMNIST": ".data",
    "PatchCanvas": ".data",
    "CanvasBatch": ".data",
    "collate_canvases": ".data",
    "class_names": ".data",
    "load_digits": ".data",
    "load_image": ".data",
    "make_proxy": ".data",
    "proxy_shape": ".data",
    "Photo": ".data",
    "PhotoBatch": ".data",
    "PhotoFolder": ".data",
    "save_tiled_tiff": ".data",
    "CheckpointError": ".errors",
    "SaccadeError": ".errors",
    "TrainingDiverged": ".errors",
    "extract_glimpse": ".glimpse",
    "glimpse_boxes": ".glimpse",
    "Prediction": ".prediction",
    "infer": ".prediction",
    "boxes": ".prediction",
    "SaccadeConfig": ".config",
    "SaccadeModel": ".model",
    "CentreBiasedPrior": ".priors",
    "FixedGaussianPrior": ".priors",
    "GlimpsePrior": ".priors",
    "LearnedPrior": ".priors",
    "StandardNormalPrior": ".priors",
    "register_prior": ".priors",
    "WhereContext": ".where_priors",
    "WherePrior": ".where_priors",
    "register_where_prior": ".where_priors",
    "GlimpsePosterior": ".posterior",
    "read_posterior": ".posterior",
    "sample_posterior": ".posterior",
    "glimpse_figure": ".viz",
    "TrainConfig": ".training",
    "evaluate": ".training",
    "load": ".checkpoint",
    "predict": ".prediction",
    "for_task": ".checkpoint",
    "with_config": ".checkpoint",
    "pretrained_names": ".checkpoint",
    "train": ".training",
    "export": ".checkpoint",
    "BaselineConfig": ".baselines",
    "FullImageResNet18": ".baselines",
    "TiledResNet18": ".baselines",
    "ProxyCNN": ".baselines",
    "train_baseline": ".training",
    "GlimpseEvaluation": ".metrics",
    "evaluate_glimpses": ".metrics",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # also shadows a same-named submodule attribute (train)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
