"""Datasets of labelled photos of any size: :class:`PhotoFolder` (one subfolder per class, or a
CSV of ``path,label``) with its proxies cached on disk, and a synthetic test photo.

Reading one photo is in ``photo.py`` (:class:`Photo`, :class:`PhotoBatch`), TIFF tiles in
``tiff.py``; their public names can be imported from here too.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .images import ImageError
from .photo import Photo, PhotoBatch
from .proxy import ProxySide, side_of

SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".npy")
# Decoded pixels a photo of a training batch may keep between glimpses (12 MB of 8-bit RGB):
# every reduced JPEG decode a 32 px crop of a 4000x3000 photo needs, and PNGs up to 4 Mpx.
ITEM_CACHE_PIXELS = 2**22
BOXES = "boxes.csv"  # the object boxes of a photo folder or CSV (read_boxes)
CACHE_VERSION = 2  # part of every proxy-cache key: bump when proxies are computed differently


def proxy_cache_dir() -> Path | None:
    """Where training caches proxies: $PYRO_SACCADE_CACHE/proxies (empty: no cache), by default
    ~/.cache/pyro_saccade/proxies."""
    root = os.environ.get("PYRO_SACCADE_CACHE")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "pyro_saccade"
    return Path(root) / "proxies" if str(root) else None


def cached_proxy(photo: Photo, size: ProxySide, cache_dir: str | Path | None) -> Tensor:
    """``photo.proxy(size)``, stored under ``cache_dir`` keyed by the file's path, size and
    modification time (and the proxy's size and channels), so a changed file is decoded anew."""
    size = side_of(size, photo.height, photo.width)
    if cache_dir is None:
        return photo.proxy(size)
    stat = photo.path.stat()
    identity = (photo.path.resolve(), stat.st_size, stat.st_mtime_ns, size, photo.shape[0])
    key = hashlib.sha1(repr((*identity, CACHE_VERSION)).encode()).hexdigest()
    path = Path(cache_dir) / f"{key}.npy"
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError):
        pass
    proxy = photo.proxy(size)
    try:  # the cache only saves time: an unwritable cache is not an error
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, proxy.numpy())
        os.replace(tmp, path)
    except OSError:
        pass
    return proxy


