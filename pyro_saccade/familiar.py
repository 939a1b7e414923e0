"""A one-line warning when an input is far from what a model was trained on.

A model answers any image it can crop, with confidence, even one unlike its training data (a
photo of noise, a 300x100 canvas for a 100x100 model). ``load`` records the training input as
``model.trained_on``; ``prediction.infer`` and ``posterior.sample_posterior`` call
:func:`warn_unfamiliar` on every batch.
"""

from __future__ import annotations

import math
import warnings

SIDE_FACTOR = 2.0  # warn when the image's side is more than this far from the trained one
ASPECT_FACTOR = 1.5  # ... or its aspect ratio more than this far from the trained one


def trained_on(channels: int, canvas: list[int] | None) -> tuple[int, int | None, int | None]:
    """(channels, height, width) of a model's training input; no size for photos of any size."""
    height, width = canvas if canvas else (None, None)
    return channels, height, width


def unfamiliar(
    trained: tuple[int, int | None, int | None], channels: int, height: int, width: int
) -> str | None:
    """Why an input of this shape is far from the training input, or None when it is not."""
    trained_channels, trained_height, trained_width = trained
    if channels != trained_channels:
        colour = {1: "gray", 3: "colour"}
        return (
            f"a {colour.get(channels, channels)} image for a model trained on "
            f"{colour.get(trained_channels, trained_channels)} ones (converted)"
        )
    if trained_height is None or trained_width is None or height < 1 or width < 1:
        return None
    side = math.sqrt(height * width / (trained_height * trained_width))
    aspect = (height / width) / (trained_height / trained_width)
    if max(side, 1 / side) > SIDE_FACTOR or max(aspect, 1 / aspect) > ASPECT_FACTOR:
        return (
            f"a {height}x{width} image for a model trained on {trained_height}x{trained_width} "
            "canvases"
        )
    return None


def warn_unfamiliar(model: object, images: object) -> None:
    """Warn once per batch, in one line, if an image of ``images`` (a tensor [B, C, H, W], a
    PhotoBatch or a CanvasBatch) is far from what ``model`` was trained on: its size, aspect
    ratio or (for photos, before conversion) channels. Models not loaded from a checkpoint
    carry no ``trained_on`` and are not checked."""
    trained = getattr(model, "trained_on", None)
    if trained is None:
        return
    photos = getattr(images, "photos", None)
    if photos is not None:  # a photo's own channels, before it is converted for the model
        shapes = [(photo.native_channels, photo.height, photo.width) for photo in photos]
    else:
        shapes = [tuple(images.shape[1:])]
    for shape in dict.fromkeys(shapes):
        reason = unfamiliar(trained, *shape)
        if reason:
            warnings.warn(f"{reason}: its answer may be unreliable", stacklevel=2)
            return
