"""Large photos: latency and peak memory of classifying one photo, streamed or decoded whole.

    nice -n 15 python benchmarks/large_photos.py --work /tmp/large-photos

writes, once, under --work: a 4000x3000 and an 8000x6000 JPEG, the 8000x6000 photo as a tiled
TIFF (256 px JPEG tiles, the layout of ``vips tiffsave --tile --compression jpeg``), and an
untrained 6-class photo model with the ``SaccadeConfig`` defaults (weights do not change the
cost). Then every case runs in a fresh process that first warms up on a 640x480 photo:

- ``saccade predict``: the CLI's path, ``describe_prediction(model, Photo(path))``: crops and
  proxy read at reduced scale, or only from the tiles under them;
- ``decoded whole``: the same prediction on ``load_image(path)``, the whole photo as a tensor;
- ``TiledResNet18``: the paper's baseline on the decoded photo (224 px tiles, Eq. 8).

"extra peak" is the growth of the process's peak resident memory over the warmed-up process,
i.e. what this photo costs; "latency" is the median of ``--repeats`` predictions after warm-up
(one torch thread, see THREADS). A second table runs the real command line,
``saccade predict CHECKPOINT PHOTO``, start to end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pyro_saccade.prediction import predict

PHOTOS = {
    "4000x3000.jpg": (4000, 3000),
    "8000x6000.jpg": (8000, 6000),
    "8000x6000-tiled.tif": (8000, 6000),
}
CLASSES = ["abstract", "animals", "man-made", "nature", "None", "people"]  # MIT-Adobe 5K's
# One torch thread everywhere: on 2 cores shared with other jobs, two threads that wait on each
# other made the same prediction ten times slower, and only the photo path should differ.
THREADS = {"OMP_NUM_THREADS": "1"}


def prepare(work: Path) -> Path:
    """Write the photos if missing and the checkpoint always; returns the checkpoint."""
    from pyro_saccade.checkpoint import save_checkpoint
    from pyro_saccade.data import save_tiled_tiff, synthetic_photo
    from pyro_saccade.model import SaccadeConfig, SaccadeModel

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "warmup.jpg").exists():
        synthetic_photo(1, 640, 480, seed=1).save(work / "warmup.jpg", quality=90)
    for name, (width, height) in PHOTOS.items():
        if not (work / name).exists():
            image = synthetic_photo(2, width, height, seed=width)
            if name.endswith(".tif"):
                save_tiled_tiff(image, work / name, compression="jpeg", quality=90)
            else:
                image.save(work / name, quality=90)
    # Rewritten every run: one kept from an older version would measure that version's model
    # (or no longer load).
    checkpoint = work / "photo-model.pt"
    config = SaccadeConfig(classes=CLASSES, task="photo", channels=3)
    save_checkpoint(checkpoint, SaccadeModel(config).eval())
    return checkpoint


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(mode: str, photo: Path, checkpoint: Path, repeats: int) -> dict:
    """Run in a child process: warm up on a small photo, then time and measure ``photo``."""
    import torch

    from pyro_saccade.baselines import TiledResNet18
    from pyro_saccade.checkpoint import load
    from pyro_saccade.cli import describe_prediction
    from pyro_saccade.data import Photo, load_image

    torch.manual_seed(0)
    torch.set_num_threads(1)  # see THREADS
    if mode == "tiled":
        model = TiledResNet18(CLASSES, task="photo", channels=3).eval()

        def run(path: Path) -> object:
            with torch.no_grad():
                return predict(model, load_image(path, channels=3)[None])

    else:
        model = load(checkpoint)

        def run(path: Path) -> object:
            image = Photo(path) if mode == "stream" else load_image(path, channels=3)
            return describe_prediction(model, image)

    run(photo.parent / "warmup.jpg")
    before = peak_mb()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(photo)
        seconds.append(time.perf_counter() - started)
    return {"latency": statistics.median(seconds), "base": before, "peak": peak_mb()}


def child(args: list[str], env: dict | None = None) -> tuple[str, float]:
    """Run a command; its stdout and its own peak resident memory in MB."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise RuntimeError(f"{' '.join(args)} failed with status {status}")
    return out, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/large-photos"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "PHOTO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkpoint = prepare(args.work)
    if args.measure:
        mode, photo = args.measure
        print(json.dumps(measure(mode, Path(photo), checkpoint, args.repeats)))
        return
    print("| photo | decoded photo (uint8 / float32) | path | latency | extra peak memory |")
    print("|---|---|---|---|---|")
    for name, (width, height) in PHOTOS.items():
        photo = args.work / name
        decoded = f"{width * height * 3 / 2**20:.0f} / {width * height * 12 / 2**20:.0f} MB"
        modes = {
            "stream": "saccade predict (streamed)",
            "full": "decoded whole",
            "tiled": "TiledResNet18 (decoded whole)",
        }
        for mode, label in modes.items():
            if mode != "stream" and name.endswith(".tif"):
                continue  # the same pixels as the 8000x6000 JPEG once decoded
            repeats = 1 if mode == "tiled" else args.repeats
            command = [sys.executable, __file__, "--work", str(args.work)]
            out, _ = child([*command, "--repeats", str(repeats), "--measure", mode, str(photo)])
            result = json.loads(out)
            extra = result["peak"] - result["base"]
            print(
                f"| {name} ({photo.stat().st_size / 2**20:.1f} MB) | {decoded} | {label} | "
                f"{result['latency']:.2f} s | {extra:.0f} MB |",
                flush=True,
            )
    print()
    print("| `saccade predict CHECKPOINT PHOTO` | wall time | peak resident memory |")
    print("|---|---|---|")
    for name in ["warmup.jpg", *PHOTOS]:
        started = time.perf_counter()
        command = ["saccade", "predict", str(checkpoint), str(args.work / name)]
        _, peak = child(command, env={**os.environ, **THREADS})
        print(f"| {name} | {time.perf_counter() - started:.1f} s | {peak:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
