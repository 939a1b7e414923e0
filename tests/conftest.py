"""Shared test setup."""

from pathlib import Path

import pytest
import torch
from tiny import TINY

from pyro_saccade.checkpoint import save_checkpoint
from pyro_saccade.config import SaccadeConfig
from pyro_saccade.data import class_names
from pyro_saccade.model import SaccadeModel
from pyro_saccade.training import TrainConfig

# One intra-op thread: tests are small, and on a 2-core machine shared with data-loader workers
# (or anything else) OpenMP's spinning threads make them several times slower, not faster.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model saved as trained on 40x40 canvases."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model = SaccadeModel(SaccadeConfig(classes=class_names("identify"), **TINY))
    save_checkpoint(path, model, TrainConfig(canvas=[40, 40]))
    return path
