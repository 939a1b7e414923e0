"""Training, evaluation, checkpoints and prediction.

The loop is Pyro's stochastic variational inference written out in torch, the pattern Pyro
documents for PyTorch-native training: ``Trace_ELBO().differentiable_loss(model, guide, ...)`` is
the negative bound of Eq. 6, and a ``torch.optim`` optimiser takes the step. Written out, the
loop gets gradient clipping, a learning-rate schedule, DistributedDataParallel and checkpoints
that load with ``weights_only=True``, which ``pyro.infer.SVI`` with Pyro's optimiser wrappers
would not give.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
import torch.distributed as dist
from pyro.infer import Trace_ELBO
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .config import FORMAT_VERSION, SaccadeConfig
from .data import (
    MEGAPIXEL_TASKS,
    MegapixelMNIST,
    PhotoBatch,
    PhotoFolder,
    TwoDigitCluttered,
    class_names,
    proxies_of,
)
from .data.photos import photo_classes, proxy_cache_dir
from .errors import CheckpointError, TrainingDiverged
from .familiar import trained_on
from .model import SaccadeModel

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
PRECISIONS = ("float32", "bfloat16")
# Canvases with a longer side are cropped from their patches instead of being drawn whole.
LAZY_SIDE = 512


@dataclass
class TrainConfig:
    """How a model is trained: data, schedule, optimiser, device."""

    task: str = "identify"  # identify | sum | mark (two digits) | majority | max | top | multi
    canvas: list[int] = field(default_factory=lambda: [100, 100])  # height, width
    distractors: int = 8
    noise: int = 50  # Megapixel MNIST tasks: line-pair noise boxes per canvas
    digit_size: int | None = None
    augment: bool = False  # warp every training digit at random (TwoDigitCluttered's augment)
    overlap: float = 0.0  # share of training canvases with one digit over the other
    source: str = "bundled"  # MNIST digits (data.load_digits): bundled | bundled+5k | ...
    photos: str | None = None  # train on photos: a folder with a subfolder per class, or a CSV
    photo_test: str | None = None  # held-out photos [default: test_fraction of `photos`]
    test_fraction: float = 0.2
    proxy_noise: float = 0.0
    epochs: int = 20
    train_size: int = 20000  # fresh canvases every epoch
    test_size: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    lr_final: float = 0.05  # cosine decay to lr * lr_final
    kl_anneal: float = 0.1  # fraction of training over which the KL weight rises from 0
    clip_norm: float = 10.0
    ema: float = 0.0  # decay of a moving average of the weights, evaluated and saved; 0: off
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    eval_samples: int = 0  # 0: posterior-mean glimpses
    precision: str = "float32"  # float32 | bfloat16: the training loss under torch.autocast
    checkpoint_every: int = 0  # also checkpoint every this many steps in an epoch; 0: at its end

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 0, f"epochs must be non-negative, got {self.epochs}"),
            (self.train_size >= 1, f"train_size must be positive, got {self.train_size}"),
            (self.test_size >= 1, f"test_size must be positive, got {self.test_size}"),
            (self.batch_size >= 1, f"batch_size must be positive, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (0 <= self.ema < 1, f"ema must lie in [0, 1), got {self.ema}"),
            (0 <= self.overlap <= 1, f"overlap must lie in [0, 1], got {self.overlap}"),
            (self.proxy_noise >= 0, f"proxy_noise must be non-negative, got {self.proxy_noise}"),
            (self.workers >= 0, f"workers must be non-negative, got {self.workers}"),
            (
                self.checkpoint_every >= 0,
                f"checkpoint_every must be non-negative, got {self.checkpoint_every}",
            ),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {PRECISIONS}, got {self.precision!r}",
            ),
            (
                0 <= self.test_fraction < 1,
                f"test_fraction must lie in [0, 1), got {self.test_fraction}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# -- data -------------------------------------------------------------------------------------


def canvases(config: TrainConfig, split: str, n: int) -> TwoDigitCluttered | MegapixelMNIST:
    """The generated canvases of a split; test canvases come from held-out digits only, and are
    never augmented or overlapped by choice. Large canvases are lazy: the model crops them from
    their digits and patches, never drawing them whole."""
    training = split == "train"
    lazy = max(config.canvas) > LAZY_SIDE
    if config.task in MEGAPIXEL_TASKS:
        return MegapixelMNIST(
            task=config.task,
            canvas=tuple(config.canvas),
            n=n,
            noise=config.noise,
            split=split,
            seed=config.seed,
            source=config.source,
            lazy=lazy,
        )
    return TwoDigitCluttered(
        task=config.task,
        canvas=tuple(config.canvas),
        n=n,
        distractors=config.distractors,
        digit_size=config.digit_size,
        split=split,
        seed=config.seed,
        source=config.source,
        augment=config.augment and training,
        overlap=config.overlap if training else 0.0,
        lazy=lazy,
    )


def photo_set(
    config: TrainConfig, model_config: SaccadeConfig, split: str, progress: bool = False
) -> PhotoFolder:
    """The training or held-out photos of a run, read with the model's classes and proxy size."""
    held_out = split == "test" and config.photo_test
    return PhotoFolder(
        config.photo_test if held_out else config.photos,
        split="all" if config.photo_test else split,
        test_fraction=config.test_fraction,
        seed=config.seed,
        classes=model_config.classes,
        proxy=model_config.proxy,
        channels=model_config.channels,
        cache_dir=proxy_cache_dir(),
        progress=progress,
        check=model_config.check_image,
    )


