"""Training: a run's data, the loss, evaluation, and the loop that trains a model.

The loop is Pyro's stochastic variational inference written out in torch, the pattern Pyro
documents for PyTorch-native training: ``Trace_ELBO().differentiable_loss(model, guide, ...)`` is
the negative bound of Eq. 6, and a ``torch.optim`` optimiser takes the step. Written out, the
loop gets gradient clipping, a learning-rate schedule, DistributedDataParallel and checkpoints
that load with ``weights_only=True``, which ``pyro.infer.SVI`` with Pyro's optimiser wrappers
would not give.

Checkpoints are in ``checkpoint.py``, the torch.distributed helpers in ``distributed.py``,
``TrainConfig`` in ``train_config.py`` and the per-batch helpers in ``batches.py``; their public
names can be imported from here too (``from pyro_saccade.training import load``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .baselines import KINDS, Baseline, ProxyCNN
from .batches import collate, correct, prepare
from .checkpoint import (
    CHECKPOINT,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    trained_config,
    versions,
)

# Imports ``x as x`` are not used here: they offer x to the callers of ``pyro_saccade.training``.
from .checkpoint import load as load
from .checkpoint import pretrained_names as pretrained_names
from .config import SaccadeConfig
from .data import (
    MEGAPIXEL_TASKS,
    MegapixelMNIST,
    PhotoFolder,
    TwoDigitCluttered,
    class_names,
)
from .data.photos import photo_classes, proxy_cache_dir
from .distributed import (
    all_sum,
    local_batch,
    local_device,
    process_group,
    replicate,
    rng_states,
    sync_replicas,
    world,
)
from .distributed import restarts_share_a_store as restarts_share_a_store
from .errors import CheckpointError, TrainingDiverged
from .model import SaccadeModel, Step
from .prediction import predict
from .train_config import TrainConfig

METRICS = "metrics.jsonl"
# Canvases with a longer side are cropped from their patches instead of being drawn whole.
LAZY_SIDE = 512


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


# -- the loss ---------------------------------------------------------------------------------


class ELBOLoss(nn.Module):
    """The negative ELBO of a SaccadeModel as a module, so DDP can wrap it."""

    def __init__(self, model: SaccadeModel) -> None:
        super().__init__()
        self.saccade = model
        self.elbo = Trace_ELBO()

    def forward(
        self, images: Tensor, proxies: Tensor, labels: Tensor, annealing: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """The negative ELBO per image, and the class probabilities [B, K] it found (detached,
        for the training accuracy)."""
        steps: list[Step] = []  # the guide's glimpses, which the model's replay reuses
        # The training loop reports a non-finite loss itself, as one clear error: without
        # Pyro's argument checks and its NaN warning, a NaN in the network reaches it as a NaN
        # loss rather than as an error inside a distribution.
        with warnings.catch_warnings(), pyro.validation_enabled(False):
            warnings.filterwarnings("ignore", message="Encountered NaN")
            loss = self.elbo.differentiable_loss(
                self.saccade.model, self.saccade.guide, images, proxies, labels, annealing, steps
            )
        return loss / images.shape[0], self.saccade.read(steps).detach()


def objective(model: nn.Module) -> nn.Module:
    """The training loss of a model: the negative ELBO, or a baseline's own ``loss()``."""
    return ELBOLoss(model) if isinstance(model, SaccadeModel) else model.loss()


@torch.no_grad()
def evaluate(
    model: SaccadeModel,
    dataset: Dataset,
    batch_size: int = 100,
    samples: int | None = None,
    noise: float = 0.0,
    progress: bool = False,
    workers: int = 0,
) -> float:
    """Accuracy on ``dataset`` (``samples``: as ``SaccadeModel.infer`` takes them). Under
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
        probs = predict(model, images, proxies, samples=samples)
        hits += int(correct(probs, labels.to(device), model.config.multilabel).sum())
        total += len(labels)
    hits, total = all_sum([hits, total])
    return hits / max(total, 1)


# -- training ---------------------------------------------------------------------------------


def cosine(step: int, total: int, final: float) -> float:
    """Learning-rate multiplier: cosine from 1 to ``final`` over ``total`` steps, in closed form
    for torch's ``LambdaLR``: ``CosineAnnealingLR`` updates its rate recursively, which is not
    bit-identical to this and would change the learning rates of resumed and reproduced runs."""
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
        if rank == 0:
            save_checkpoint(out / CHECKPOINT, model, tc, state)

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
                    loss, probs = loss_fn(images, proxies, labels, annealing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
                # Checked after backward, where DDP has shared every process's gradients, so
                # that all of them stop; the weights are not touched and no checkpoint written.
                if not (torch.isfinite(loss) and torch.isfinite(norm)):
                    raise diverged(out, loss, norm, epoch, position["batch"])
                optimizer.step()
                schedule.step()
                hits = correct(probs, labels, model.config.multilabel).sum()
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
            model.eval()
            # Posterior-mean glimpses: the curve measures the policy, not the sampling.
            accuracy = evaluate(
                model, test_set, samples=0, noise=tc.proxy_noise, workers=tc.workers
            )
            model.train()
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
    return model.eval()


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


def train_baseline(
    kind: str,
    train_config: TrainConfig | None = None,
    out: str | Path = "runs/resnet18",
    resume: bool = False,
    progress: bool = True,
    model: Baseline | None = None,
    proxy: int = 32,
) -> Baseline:
    """Train a baseline (``baselines.KINDS``) with ``train``'s loop (data, schedule, checkpoints,
    metrics).

    ``model`` (optional) starts from given weights; ``resume`` continues ``out``'s checkpoint;
    ``proxy`` is the proxy side of a new proxy CNN (the loop builds proxies of its config's side).
    """
    tc = train_config or TrainConfig()
    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r} (known: {', '.join(KINDS)})")
    if model is None:
        pyro.set_rng_seed(tc.seed)  # the same initial weights for the same seed
        classes = default_model_config(tc).classes
        options = {"proxy": proxy} if kind == ProxyCNN.kind else {}
        model = KINDS[kind](classes, task=tc.task, **options)
    return train(train_config=tc, out=out, resume=resume, progress=progress, model=model)