def _list_folder(root: Path) -> list[tuple[Path, str]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class subfolders (expected one subfolder per class)")
    return [
        (path, folder.name)
        for folder in classes
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in SUFFIXES and not path.name.startswith(".") and path.is_file()
    ]


def _list_csv(table: Path) -> list[tuple[Path, str]]:
    with open(table, newline="") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if rows and [cell.strip().lower() for cell in rows[0]] in (
        ["path", "label"],
        ["file", "label"],
    ):
        rows = rows[1:]
    entries = []
    for number, row in enumerate(rows, 1):
        if len(row) != 2:
            raise ValueError(f"{table}: row {number} has {len(row)} fields, expected path,label")
        entries.append((table.parent / row[0].strip(), row[1].strip()))
    return entries


def read_boxes(source: str | Path) -> dict[Path, Tensor]:
    """The object boxes of a photo folder or CSV, from the ``boxes.csv`` beside the CSV (or at
    the folder's root) if there is one: rows ``file,x0,y0,x1,y1`` in pixels (exclusive ends),
    paths relative to it, one row per object that decides the photo's label (``saccade data
    export`` writes it). Per photo, boxes [D, 4]; an empty dict without the file."""
    source = Path(source)
    table = (source.parent if source.is_file() else source) / BOXES
    if not table.exists():
        return {}
    with open(table, newline="") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if rows and rows[0][0].strip().lower() in ("file", "path"):
        rows = rows[1:]
    found: dict[Path, list[list[float]]] = {}
    for number, row in enumerate(rows, 1):
        try:
            if len(row) != 5:
                raise ValueError
            box = [float(cell) for cell in row[1:]]
        except ValueError:
            raise ValueError(f"{table}: row {number} is not file,x0,y0,x1,y1") from None
        found.setdefault((table.parent / row[0].strip()).resolve(), []).append(box)
    return {path: torch.tensor(b, dtype=torch.float64) for path, b in found.items()}


def list_photos(source: str | Path) -> list[tuple[Path, str]]:
    """(path, class name) of every photo in a class-per-subfolder folder or a path,label CSV."""
    source = Path(source)
    if not source.exists():
        raise ValueError(f"{source}: no such folder or CSV file")
    entries = _list_csv(source) if source.is_file() else _list_folder(source)
    if not entries:
        raise ValueError(f"{source}: no photos ({', '.join(SUFFIXES)})")
    return entries


def photo_classes(source: str | Path) -> list[str]:
    """The sorted class names of a photo folder or CSV."""
    return sorted({label for _, label in list_photos(source)})


def split_photos(
    entries: list[tuple[Path, str]], split: str, test_fraction: float, seed: int
) -> list[tuple[Path, str]]:
    """The ``train`` or ``test`` part (or ``all``) of a seeded split stratified by class."""
    if split == "all":
        return entries
    if split not in ("train", "test"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    rng = np.random.default_rng(seed)
    test: set[int] = set()
    for label in sorted({label for _, label in entries}):
        members = [i for i, (_, other) in enumerate(entries) if other == label]
        order = rng.permutation(len(members))
        test.update(members[j] for j in order[: round(test_fraction * len(members))])
    return [entry for i, entry in enumerate(entries) if (i in test) == (split == "test")]


def checked_photo(
    path: Path, channels: int, check: Callable[[int, int, int], None] | None
) -> Photo:
    """``Photo(path, channels)``, or an ImageError if ``check`` refuses its shape."""
    photo = Photo(path, channels)
    try:
        if check is not None:
            check(*photo.shape)
    except ValueError as error:
        raise ImageError(f"{path}: {error}") from None
    return photo


class PhotoFolder(Dataset):
    """Labelled photos of any size: items are (Photo, proxy [C, J, I], class index).

    ``source`` is a folder with one subfolder per class (the MIT-Adobe 5K layout) or a CSV of
    ``path,label`` (paths relative to the CSV; a ``path,label`` or ``file,label`` header is
    skipped). ``split`` takes a seeded, class-stratified ``test_fraction`` (``test``), the rest
    (``train``) or everything (``all``). ``classes`` fixes the class order (a trained model's).
    Every proxy is computed (or read from ``cache_dir``) here, which also checks that each photo
    decodes: unreadable photos, and those that ``check(channels, height, width)`` (e.g. a model's
    ``SaccadeConfig.check_image``) refuses with a ValueError, are left out and listed in
    ``skipped`` with the reason, and one warning names them. Batch with ``collate``; photos of
    different sizes mix freely. With a ``boxes.csv`` (``read_boxes``), ``object_boxes(i)``
    gives the boxes of the objects that decide photo i's label, which the coverage of a
    model's glimpses is measured on.
    """

    def __init__(
        self,
        source: str | Path,
        split: str = "all",
        test_fraction: float = 0.2,
        seed: int = 0,
        classes: Sequence[str] | None = None,
        proxy: ProxySide = 32,
        channels: int = 3,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        check: Callable[[int, int, int], None] | None = None,
    ) -> None:
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
        entries = list_photos(source)
        self.classes = list(classes) if classes is not None else photo_classes(source)
        unknown = sorted({label for _, label in entries} - set(self.classes))
        if unknown:
            raise ValueError(f"{source}: labels {unknown} are not among the classes {self.classes}")
        self.source, self.seed, self.channels = Path(source), seed, channels
        index = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[tuple[Path, str]] = []
        proxies = []
        chosen = split_photos(entries, split, test_fraction, seed)
        for path, label in tqdm(chosen, desc=f"{split} photos", disable=not progress, leave=False):
            try:
                proxies.append(cached_proxy(checked_photo(path, channels, check), proxy, cache_dir))
            except ImageError as error:
                self.skipped.append((path, str(error)))
                continue
            self.samples.append((path, index[label]))
        if self.skipped:
            names = "; ".join(reason for _, reason in self.skipped[:10])
            more = f"; and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
            part = "" if split == "all" else f" ({split} split)"
            warnings.warn(
                f"skipped {len(self.skipped)} of {len(chosen)} photos{part} in {source} that "
                f"cannot be used: {names}{more}",
                stacklevel=2,
            )
        if not self.samples:
            raise ValueError(f"{source}: no readable photos in the {split} split")
        self.proxies = proxies  # [C, J, I] each, of the photo's shape (``proxy_shape``)
        self.boxes = read_boxes(source)

    def object_boxes(self, i: int) -> Tensor:
        """The boxes [D, 4] (x0, y0, x1, y1) of the objects that decide photo i's label; [0, 4]
        for a photo that ``boxes.csv`` does not list."""
        return self.boxes.get(self.samples[i][0].resolve(), torch.zeros(0, 4, dtype=torch.float64))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Photo, Tensor, int]:
        path, label = self.samples[i]
        return Photo(path, self.channels, ITEM_CACHE_PIXELS), self.proxies[i], label

    def epoch_order(self, epoch: int, batch: int = 1) -> list[int]:
        """Every photo once, in an order fixed by the seed and the epoch. Photos whose proxies
        differ in shape (other aspect ratios) are ordered in whole batches of ``batch`` photos
        of one shape, a shape's last batch filled up with others of its photos drawn at random,
        so that every batch's proxies stack."""
        rng = np.random.default_rng([self.seed, epoch])
        shapes: dict[tuple[int, ...], list[int]] = {}
        for i, proxy in enumerate(self.proxies):
            shapes.setdefault(tuple(proxy.shape), []).append(i)
        if len(shapes) == 1:
            return rng.permutation(len(self)).tolist()
        batches = []
        for members in shapes.values():
            order = [members[j] for j in rng.permutation(len(members))]
            short = -len(order) % batch
            order += [members[j] for j in rng.integers(0, len(members), short)]
            batches += [order[k : k + batch] for k in range(0, len(order), batch)]
        return [i for b in rng.permutation(len(batches)) for i in batches[b]]

    @staticmethod
    def collate(items: list[tuple[Photo, Tensor, int]]) -> tuple[PhotoBatch, Tensor]:
        photos, proxies, labels = zip(*items, strict=True)
        return PhotoBatch(photos, proxies), torch.tensor(labels)


def synthetic_photo(label: int, width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB test photo: a smooth random background with four small shapes whose kind is the
    class (``label % 4``: discs, squares, triangles, crosses), grain added. For tests and demos."""
    rng = np.random.default_rng(seed)
    background = Image.fromarray((rng.random((4, 5, 3)) * 200 + 28).astype(np.uint8))
    image = background.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    side = max(4, round(0.06 * min(width, height)))
    for _ in range(4):
        x, y = (
            int(rng.integers(0, max(1, width - side))),
            int(rng.integers(0, max(1, height - side))),
        )
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [x, y, x + side, y + side]
        shape = label % 4
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        elif shape == 2:
            draw.polygon([(x, y + side), (x + side // 2, y), (x + side, y + side)], fill=colour)
        else:
            draw.line([(x, y), (x + side, y + side)], fill=colour, width=max(1, side // 5))
            draw.line([(x, y + side), (x + side, y)], fill=colour, width=max(1, side // 5))
    pixels = np.array(image)
    for top in range(0, height, 512):  # grain, in bands to keep memory small on huge photos
        band = pixels[top : top + 512].astype(np.int16)
        band += rng.integers(-6, 7, band.shape[:2] + (1,), dtype=np.int16)
        pixels[top : top + 512] = band.clip(0, 255)
    return Image.fromarray(pixels)