def datasets(
    config: TrainConfig, model_config: SaccadeConfig, progress: bool = False
) -> tuple[Dataset, Dataset]:
    """Training and held-out data: fresh canvases for every epoch, or photos on disk."""
    if config.photos:
        return (
            photo_set(config, model_config, "train", progress),
            photo_set(config, model_config, "test", progress),
        )
    train_set = canvases(config, "train", config.train_size * max(config.epochs, 1))
    return train_set, canvases(config, "test", config.test_size)


def default_model_config(config: TrainConfig) -> SaccadeConfig:
    """The model for a run's data: the task's classes, or the photos' classes in colour."""
    if config.photos:
        return SaccadeConfig(classes=photo_classes(config.photos), task="photo", channels=3)
    if config.task in MEGAPIXEL_TASKS:
        return SaccadeConfig(classes=[str(k) for k in range(10)], task=config.task)
    return SaccadeConfig(classes=class_names(config.task), task=config.task)


def epoch_subset(dataset: Dataset, epoch: int, size: int, start: int = 0) -> Subset:
    """Canvases ``epoch * size ...``: every epoch sees new ones, reproducibly. Photos: all of
    them every epoch, in a new seeded order. With several processes each takes every
    world-size-th item from its rank on, so no two see the same canvas and a global batch of B is
    the next B items; ``start`` skips that many of this process's share."""
    rank, processes = world()
    order = (
        dataset.epoch_order(epoch)
        if isinstance(dataset, PhotoFolder)
        else range(epoch * size, (epoch + 1) * size)
    )
    usable = len(order) // processes * processes  # equal shares: every process steps alike
    return Subset(dataset, order[rank:usable:processes][start:])


def collate(dataset: Dataset) -> Callable | None:
    """The dataset's own batching (photos of any size make a PhotoBatch), or torch's default."""
    return getattr(dataset.dataset if isinstance(dataset, Subset) else dataset, "collate", None)


def loader(dataset: Dataset, config: TrainConfig) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=local_batch(config),
        shuffle=False,
        num_workers=config.workers,
        persistent_workers=False,
        collate_fn=collate(dataset),
        worker_init_fn=ignore_interrupts,
        # Its own generator: the loader draws a seed from it for every pass, which would
        # otherwise shift the global RNG by one draw in a run resumed in mid-epoch.
        generator=torch.Generator().manual_seed(config.seed),
    )


def ignore_interrupts(worker: int) -> None:
    """Data-loader workers leave Ctrl-C to the main process, which saves a checkpoint first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def prepare(
    images: Tensor | PhotoBatch, device: torch.device, proxy: int, noise: float = 0.0
) -> tuple[Tensor | PhotoBatch, Tensor]:
    """Move a batch to ``device`` and build its proxies there (photos bring theirs)."""
    if isinstance(images, Tensor):
        images = images.to(device, non_blocking=True)
    else:  # photos on disk, canvases made of patches
        images = images.to(device)
    return images, proxies_of(images, proxy, noise)


# -- the loss ---------------------------------------------------------------------------------


class ELBOLoss(nn.Module):
    """The negative ELBO of a SaccadeModel as a module, so DDP can wrap it."""

    def __init__(self, model: SaccadeModel) -> None:
        super().__init__()
        self.saccade = model
        self.elbo = Trace_ELBO()

    def forward(
        self, images: Tensor, proxies: Tensor, labels: Tensor, annealing: float = 1.0
    ) -> Tensor:
        # The training loop reports a non-finite loss itself, as one clear error: without
        # Pyro's argument checks and its NaN warning, a NaN in the network reaches it as a NaN
        # loss rather than as an error inside a distribution.
        with warnings.catch_warnings(), pyro.validation_enabled(False):
            warnings.filterwarnings("ignore", message="Encountered NaN")
            loss = self.elbo.differentiable_loss(
                self.saccade.model, self.saccade.guide, images, proxies, labels, annealing
            )
        return loss / images.shape[0]


def objective(model: nn.Module) -> nn.Module:
    """The training loss of a model: the negative ELBO, or a baseline's own ``loss()``."""
    return ELBOLoss(model) if isinstance(model, SaccadeModel) else model.loss()


def correct(probs: Tensor, labels: Tensor, multilabel: bool) -> Tensor:
    """Per-image correctness: argmax, or every mark right for multi-label."""
    if multilabel:
        return ((probs > 0.5) == labels.bool()).all(-1)
    return probs.argmax(-1) == labels


@torch.no_grad()
def evaluate(
    model: SaccadeModel,
    dataset: Dataset,
    batch_size: int = 100,
    samples: int = 0,
    noise: float = 0.0,
    progress: bool = False,
    workers: int = 0,
) -> float:
    """Accuracy on ``dataset`` (posterior-mean glimpses unless ``samples`` > 0). Under
    torch.distributed every process evaluates its share and the counts are summed: call it on
    every process."""
    device = next(model.parameters()).device
    hits, total = 0, 0
    rank, processes = world()
    if processes > 1:
        dataset = Subset(dataset, range(rank, len(dataset), processes))
    batches = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate(dataset),
        worker_init_fn=ignore_interrupts,
    )
    for images, labels in tqdm(batches, desc="evaluate", disable=not progress, leave=False):
        images, proxies = prepare(images, device, model.config.proxy, noise)
        probs = model.predict(images, proxies, samples=samples)
        hits += int(correct(probs, labels.to(device), model.config.multilabel).sum())
        total += len(labels)
    hits, total = all_sum([hits, total])
    return hits / max(total, 1)


# -- checkpoints ------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import numpy

    from . import __version__

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


def export(path_or_name: str | Path, out: str | Path) -> Path:
    """Write a checkpoint's weights and configs alone (no optimiser state), for shipping."""
    payload = read_checkpoint(path_or_name)
    slim = {
        key: payload[key]
        for key in ("format_version", "config", "train_config", "versions", "kind", "model")
        if key in payload
    }
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
            f"{path}: checkpoint format version {version}, this pyro_saccade reads {FORMAT_VERSION}"
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
            from .baselines import baseline_from_config

            model = baseline_from_config(kind, config)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{source}: a model config that this version cannot build ({error})"
        ) from error
    differences = state_differences(model.state_dict(), payload["model"])
    if differences:
        raise CheckpointError(f"{source}: weights do not match its config ({differences})")
    model.load_state_dict(payload["model"])
    trained = trained_config(payload)  # for the warning on unlike inputs (familiar.py)
    model.trained_on = trained_on(model.config.channels, None if trained.photos else trained.canvas)
    return model


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
    return TrainConfig(**json.loads(text)) if text else TrainConfig()


def load(path_or_name: str | Path, device: str | torch.device = "cpu") -> SaccadeModel:
    """Load a trained model (checkpoint file, run directory or pretrained name), in eval mode."""
    payload = read_checkpoint(path_or_name)
    model = model_from_checkpoint(payload, str(path_or_name))
    return model.to(device).eval()


# -- several processes (torchrun) -------------------------------------------------------------


def world() -> tuple[int, int]:
    """(rank, number of processes): (0, 1) unless torch.distributed is set up."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_batch(config: TrainConfig) -> int:
    """This process's share of the global batch ``config.batch_size``."""
    return config.batch_size // world()[1]


def local_device(device: str) -> torch.device:
    """``cuda`` means this process's own GPU, ``cuda:LOCAL_RANK``, when torchrun starts it."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return resolved


@contextmanager
def process_group(device: str) -> Iterator[None]:
    """Join the job torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...)
    for the block: nccl for CUDA, gloo for the CPU. A no-op in a single process, or when the
    caller has set up torch.distributed itself."""
    joined = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if joined and restarts_share_a_store() and os.environ.get("RANK") == "0":
        warnings.warn(
            "torchrun --max-restarts shares its store with the workers, and a restart can then "
            "fail to connect or hang on the keys of the attempt before (pytorch/pytorch#135712): "
            "run torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
            stacklevel=2,
        )
    if joined:
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(local_device(device))
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield
        if joined:
            # Leave together: a process that tears down gloo while its peer still has work in
            # flight can make the peer abort at exit (SIGABRT) after a run that succeeded.
            dist.barrier()
    finally:
        if joined:
            dist.destroy_process_group()
            let_collectives_finish()


def restarts_share_a_store() -> bool:
    """Whether torchrun may restart this process (``--max-restarts``) while its workers share the
    agent's store: that store outlives an attempt, keys and all."""
    return (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
    )


def let_collectives_finish(seconds: float = 0.1) -> None:
    """Give up the GIL for a moment so that gloo's worker threads can drop the tensors of the
    last collectives while the interpreter still runs.

    DDP keeps the process group, and with it gloo's worker threads, alive until the process ends.
    A worker that frees a tensor Python has let go of must take the GIL; if the interpreter is
    already shutting down, CPython ends that thread inside a C++ destructor and the process aborts
    (SIGABRT, "terminate called without an active exception") after a run that succeeded. Under
    load that happened in 2 of 20 two-process runs without this pause.
    """
    time.sleep(seconds)


def all_sum(values: list[float]) -> list[float]:
    """Numbers summed over all processes (a collective: every process must call it)."""
    if world()[1] == 1:
        return values
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else None
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def replicate(loss: nn.Module, device: torch.device) -> nn.Module:
    """The loss module under DistributedDataParallel when several processes train: every replica
    starts from rank 0's weights, and backward averages the gradients over processes."""
    if world()[1] == 1:
        return loss
    # Some configurations leave a parameter out of the loss (the Gaussian proxy scale under the
    # Bernoulli likelihood), which DDP must be told to expect.
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(loss, device_ids=ids, find_unused_parameters=True)


def sync_replicas(model: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics, which each process updates on
    its own data), then raise unless all hold bit-identical parameters (collective). DDP keeps
    them equal by construction; this catches any rank-dependent step that lets them drift."""
    processes = world()[1]
    if processes == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, 0)
    mine = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    first = mine.clone()
    dist.broadcast(first, 0)
    matching = all_sum([float(torch.equal(mine, first))])[0]
    if matching < processes:
        raise RuntimeError(
            f"model replicas diverged: {processes - int(matching)} of {processes} processes hold "
            "parameters different from rank 0's"
        )


def rng_states() -> list[Tensor]:
    """Every process's torch RNG state in rank order (collective)."""
    state = torch.get_rng_state()
    if world()[1] == 1:
        return [state]
    states: list = [None] * world()[1]
    dist.all_gather_object(states, state)
    return states


# -- training ---------------------------------------------------------------------------------


def moving_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights (and buffers), updated by
    ``update_parameters(model)`` after each step. The decay warms up as (1 + n) / (10 + n), so the
    first averages are not dominated by the initial weights."""

    @torch.no_grad()
    def average(averaged: list[Tensor], current: list[Tensor], steps: Tensor) -> None:
        weight = 1 - min(decay, (1 + int(steps)) / (10 + int(steps)))
        for mean, now in zip(averaged, current, strict=True):
            if mean.is_floating_point():
                mean.lerp_(now, weight)
            else:  # constant buffers (masks) are copied
                mean.copy_(now)

    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)


def cosine(step: int, total: int, final: float) -> float:
    """Learning-rate multiplier: cosine from 1 to ``final`` over ``total`` steps."""
    progress = min(step / max(total, 1), 1.0)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


@contextmanager
def interrupt_flag() -> Iterator[dict]:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so a checkpoint can be written."""
    flag = {"stop": False}

    def handler(signum: int, frame: object) -> None:
        flag["stop"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def kl_annealing(step: int, total: int, fraction: float) -> float:
    """The KL weight's factor at ``step``: rising linearly to 1 over ``fraction`` of ``total``."""
    return min(1.0, (step + 1) / max(fraction * total, 1))


def log_metrics(out: Path, record: dict) -> None:
    with open(out / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def trim_metrics(out: Path, epochs: int) -> None:
    """Keep the records of the first ``epochs`` epochs only: a run killed after writing an
    epoch's record but before its checkpoint repeats that epoch when resumed."""
    path = out / METRICS
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["epoch"] <= epochs:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):  # a line cut short by the kill
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def train(
    model_config: SaccadeConfig | None = None,
    train_config: TrainConfig | None = None,
    out: str | Path = "runs/saccade",
    resume: bool = False,
    progress: bool = True,
    model: SaccadeModel | None = None,
) -> SaccadeModel:
    """Train a SaccadeModel on generated two-digit canvases, or on photos when
    ``train_config.photos`` is set (see ``data.PhotoFolder``); returns the trained model.

    Writes ``checkpoint.pt`` (atomically, every epoch, every ``checkpoint_every`` steps if set,
    and on interrupt), ``config.json`` and ``metrics.jsonl`` under ``out``. With ``resume=True``
    it continues from ``out``'s checkpoint with its optimiser, schedule, RNG state and position,
    so the result equals an uninterrupted run (the configs it was saved with apply; those given
    are not used, except for the device), and starts the run from the configs given when ``out``
    holds no checkpoint yet: the same call can be repeated after any crash.
    ``model`` (optional) starts from given weights, for fine-tuning. A NaN or infinite loss or
    gradient raises ``TrainingDiverged`` before the weights change; Ctrl-C (SIGINT, SIGTERM)
    writes a checkpoint and raises KeyboardInterrupt.

    Under ``torchrun --nproc_per_node N`` (and ``--nnodes M``) the processes train one model
    with DistributedDataParallel: ``batch_size`` is the global batch, split evenly over them.
    """
    with process_group((train_config or TrainConfig()).device):
        return _train(model_config, train_config, out, resume, progress, model)


def _train(
    model_config: SaccadeConfig | None,
    train_config: TrainConfig | None,
    out: str | Path,
    resume: bool,
    progress: bool,
    model: SaccadeModel | None,
) -> SaccadeModel:
    """The body of ``train``, run by every process."""
    out = Path(out)
    tc = train_config or TrainConfig()
    rank, processes = world()
    progress = progress and rank == 0
    position = {"epoch": 0, "batch": 0, "sums": [0.0, 0.0, 0.0]}
    payload = read_checkpoint(out / CHECKPOINT) if resume and (out / CHECKPOINT).exists() else None
    if payload is not None:
        if "position" not in payload:
            raise CheckpointError(f"{out / CHECKPOINT}: a model without training state to resume")
        model = model_from_checkpoint(payload, str(out / CHECKPOINT))
        tc = trained_config(payload)
        position = json.loads(payload["position"])
    else:
        # DDP gives every process rank 0's initial weights; the noise must differ by process.
        pyro.set_rng_seed(tc.seed + rank)
        if model is None:
            model = SaccadeModel(model_config or default_model_config(tc))
    averaged = moving_average(model, tc.ema) if tc.ema else None
    if averaged is not None and payload is not None:
        # The checkpoint's model is the average: the weights being trained resume from their own.
        model.load_state_dict(payload["training_weights"])
        averaged.n_averaged.fill_(payload["averaged_steps"])
    if tc.batch_size % processes:
        raise ValueError(
            f"batch size {tc.batch_size} does not split evenly over {processes} processes"
        )
    if isinstance(model, SaccadeModel) and not tc.photos:
        try:
            model.config.check_image(model.config.channels, *tc.canvas)
        except ValueError as error:
            raise ValueError(f"canvas of {error}") from None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        config = {"model": model.config.to_dict(), "train": dataclasses.asdict(tc)}
        (out / "config.json").write_text(json.dumps({**config, "versions": versions()}, indent=2))
        trim_metrics(out, position["epoch"])  # a new run starts them anew

    device = local_device(tc.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model.to(device).train()
    if averaged is not None:
        averaged.to(device)
    # What is evaluated after each epoch and saved as the model: the average when there is one.
    result = model if averaged is None else averaged.module
    loss_fn = replicate(objective(model), device)
    bfloat16 = tc.precision == "bfloat16"
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    train_set, test_set = datasets(tc, model.config, progress)
    epoch_size = len(train_set) if tc.photos else tc.train_size
    steps_per_epoch = math.ceil(epoch_size // processes / local_batch(tc))
    total = steps_per_epoch * tc.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine(step, total, tc.lr_final)
    )
    if payload is not None:
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["schedule"])
        rngs = payload["rngs"]
        if len(rngs) == processes:
            torch.set_rng_state(rngs[rank])
        else:  # resumed on another number of processes: same weights and data, new noise
            pyro.set_rng_seed(tc.seed + rank)

    def checkpoint() -> None:
        state = {
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rngs": rng_states(),  # every process's, so a resumed run draws the same noise
            "position": json.dumps(position),
        }
        if averaged is not None:
            state["training_weights"] = model.state_dict()
            state["averaged_steps"] = int(averaged.n_averaged)
        if rank == 0:
            save_checkpoint(out / CHECKPOINT, result, tc, state)

    with interrupt_flag() as flag:
        for epoch in range(position["epoch"], tc.epochs):
            started, seen = time.perf_counter(), position["sums"][2]  # seen before an interrupt
            subset = epoch_subset(
                train_set, epoch, tc.train_size, position["batch"] * local_batch(tc)
            )
            bar = tqdm(
                loader(subset, tc),
                desc=f"epoch {epoch + 1}/{tc.epochs}",
                total=steps_per_epoch,
                initial=position["batch"],
                disable=not progress,
            )
            for images, labels in bar:
                step = epoch * steps_per_epoch + position["batch"]
                annealing = kl_annealing(step, total, tc.kl_anneal)
                images, proxies = prepare(images, device, model.config.proxy, tc.proxy_noise)
                labels = labels.to(device)
                # bfloat16 autocast runs the convolutions on a CPU's AMX / AVX-512 BF16 units (a
                # GPU's tensor cores): 1.5x the canvases per second of float32 on our training
                # machine. The weights, their gradients, the optimiser and evaluation stay float32.
                with torch.autocast(device.type, torch.bfloat16, enabled=bfloat16):
                    loss = loss_fn(images, proxies, labels, annealing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
                # Checked after backward, where DDP has shared every process's gradients, so
                # that all of them stop; the weights are not touched and no checkpoint written.
                if not (torch.isfinite(loss) and torch.isfinite(norm)):
                    raise diverged(out, loss, norm, epoch, position["batch"])
                optimizer.step()
                schedule.step()
                if averaged is not None:
                    averaged.update_parameters(model)
                hits = correct(model.last_probs, labels, model.config.multilabel).sum()
                # Summed over processes, which also agree to stop together if any was signalled.
                *batch_sums, stop = all_sum(
                    [loss.item() * len(labels), float(hits), len(labels), float(flag["stop"])]
                )
                sums = position["sums"]
                for i, value in enumerate(batch_sums):
                    sums[i] += value
                position["batch"] += 1
                bar.set_postfix(loss=f"{sums[0] / sums[2]:.1f}", acc=f"{sums[1] / sums[2]:.3f}")
                if stop:
                    checkpoint()
                    bar.close()
                    raise KeyboardInterrupt(f"interrupted; checkpoint saved in {out}")
                # The same step on every process, as checkpoint() is collective. The last step
                # of an epoch is left to the epoch's own checkpoint, written after evaluation.
                every = tc.checkpoint_every
                if every and position["batch"] % every == 0 and position["batch"] < steps_per_epoch:
                    checkpoint()
            bar.close()
            seconds = time.perf_counter() - started
            sync_replicas(model)
            result.eval()
            accuracy = evaluate(result, test_set, noise=tc.proxy_noise, workers=tc.workers)
            result.train()
            sums = position["sums"]
            record = {
                "epoch": epoch + 1,
                "loss": sums[0] / max(sums[2], 1),
                "train_accuracy": sums[1] / max(sums[2], 1),
                "test_accuracy": accuracy,
                "lr": schedule.get_last_lr()[0],
                "annealing": kl_annealing((epoch + 1) * steps_per_epoch - 1, total, tc.kl_anneal),
                "train_seconds": seconds,
                "canvases_per_second": (sums[2] - seen) / seconds,
                "processes": processes,
            }
            position = {"epoch": epoch + 1, "batch": 0, "sums": [0.0, 0.0, 0.0]}
            if rank == 0:
                log_metrics(out, record)
            checkpoint()
            if progress:
                tqdm.write(
                    f"epoch {epoch + 1}: loss {record['loss']:.2f}  train acc "
                    f"{record['train_accuracy']:.4f}  test acc {accuracy:.4f}"
                )
        if tc.epochs == 0:  # a model saved as it starts: moved to another task, or re-read
            checkpoint()
    return result.eval()


def diverged(out: Path, loss: Tensor, norm: Tensor, epoch: int, batch: int) -> TrainingDiverged:
    """The error that stops a run whose loss or gradient is no longer finite."""
    what = (
        f"loss became {loss.item()}"
        if not torch.isfinite(loss)
        else f"gradient norm became {norm.item()}"
    )
    kept = (
        f"the last good checkpoint, {out / CHECKPOINT}, was kept"
        if (out / CHECKPOINT).exists()
        else "no checkpoint had been written yet"
    )
    return TrainingDiverged(
        f"training diverged: {what} at epoch {epoch + 1}, step {batch + 1}; {kept}"
    )


def predict(
    model: SaccadeModel | str | Path,
    images: Tensor,
    samples: int = 0,
) -> Tensor:
    """Class probabilities for images [B, C, H, W] (or one [C, H, W]) from a model or checkpoint."""
    if isinstance(model, (str, Path)):
        model = load(model)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    device = next(model.parameters()).device
    return model.predict(images.to(device), samples=samples)
