"""Training: a run's configuration and data, the loss, evaluation, and the loop.

- ``config``: ``TrainConfig``, how a model is trained (its task is the model's);
- ``data``: the canvases or photos of a run, each epoch's share of them, their loader;
- ``loss``: ``ELBOLoss``, the negative ELBO, and ``objective``, a model's training loss;
- ``evaluation``: ``evaluate``, accuracy on a dataset;
- ``loop``: ``train`` and ``train_baseline``, with the ``TrainState`` their checkpoints hold;
- ``batches``: what every loop over a dataset does with a batch;
- ``distributed``: several processes training one model under torchrun.

Checkpoints are ``pyro_saccade.checkpoint``'s. The names below are imported on first use, so
that the checkpoint module, which the loop imports, can import ``training.config`` without
importing the loop back.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": ".config",
    "LAZY_SIDE": ".data",
    "canvases": ".data",
    "datasets": ".data",
    "default_model_config": ".data",
    "epoch_subset": ".data",
    "loader": ".data",
    "photo_set": ".data",
    "ELBOLoss": ".loss",
    "objective": ".loss",
    "evaluate": ".evaluation",
    "METRICS": ".loop",
    "TrainState": ".loop",
    "train": ".loop",
    "train_baseline": ".loop",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
