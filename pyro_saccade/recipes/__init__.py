"""Recipes: how a shipped model is made, as a file a person can read and copy.

A recipe is a TOML file (the shipped ones sit beside this module, one per model) of

- ``task`` and ``start``: the task, and optionally what the first stage starts from: another
  recipe's result (its run beside this one, or the shipped model of its name, or else its run
  made first), one of its stages (``RECIPE:STAGE``, its run beside this one) or a checkpoint;
- ``[data]`` and ``[model]``: the ``TrainConfig`` and ``SaccadeConfig`` fields every stage
  shares (for a started model, changes to its config);
- ``[[stages]]``: each a ``name``, ``epochs`` and the changes it makes: ``task``, ``[data]``
  fields such as ``lr`` and ``seed``, and ``[model]`` fields such as ``where.learn``;
- ``[export]``: the settings that change only how the trained model predicts (``evidence``,
  ``predict_samples``), applied to the last stage's weights;
- ``[calibrate]`` (optional): ``n`` held-out canvases of ``seed`` that the temperature is
  fitted on (``calibration.calibrate``, as ``saccade calibrate`` does).

``run_recipe`` trains the stages one after the other into ``OUT/stages/NAME`` and exports the
model to ``OUT/checkpoint.pt``, with a config.json that names the recipe and the command that
made it. Every stage is resumable, so the same call continues a run wherever it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..calibration import calibrate
from ..checkpoint import (
    CHECKPOINT,
    export,
    load,
    model_from_checkpoint,
    read_checkpoint,
    resolve,
    retasked,
    save_checkpoint,
    trained_config,
    versions,
)
from ..config import updated
from ..errors import CheckpointError
from ..model import SaccadeModel
from ..training import TrainConfig, canvases, default_model_config, train

RECIPES_DIR = Path(__file__).parent
RECIPE_FILE = "recipe.toml"  # the copy a run keeps of the recipe it follows


@dataclass
class Stage:
    """One training run of a recipe: ``epochs`` on ``task`` (the recipe's unless given), with
    TrainConfig changes ``data`` and SaccadeConfig changes ``model``."""

    name: str
    epochs: int
    task: str | None = None
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)


@dataclass
class Recipe:
    """A model's making: stages from nothing or from ``start``, then an export."""

    name: str
    task: str
    stages: list[Stage]
    start: str | None = None
    data: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    calibrate: dict | None = None
    description: str = ""

    @classmethod
    def from_dict(cls, name: str, values: dict) -> Recipe:
        values = copy.deepcopy(values)
        stages = [Stage(**stage) for stage in values.pop("stages", [])]
        if not stages:
            raise ValueError(f"recipe {name!r} has no [[stages]]")
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"recipe {name!r}: two stages share a name ({names})")
        return cls(name=name, stages=stages, **values)

    def train_config(self, stage: Stage) -> TrainConfig:
        """The TrainConfig of ``stage``."""
        return TrainConfig.from_dict({**self.data, **stage.data, "epochs": stage.epochs})

    def task_of(self, stage: Stage) -> str:
        return stage.task or self.task


def recipe_names() -> list[str]:
    """The recipes shipped with the package."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: a path, or the name of a shipped recipe."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    raise ValueError(
        f"{name_or_path}: no such recipe file or shipped recipe (shipped: "
        f"{', '.join(recipe_names())})"
    )


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read a recipe file, or a shipped recipe by name; ValueError for one that does not
    describe a run (unknown fields, no stages)."""
    path = find_recipe(name_or_path)
    try:
        values = tomllib.loads(path.read_text())
        recipe = Recipe.from_dict(path.stem, values)
        for stage in recipe.stages:
            recipe.train_config(stage)
    except (tomllib.TOMLDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
    return recipe


def recipe_for(task: str, canvas: list[int], background: str = "black") -> str | None:
    """The shipped recipe that trains ``task`` on canvases of ``canvas`` pixels on
    ``background``, if any."""
    for name in recipe_names():
        recipe = load_recipe(name)
        data = {"background": "black", **recipe.data}
        if (recipe.task, data.get("canvas"), data["background"]) == (
            task,
            list(canvas),
            background,
        ):
            return name
    return None


def run_recipe(
    name_or_path: str | Path,
    out: str | Path,
    progress: bool = True,
    command: str | None = None,
    device: str | None = None,
) -> SaccadeModel:
    """Make the model of a recipe in ``out``: its stages, then its export to
    ``out/checkpoint.pt``; continues a run in ``out`` where it stopped (following the recipe
    it started with). ``command`` is recorded as what made the model (default: this call)."""
    out = Path(out)
    kept = out / RECIPE_FILE
    if kept.is_file():
        recipe = load_recipe(kept)
        recipe.name = json.loads((out / "recipe.json").read_text())["name"]
    else:
        source = find_recipe(name_or_path)
        recipe = load_recipe(source)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, kept)
        (out / "recipe.json").write_text(json.dumps({"name": recipe.name}))
    if (out / CHECKPOINT).is_file():
        return load(out, device or "cpu")
    model = starting_model(recipe, out, progress, device)
    last = None
    for stage in recipe.stages:
        stage_out = out / "stages" / stage.name
        tc = recipe.train_config(stage)
        if device is not None:
            tc.device = device
        model = stage_model(recipe, stage, model, last)
        model = train(model.config, tc, out=stage_out, resume=True, progress=progress, model=model)
        last = stage_out
    made_by = {"recipe": recipe.name, "command": command or f"run_recipe({recipe.name!r})"}
    export_run(recipe, last, out, made_by)
    return load(out, device or "cpu")


