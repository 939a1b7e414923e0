"""Labels: class names of predictions, and the true labels in a labels.csv beside images."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

LABELS_FILE = "labels.csv"


def predicted(probs: Tensor, classes: Sequence[str], multilabel: bool) -> tuple[str, float]:
    """Predicted label and its probability from class probabilities [K].

    For multi-label models the label is the classes with probability above 0.5 joined by "+",
    and the probability is the largest one.
    """
    if multilabel:
        marks = [name for name, p in zip(classes, probs.tolist(), strict=True) if p > 0.5]
        return "+".join(marks), float(probs.max())
    index = int(probs.argmax())
    return classes[index], float(probs[index])


def label_name(label: Tensor, classes: Sequence[str], multilabel: bool) -> str:
    """Name of a true label: a class index, or for mark a multi-hot vector ("3+7")."""
    if multilabel:
        return "+".join(name for name, on in zip(classes, label.tolist(), strict=True) if on)
    return classes[int(label)]


def parse_label(name: str, classes: Sequence[str], multilabel: bool) -> Tensor:
    """A label as written in labels.csv ("3-7", "10", "3+7") as a class index or multi-hot."""
    if multilabel:
        marks = name.split("+")
        if not set(marks) <= set(classes):
            raise ValueError(f"label {name!r} names classes this model does not have")
        return torch.tensor([float(c in marks) for c in classes])
    if name not in classes:
        raise ValueError(f"label {name!r} is not one of this model's classes")
    return torch.tensor(list(classes).index(name))


def labels_beside(paths: Sequence[Path]) -> list[str | None]:
    """True labels from a labels.csv (``file,label``, as ``saccade data export`` writes it) in
    each image's directory; None where there is none."""
    tables: dict[Path, dict[str, str]] = {}
    found = []
    for path in map(Path, paths):
        if path.parent not in tables:
            tables[path.parent] = _read_labels(path.parent / LABELS_FILE)
        found.append(tables[path.parent].get(path.name))
    return found


def checked_labels(
    paths: Sequence[Path],
    classes: Sequence[str],
    multilabel: bool,
    names: Sequence[str | None] | None = None,
) -> list[Tensor | None]:
    """The labels of image files from labels.csv beside them (None where there is none), as
    class indices or multi-hot; a ValueError naming the file for a label outside ``classes``.
    ``names``: the labels as ``labels_beside(paths)`` reads them, if already read."""
    labels = []
    names = labels_beside(paths) if names is None else names
    for path, name in zip(paths, names, strict=True):
        try:
            labels.append(None if name is None else parse_label(name, classes, multilabel))
        except ValueError as error:
            table = Path(path).parent / LABELS_FILE
            raise ValueError(f"{table}, {Path(path).name}: {error}") from error
    return labels


def true_labels(paths: Sequence[Path], classes: Sequence[str], multilabel: bool) -> Tensor | None:
    """The true labels of image files from labels.csv beside them, as class indices [N] (or
    multi-hot [N, K]); None unless every image has one."""
    labels = checked_labels(paths, classes, multilabel)
    return None if any(label is None for label in labels) else torch.stack(labels)


def image_names(paths: Sequence[Path]) -> list[str]:
    """File names to label images by, or the paths as given where two names are the same."""
    names = [Path(p).name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _read_labels(table: Path) -> dict[str, str]:
    if not table.is_file():
        return {}
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"file", "label"} <= set(rows[0]):
        raise ValueError(f"{table}: expected the columns file,label")
    return {row["file"]: row["label"] for row in rows}
