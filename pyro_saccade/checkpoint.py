"""Checkpoints: atomic saving, reading with ``weights_only=True``, the shipped pretrained
models, export for shipping, rebuilding the model (a SaccadeModel or a baseline) a checkpoint
holds, and a trained model's weights moved under another configuration (``with_config``,
``for_task``)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import platform
from pathlib import Path

import numpy
import pyro
import torch
from torch import Tensor

from . import __version__
from .baselines import baseline_from_config
from .config import EVIDENCE_TASKS, FORMAT_VERSION, SaccadeConfig, updated
from .errors import CheckpointError
from .familiar import PROFILE_VERSION, trained_on, with_tensors
from .model import SaccadeModel
from .training.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def versions() -> dict[str, str]:
    """The versions a checkpoint was written with, saved beside it."""
    return {
        "pyro_saccade": __version__,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def atomic_save(payload: dict, path: Path) -> None:
    """Write to a temporary file, then rename: a kill at any moment leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    path: Path,
    model: SaccadeModel,
    train_config: TrainConfig | None = None,
    state: dict | None = None,
) -> None:
    """state_dict + config JSON (+ optimiser, schedule, RNG and progress when training)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "train_config": json.dumps(dataclasses.asdict(train_config)) if train_config else "",
        "versions": json.dumps(versions()),
        "kind": getattr(model, "kind", "saccade"),
        "model": model.state_dict(),
    }
    payload.update(state or {})
    atomic_save(payload, Path(path))


def resolve(path_or_name: str | Path) -> Path:
    """A checkpoint file, a run directory holding one, or a shipped pretrained model's name."""
    path = Path(path_or_name)
    if path.is_dir():
        path = path / CHECKPOINT
    if path.exists():
        return path
    shipped = PRETRAINED_DIR / f"{path_or_name}.pt"
    if shipped.exists():
        return shipped
    names = ", ".join(sorted(pretrained_names())) or "none shipped"
    raise CheckpointError(
        f"{path_or_name}: no such checkpoint file or pretrained model (pretrained: {names})"
    )


def pretrained_names() -> list[str]:
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


# What a shipped checkpoint keeps: weights and configs, not the optimiser's state.
SHIPPED = ("format_version", "config", "train_config", "versions", "kind", "model", "familiar")


def export(
    path_or_name: str | Path,
    out: str | Path,
    changes: dict | None = None,
    data: dict | None = None,
    made_by: dict | None = None,
) -> Path:
    """Write a checkpoint's weights and configs alone (no optimiser state), for shipping.

    ``changes``: SaccadeConfig fields that keep the weights (``with_config``), such as how the
    model predicts (``evidence``, ``predict_samples``) or, with ``task``, another digit task
    (``for_task``); ``data``: TrainConfig fields, the canvases the model is for (``canvas``),
    which ``saccade evaluate`` draws by default; ``made_by``: the recipe and command that made
    it, kept as they are."""
    payload = read_checkpoint(path_or_name)
    slim = {key: payload[key] for key in (*SHIPPED, "made_by") if key in payload}
    if changes:
        model = model_from_checkpoint(payload, str(path_or_name))
        changes = dict(changes)
        model = retasked(model, changes.pop("task", model.config.task), **changes)
        slim["config"], slim["model"] = json.dumps(model.config.to_dict()), model.state_dict()
    if data:
        trained = dataclasses.replace(trained_config(payload), **data)
        slim["train_config"] = json.dumps(dataclasses.asdict(trained))
    if made_by:
        slim["made_by"] = json.dumps(made_by)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(slim, out)
    return out


def read_checkpoint(path_or_name: str | Path) -> dict:
    """Load a checkpoint dict with ``weights_only=True``, checking its format version."""
    path = resolve(path_or_name)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({error.__class__.__name__})"
        ) from error
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path}: not a pyro_saccade checkpoint")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this pyro_saccade reads "
            f"{FORMAT_VERSION}: load it with the pyro_saccade that wrote it, or train it again"
        )
    return payload


def model_from_checkpoint(payload: dict, source: str = "checkpoint") -> SaccadeModel:
    """The model a checkpoint holds: a SaccadeModel, or a baseline by its "kind"."""
    kind = payload.get("kind", "saccade")
    try:
        config = json.loads(payload["config"])
        if kind == "saccade":
            model = SaccadeModel(SaccadeConfig.from_dict(config))
        else:
            model = baseline_from_config(kind, config)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{source}: a model config that this version cannot build ({error})"
        ) from error
    weights = {**zero_terms(model, payload["model"]), **payload["model"]}
    differences = state_differences(model.state_dict(), weights)
    if differences:
        raise CheckpointError(f"{source}: weights do not match its config ({differences})")
    model.load_state_dict(weights)
    try:  # for the warning on unlike inputs (familiar.py)
        trained = trained_config(payload)
    except (ValueError, TypeError) as error:
        raise CheckpointError(
            f"{source}: a training config that this version cannot read ({error})"
        ) from error
    model.trained_on = trained_on(model.config.channels, None if trained.photos else trained.canvas)
    model.familiar = familiar_profile(payload, source)
    return model


def familiar_profile(payload: dict, source: str = "checkpoint") -> dict | None:
    """The profile of held-out canvases a checkpoint keeps for the warning on unlike inputs
    (``familiar.profile``, as JSON under ``"familiar"``); None when it keeps none, or one of a
    version this pyro_saccade does not read (then only the image's size and channels are
    checked)."""
    text = payload.get("familiar")
    if not text:
        return None
    try:
        familiar = json.loads(text)
    except (ValueError, TypeError) as error:
        raise CheckpointError(
            f"{source}: an unreadable profile of held-out canvases ({error})"
        ) from error
    if not isinstance(familiar, dict) or familiar.get("version") != PROFILE_VERSION:
        return None
    return with_tensors(familiar)


# Weights of terms that start at zero, added to a model after checkpoints were saved without
# them: such a checkpoint holds them at zero, and predicts as it did.
ZERO_TERMS = ("where.attention.place.weight",)


def zero_terms(model: torch.nn.Module, found: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``ZERO_TERMS`` that ``model`` has and the checkpoint's weights ``found`` lack, as the
    zeros they start at."""
    expected = model.state_dict()
    return {k: torch.zeros_like(expected[k]) for k in ZERO_TERMS if k in expected.keys() - found}


def state_differences(expected: dict[str, Tensor], found: dict[str, Tensor]) -> str:
    """The tensors missing from ``found``, unexpected in it or of another shape, in one line."""
    shared = expected.keys() & found.keys()
    groups = {
        "missing": expected.keys() - found.keys(),
        "unexpected": found.keys() - expected.keys(),
        "of another shape": {
            k for k in shared if tuple(expected[k].shape) != tuple(getattr(found[k], "shape", ()))
        },
    }
    return "; ".join(
        f"{len(names)} {what}: {', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''}"
        for what, names in groups.items()
        if names
    )


def trained_config(payload: dict) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with (the defaults for a bare model)."""
    text = payload.get("train_config")
    return TrainConfig.from_dict(json.loads(text)) if text else TrainConfig()


def load(path_or_name: str | Path, device: str | torch.device = "cpu") -> SaccadeModel:
    """Load a trained model (checkpoint file, run directory or pretrained name), in eval mode."""
    payload = read_checkpoint(path_or_name)
    model = model_from_checkpoint(payload, str(path_or_name))
    return model.to(device).eval()


def with_config(model: SaccadeModel, **changes: object) -> SaccadeModel:
    """A copy of a model, its prior and its weights under a config with ``changes``
    (``SaccadeConfig`` fields that leave the parameters' shapes as they are, e.g. a tighter
    ``posterior_std_max`` to fine-tune with, more glimpses, or ``where={"learn": True}``; see
    ``config.updated``). Unknown fields and changes that would drop or reshape trained weights
    raise ValueError."""
    config = updated(model.config, changes)
    moved = SaccadeModel(config, prior=copy.deepcopy(model.prior))
    weights = model.state_dict()
    expected = moved.state_dict()
    dropped = weights.keys() - expected.keys()
    if dropped:
        raise ValueError(f"{changes} would drop trained weights: {', '.join(sorted(dropped))}")
    reshaped = sorted(k for k in weights if weights[k].shape != expected[k].shape)
    if reshaped:
        raise ValueError(f"{changes} would reshape trained weights: {', '.join(reshaped[:3])}")
    moved.load_state_dict(weights, strict=False)
    return moved.to(next(model.parameters()).device).train(model.training)


def for_task(
    model: SaccadeModel, task: str, classes: list[str] | None = None, **changes: object
) -> SaccadeModel:
    """A copy of a digit model that answers another digit task: the digit evidence is shared
    by identify, sum, mark and Megapixel MNIST's tasks, only the head's combination of it
    differs, so a model that identifies digit pairs starts the sum task knowing the digits, and
    Megapixel MNIST's majority knowing how to read them. ``classes``: the task's own unless
    given; ``changes``: config changes made with the move (``with_config``), such as the
    reading the new task needs."""
    if model.config.head != "digit_pairs" or task not in EVIDENCE_TASKS:
        raise ValueError(
            f"only a digit-pair model moves between the tasks {EVIDENCE_TASKS}: this one is "
            f"a {model.config.task!r} model with a {model.config.head!r} head, asked for {task!r}"
        )
    if classes is None:
        from .training.data import default_model_config  # imports the datasets, and this module

        classes = default_model_config(task).classes
    return with_config(model, task=task, classes=list(classes), **changes)


def retasked(model: SaccadeModel, task: str, **changes: object) -> SaccadeModel:
    """``model`` answering ``task`` (``for_task``, if it answers another) with the config
    ``changes`` that keep its weights (``with_config``)."""
    if task != model.config.task:
        return for_task(model, task, **changes)
    return with_config(model, **changes) if changes else model
