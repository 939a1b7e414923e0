"""The commands that run a trained model on image files: predict, posterior and visualize."""

from __future__ import annotations

from pathlib import Path

import click

from .params import (
    DEVICE,
    IMAGES,
    SAMPLES_DEFAULT,
    SEED,
    THREADS,
    check_device,
    library_option,
    takes_checkpoint,
    use_threads,
    writable,
)


@click.command("predict")
@click.argument("checkpoint")
@IMAGES
@library_option(
    "cli.predict:describe_prediction",
    "--samples",
    type=click.IntRange(min=0),
    show_default=SAMPLES_DEFAULT,
    help="Posterior samples averaged (0: posterior-mean glimpses).",
)
@SEED
@DEVICE
@THREADS
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@takes_checkpoint
def predict_command(
    checkpoint: str,
    images: tuple[Path, ...],
    samples: int | None,
    seed: int,
    device: str,
    threads: int,
    as_json: bool,
) -> None:
    """Classify image files (JPEG, PNG, TIFF, .npy) of any size.

    Photos are read lazily: JPEGs are decoded at the reduced scale each crop needs, tiled or
    striped TIFFs only where the crops fall; other formats are decoded once.
    """
    import json

    use_threads(threads)
    model = _saccade_model(checkpoint, device)
    photos = [_open_image(path, model) for path in images]
    for path, image in zip(images, photos, strict=True):
        result = describe_prediction(model, image, samples, seed)
        if as_json:
            click.echo(json.dumps({"path": str(path), **result}))
        else:
            click.echo(f"{path}: {result['label']} (p={result['probability']:.3f})")


def describe_prediction(
    model: object, image: object, samples: int | None = None, seed: int = 0
) -> dict:
    """Label and probability (``samples`` and ``seed`` as ``prediction.infer`` takes them) and the
    posterior-mean glimpses (z and pixel boxes) of one image [C, H, W] or Photo."""
    from ..data import as_batch
    from ..glimpse import box_scale, clip_boxes
    from ..labels import predicted
    from ..prediction import boxes, shown
    from ..training.batches import prepare

    device = next(model.parameters()).device
    height, width = image.shape[-2:]
    side = model.config.proxy_side
    probs, prediction = shown(model, *prepare(as_batch([image], side), device, side), samples, seed)
    probs = probs[0]
    z = prediction.z[0, 0]  # [T, 3]
    placed = boxes(model, prediction.z, height, width, prediction.centres)[0, 0]
    scale = box_scale(placed, height, width)
    # A glimpse may reach past the border (the model reads zeros there): its box is reported
    # clipped to the image, its centre and scale as the model placed it.
    inside = clip_boxes(placed, height, width)
    label, probability = predicted(probs, model.config.classes, model.config.multilabel)
    return {
        "label": label,
        "probability": probability,
        "glimpses": [
            {
                "step": t,
                "z": [round(v, 4) for v in z[t].tolist()],
                "scale": round(float(scale[t]), 4),
                "x": round(float((box[0] + box[2]) / 2), 1),
                "y": round(float((box[1] + box[3]) / 2), 1),
                "box": [round(float(v), 1) for v in inside[t]],
                "clipped": bool((inside[t] != box).any()),
            }
            for t, box in enumerate(placed)
        ],
    }


def _saccade_model(checkpoint: str, device: str) -> object:
    """The SaccadeModel of a checkpoint; the baselines have no glimpses to show."""
    from ..checkpoint import load
    from ..model import SaccadeModel

    check_device(device)
    model = load(checkpoint, device)
    if not isinstance(model, SaccadeModel):
        raise click.BadParameter(
            f"{checkpoint} holds a {getattr(model, 'kind', 'baseline')} model, which has no "
            "glimpses",
            param_hint="CHECKPOINT",
        )
    return model


def _open_image(path: Path, model: object) -> object:
    """An image file as ``model`` reads it, a Photo on disk; an ImageError naming the file if
    the model cannot use it."""
    from ..data import ImageError, Photo

    c = model.config
    image = Photo(path, channels=c.channels)
    try:
        c.check_image(*image.shape)
    except ValueError as error:
        raise ImageError(f"{path}: {error}") from None
    return image