def starting_model(
    recipe: Recipe, out: Path, progress: bool, device: str | None
) -> SaccadeModel | None:
    """What the first stage starts from (None: a new model). ``start`` names, in this order, a
    finished run of that name beside ``out``; a checkpoint file, run directory or shipped model
    of that name (a shipped model stands for the recipe of its name); or a recipe, whose run
    beside ``out`` is made first. ``RECIPE:STAGE`` names a stage of that recipe's run beside
    ``out``, the run made first if it is not finished."""
    if recipe.start is None:
        return None
    name, _, stage = recipe.start.partition(":")
    if stage:
        beside = out.parent / name
        if not (beside / CHECKPOINT).is_file():
            run_recipe(name, beside, progress, device=device)
        made = beside / "stages" / stage
        if not (made / CHECKPOINT).is_file():
            raise ValueError(
                f"recipe {recipe.name!r}: start {recipe.start!r}: {name} has no stage {stage!r}"
            )
        return load(made, device or "cpu")
    beside = out.parent / recipe.start
    if (beside / CHECKPOINT).is_file():
        return load(beside)
    try:
        return load(resolve(recipe.start))
    except CheckpointError as error:
        if recipe.start in recipe_names():
            return run_recipe(recipe.start, beside, progress, device=device)
        raise ValueError(f"recipe {recipe.name!r}: start {recipe.start!r}: {error}") from error


def stage_model(
    recipe: Recipe, stage: Stage, previous: SaccadeModel | None, last: Path | None
) -> SaccadeModel:
    """The model a stage trains: the last stage's result, the recipe's start or a new model,
    moved to the stage's task, with the recipe's and the stage's model settings."""
    task = recipe.task_of(stage)
    model = load(last) if last is not None else previous
    changes = {**(recipe.model if last is None else {}), **stage.model}
    if model is None:
        config = default_model_config(task)
        return SaccadeModel(updated(config, {**recipe.model, **stage.model}))
    return retasked(model, task, **changes)


def export_run(recipe: Recipe, last: Path, out: Path, made_by: dict) -> None:
    """The last stage's weights under the recipe's ``export`` settings, calibrated if it says
    so, saved as ``out/checkpoint.pt`` beside a config.json that names how it was made."""
    shipped = export(last, out / CHECKPOINT, recipe.export, made_by=made_by)
    payload = read_checkpoint(shipped)
    trained = trained_config(payload)
    model = model_from_checkpoint(payload, str(shipped)).eval()
    if recipe.calibrate is not None:
        seed, n = recipe.calibrate["seed"], recipe.calibrate["n"]
        held_out = canvases(dataclasses.replace(trained, seed=seed), model.config.task, "test", n)
        fitted = calibrate(model, held_out, seed=seed)
        model = fitted.model
        extra = {"familiar": json.dumps(fitted.familiar), "made_by": json.dumps(made_by)}
        save_checkpoint(shipped, model, trained, extra)
    config = {
        "model": model.config.to_dict(),
        "train": trained.to_dict(),
        **made_by,
        "versions": versions(),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))


def describe(recipe: Recipe) -> str:
    """The recipe's stages in a few lines, for ``saccade train --recipe`` to print."""
    lines = [f"recipe {recipe.name}: {recipe.description}".rstrip(": ")]
    if recipe.start:
        lines.append(f"  starts from {recipe.start}")
    for stage in recipe.stages:
        tc = recipe.train_config(stage)
        lines.append(
            f"  {stage.name}: {recipe.task_of(stage)}, {stage.epochs} epochs of "
            f"{tc.train_size} canvases, lr {tc.lr:g}" + (f", {stage.model}" if stage.model else "")
        )
    if recipe.export:
        lines.append(f"  export: {recipe.export}")
    return "\n".join(lines)


__all__ = ["Recipe", "Stage", "describe", "load_recipe", "recipe_for", "recipe_names", "run_recipe"]