@click.command("posterior")
@click.argument("checkpoint")
@IMAGES
@library_option(
    "posterior:sample_posterior",
    "--samples",
    type=click.IntRange(min=1),
    help="Posterior draws (and as many prior draws) per image.",
)
@SEED
@DEVICE
@THREADS
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=writable,
    required=True,
    help="netCDF file to write (open it with ArviZ).",
)
@takes_checkpoint
def posterior_command(
    checkpoint: str,
    images: tuple[Path, ...],
    samples: int,
    seed: int,
    device: str,
    threads: int,
    out: Path,
) -> None:
    """Posterior samples of the glimpses of image files, saved as ArviZ netCDF.

    Groups: posterior (z, crop, box per image and glimpse), posterior_predictive (probs, label),
    prior and prior_predictive (the same under the prior), and observed_data when a labels.csv
    (file,label) beside the images gives every true label. A model with where=cells adds, per
    glimpse, where (the cell it chose) and maps over the cells of the guide's and the prior's
    probabilities of that choice (where_q, posterior only, and where_p). Prints a summary.
    """

    from ..labels import image_names, true_labels
    from ..posterior import sample_posterior

    use_threads(threads)
    model = _saccade_model(checkpoint, device)
    c = model.config
    photos = [_open_image(path, model) for path in images]
    labels = true_labels(images, c.classes, c.multilabel)
    result = sample_posterior(
        model, photos, samples, names=image_names(images), labels=labels, seed=seed
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_arviz().to_netcdf(str(out))
    click.echo(result.summary())
    click.echo(f"wrote {out}")


@click.command("visualize")
@click.argument("checkpoint")
@IMAGES
@library_option(
    "viz:glimpse_figure",
    "--samples",
    type=click.IntRange(min=0),
    show_default=SAMPLES_DEFAULT,
    help="Posterior samples averaged for the predicted label, as in predict (0: "
    "posterior-mean glimpses).",
)
@library_option(
    "viz:glimpse_figure",
    "--cloud",
    type=click.IntRange(min=0),
    help="Posterior draws drawn as a faint cloud of boxes behind the posterior-mean ones "
    "(0: none).",
)
@SEED
@DEVICE
@THREADS
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    callback=writable,
    required=True,
    help="Directory for the pictures (created if missing).",
)
@takes_checkpoint
def visualize_command(
    checkpoint: str,
    images: tuple[Path, ...],
    samples: int | None,
    cloud: int,
    seed: int,
    device: str,
    threads: int,
    out: Path,
) -> None:
    """Draw where the model looks: OUT/NAME_glimpses.png for each image.

    Each picture shows the image with the posterior-mean glimpses numbered in order over a faint
    cloud of sampled ones, the crops the model saw (and, where the boxes are small in the image,
    each one's neighbourhood enlarged), and the label predict gives, with the true one when a
    labels.csv (file,label) sits beside the images. Large images are shown downsampled.
    """
    from ..labels import checked_labels, labels_beside
    from ..viz import glimpse_figure

    use_threads(threads)
    model = _saccade_model(checkpoint, device)
    labels = labels_beside(images)
    checked_labels(images, model.config.classes, model.config.multilabel, labels)
    out.mkdir(parents=True, exist_ok=True)
    names = _unique_stems(images)
    for path, label, name in zip(images, labels, names, strict=True):
        image = _open_image(path, model)
        target = out / f"{name}_glimpses.png"
        figure = glimpse_figure(model, image, cloud, label, samples=samples, seed=seed)
        figure.savefig(target, dpi=100)
        click.echo(f"{path}: {target}")


def _unique_stems(paths: tuple[Path, ...]) -> list[str]:
    """A distinct name per image for its picture: the file's stem, with as many of its folders
    as tell it apart from the others (a/x.png and b/x.png: a_x and b_x), else a count."""
    keys = [path.resolve().with_suffix("").parts[1:] for path in paths]  # without the root
    depth = [1] * len(paths)
    while True:
        names = ["_".join(key[-d:]) for key, d in zip(keys, depth, strict=True)]
        owners: dict[str, set[tuple[str, ...]]] = {}
        for name, key in zip(names, keys, strict=True):
            owners.setdefault(name, set()).add(key)
        # Folders tell apart only different files: a file given twice is counted below.
        grow = [
            i for i, name in enumerate(names) if len(owners[name]) > 1 and depth[i] < len(keys[i])
        ]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # the same file twice, or x.png beside x.jpg
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique
