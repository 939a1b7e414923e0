"""The training loop: ``train`` and ``train_baseline``.

It is Pyro's stochastic variational inference written out in torch, the pattern Pyro documents
for PyTorch-native training: ``Trace_ELBO().differentiable_loss(model, guide, ...)`` is the
negative ELBO (``loss.ELBOLoss``), and a ``torch.optim`` optimiser takes the step. Written out,
the loop gets gradient clipping, a learning-rate schedule, DistributedDataParallel and
checkpoints that load with ``weights_only=True``, which ``pyro.infer.SVI`` with Pyro's
optimiser wrappers would not give. ``_train`` reads top to bottom; the helpers below it start,
save and resume a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import pyro
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..baselines import KINDS, Baseline, ProxyCNN
from ..checkpoint import (
    CHECKPOINT,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    trained_config,
    versions,
)
from ..config import SaccadeConfig
from ..errors import CheckpointError, TrainingDiverged
from ..model import SaccadeModel
from .batches import correct, prepare
from .config import TrainConfig
from .data import datasets, default_model_config, epoch_subset, loader
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
from .evaluation import evaluate
from .loss import objective

METRICS = "metrics.jsonl"


@dataclass
class TrainState:
    """How far a run has come, saved in its checkpoint: the epochs done, the steps done in the
    next one with their sums over all processes, and the record of every epoch done (the lines
    of metrics.jsonl)."""

    epoch: int = 0
    step: int = 0
    loss: float = 0.0  # summed over the canvases seen in this epoch
    hits: int = 0
    seen: int = 0
    seconds: float = 0.0  # of training in this epoch, so that a resumed epoch counts it all
    metrics: list[dict] = field(default_factory=list)

    def add(self, loss: float, hits: float, seen: float) -> None:
        """Count a step: its loss summed over its canvases, its correct answers, its canvases."""
        self.step += 1
        self.loss += loss
        self.hits += int(hits)
        self.seen += int(seen)

    def running(self) -> dict[str, str]:
        """This epoch's mean loss and training accuracy so far, for the progress bar."""
        seen = max(self.seen, 1)
        return {"loss": f"{self.loss / seen:.1f}", "acc": f"{self.hits / seen:.3f}"}

    def end_epoch(self, record: dict) -> None:
        """Keep the epoch's record and start the next epoch's sums."""
        self.metrics.append(record)
        self.epoch, self.step, self.loss, self.hits, self.seen = self.epoch + 1, 0, 0.0, 0, 0
        self.seconds = 0.0


def train(
    model_config: SaccadeConfig | None = None,
    train_config: TrainConfig | None = None,
    out: str | Path = "runs/saccade",
    resume: bool = False,
    progress: bool = True,
    model: nn.Module | None = None,
) -> nn.Module:
    """Train a SaccadeModel on generated canvases of its task, or on photos when
    ``train_config.photos`` is set (see ``data.PhotoFolder``); returns the trained model.

    Writes ``checkpoint.pt`` (atomically, every epoch, every ``checkpoint_every`` steps if set,
    and on interrupt), ``config.json`` and ``metrics.jsonl`` under ``out``. With ``resume=True``
    it continues from ``out``'s checkpoint with its optimiser, schedule, RNG state and
    ``TrainState``, so the result equals an uninterrupted run (the configs it was saved with
    apply; those given are not used, except for the device), and starts the run from the configs
    given when ``out`` holds no checkpoint yet: the same call can be repeated after any crash.
    ``model`` (optional) starts from given weights, for fine-tuning, or is a baseline
    (``train_baseline``). A NaN or infinite loss or gradient raises ``TrainingDiverged`` before
    the weights change; Ctrl-C (SIGINT, SIGTERM) writes a checkpoint and raises
    KeyboardInterrupt.

    Under ``torchrun --nproc_per_node N`` (and ``--nnodes M``) the processes train one model
    with DistributedDataParallel: ``batch_size`` is the global batch, split evenly over them.
    """
    train_config = train_config or TrainConfig()
    with process_group(train_config.device):
        return _train(model_config, train_config, Path(out), resume, progress, model)


def _train(
    model_config: SaccadeConfig | None,
    tc: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
    model: nn.Module | None,
) -> nn.Module:
    """The body of ``train``, run by every process."""
    rank, processes = world()
    progress = progress and rank == 0
    # Start: the model, configuration and state of the checkpoint in `out`, or a new run.
    payload = checkpoint_to_resume(out) if resume else None
    if payload is not None:
        model, tc, state = resumed(payload, out)
    else:
        pyro.set_rng_seed(tc.seed + rank)  # DDP gives all rank 0's weights; the noise differs
        if model is None:  # a copy of the config: what training sets in it stays the model's
            config = model_config or default_model_config("identify", tc.photos)
            model = SaccadeModel(dataclasses.replace(config))
        state = TrainState()
        if isinstance(model, SaccadeModel) and model.config.proxy_for is None and not tc.photos:
            # A canvas of another side holds objects of the same pixel size: the proxy side
            # scales with it, from the one trained on, so that they keep their proxy size too.
            model.config.proxy_for = min(tc.canvas)
    check_run(model, tc, processes)
    # What a loaded model's inputs are compared with (familiar.py) describes its starting weights.
    model.trained_on = model.familiar = None
    if rank == 0:
        start_run_directory(out, model, tc, state.metrics)

    # The model on this process's device, the data, the optimiser and its schedule.
    device = local_device(tc.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model.to(device).train()
    loss_fn = replicate(objective(model), device)
    bfloat16 = tc.precision == "bfloat16"
    train_set, test_set = datasets(tc, model.config, progress)
    steps = steps_per_epoch(train_set, tc, processes)
    total = steps * tc.epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    schedule = LambdaLR(optimizer, lambda step: cosine(step, total, tc.lr_final))
    if payload is not None:
        restore(payload, optimizer, schedule, tc.seed)

    def save() -> None:  # collective: every process calls it at the same step
        save_run(out, model, tc, optimizer, schedule, state)

    with Interrupt() as interrupt:
        for epoch in range(state.epoch, tc.epochs):
            # seen, before: the canvases and seconds this epoch had trained before a resumption
            started, seen, before = time.perf_counter(), state.seen, state.seconds
            done = state.step * local_batch(tc)  # this process's canvases trained on already
            batches = loader(
                epoch_subset(train_set, epoch, tc.train_size, done, rank, processes, tc.batch_size),
                tc,
            )
            desc = f"epoch {epoch + 1}/{tc.epochs}"
            with tqdm(batches, desc, steps, initial=state.step, disable=not progress) as bar:
                for images, labels in bar:
                    # Forward. bfloat16 autocast runs the convolutions on a CPU's AMX or AVX-512
                    # BF16 units (a GPU's tensor cores): 1.5x the canvases per second of float32
                    # on our training machine. Weights, gradients and evaluation stay float32.
                    images, proxies = prepare(
                        images, device, model.config.proxy_side, tc.proxy_noise
                    )
                    labels = labels.to(device)
                    annealing = kl_annealing(epoch * steps + state.step, total, tc.kl_anneal)
                    with torch.autocast(device.type, torch.bfloat16, enabled=bfloat16):
                        loss, probs = loss_fn(images, proxies, labels, annealing)
                    # Backward. Checked where DDP has shared every process's gradients, so that
                    # all of them stop, before the weights change and with no checkpoint written.
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    norm = nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
                    if not (torch.isfinite(loss) and torch.isfinite(norm)):
                        raise diverged(out, loss, norm, epoch, state.step)
                    # Update.
                    optimizer.step()
                    schedule.step()
                    # Running sums over all processes' canvases, in one all-reduce with whether
                    # any process was signalled, so that all stop at the same step.
                    hits = correct(probs, labels, model.config.multilabel).sum()
                    *sums, stop = all_sum(
                        [
                            loss.item() * len(labels),
                            float(hits),
                            len(labels),
                            float(interrupt.signalled),
                        ]
                    )
                    state.add(*sums)
                    state.seconds = before + time.perf_counter() - started
                    bar.set_postfix(state.running())
                    # Stop or save, at the same step on every process. The last step of an epoch
                    # is left to the epoch's own checkpoint, written after its evaluation.
                    if stop:
                        save()
                        raise KeyboardInterrupt(f"interrupted; checkpoint saved in {out}")
                    every = tc.checkpoint_every
                    if every and state.step % every == 0 and state.step < steps:
                        save()

            # End of the epoch: equal replicas, held-out accuracy, the epoch's record, a checkpoint.
            seconds = time.perf_counter() - started
            sync_replicas(model)
            record = {
                "epoch": epoch + 1,
                "loss": state.loss / max(state.seen, 1),
                "train_accuracy": state.hits / max(state.seen, 1),
                "test_accuracy": held_out_accuracy(model, test_set, tc),
                "lr": schedule.get_last_lr()[0],
                "annealing": kl_annealing((epoch + 1) * steps - 1, total, tc.kl_anneal),
                "train_seconds": before + seconds,
                "canvases_per_second": (state.seen - seen) / seconds,
                "processes": processes,
            }
            state.end_epoch(record)
            if rank == 0:
                append_metrics(out, record)
            save()
            if progress:
                tqdm.write(epoch_line(record))
    return model.eval()


def train_baseline(
    kind: str,
    train_config: TrainConfig | None = None,
    out: str | Path = "runs/resnet18",
    resume: bool = False,
    progress: bool = True,
    model: Baseline | None = None,
    proxy: int = 32,
    task: str = "identify",
) -> Baseline:
    """Train a baseline (``baselines.KINDS``) with ``train``'s loop (data, schedule, checkpoints,
    metrics).

    ``model`` (optional) starts from given weights; ``resume`` continues ``out``'s checkpoint;
    ``proxy`` is the proxy side of a new proxy CNN (the loop builds proxies of its config's
    side); ``task`` is the task of a new baseline, whose data the run draws.
    """
    tc = train_config or TrainConfig()
    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r} (known: {', '.join(KINDS)})")
    if model is None:
        pyro.set_rng_seed(tc.seed)  # the same initial weights for the same seed
        data = default_model_config(task, tc.photos)  # the data's classes and channels
        options = {"proxy": proxy} if kind == ProxyCNN.kind else {}
        model = KINDS[kind](data.classes, task=task, channels=data.channels, **options)
    return train(train_config=tc, out=out, resume=resume, progress=progress, model=model)


# -- starting, saving and resuming a run ------------------------------------------------------


def checkpoint_to_resume(out: Path) -> dict | None:
    """The checkpoint of the run in ``out``, or None when ``out`` holds none yet."""
    path = out / CHECKPOINT
    if not path.exists():
        return None
    payload = read_checkpoint(path)
    if "train_state" not in payload:
        raise CheckpointError(f"{path}: a model without training state to resume")
    return payload


def resumed(payload: dict, out: Path) -> tuple[nn.Module, TrainConfig, TrainState]:
    """The model, configuration and state of a run's checkpoint."""
    model = model_from_checkpoint(payload, str(out / CHECKPOINT))
    return model, trained_config(payload), TrainState(**payload["train_state"])


def check_run(model: nn.Module, tc: TrainConfig, processes: int) -> None:
    """ValueError for a run that cannot start, before anything is written."""
    if tc.epochs < 1:
        raise ValueError("a run trains at least one epoch: saccade export saves a model as it is")
    if tc.batch_size % processes:
        raise ValueError(
            f"batch size {tc.batch_size} does not split evenly over {processes} processes"
        )
    if isinstance(model, SaccadeModel) and not tc.photos:
        try:
            model.config.check_image(model.config.channels, *tc.canvas)
        except ValueError as error:
            raise ValueError(f"canvas of {error}") from None


def start_run_directory(out: Path, model: nn.Module, tc: TrainConfig, metrics: list[dict]) -> None:
    """Write ``out``'s config.json, and its metrics.jsonl anew from the records of the epochs
    done: a run killed after writing an epoch's record but before its checkpoint repeats that
    epoch when resumed, and a new run starts with none."""
    out.mkdir(parents=True, exist_ok=True)
    config = {"model": model.config.to_dict(), "train": tc.to_dict(), "versions": versions()}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    path = out / METRICS
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in metrics))
    os.replace(tmp, path)


def append_metrics(out: Path, record: dict) -> None:
    with open(out / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def save_run(
    out: Path,
    model: nn.Module,
    tc: TrainConfig,
    optimizer: torch.optim.Optimizer,
    schedule: LambdaLR,
    state: TrainState,
) -> None:
    """Write the checkpoint of a run in training (collective: it gathers every process's RNG
    state, so that a resumed run draws the same noise; rank 0 writes)."""
    training = {
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "rngs": rng_states(),
        "train_state": dataclasses.asdict(state),
    }
    if world()[0] == 0:
        save_checkpoint(out / CHECKPOINT, model, tc, training)


def restore(payload: dict, optimizer: torch.optim.Optimizer, schedule: LambdaLR, seed: int) -> None:
    """Give the optimiser, the schedule and this process's RNG the checkpoint's state."""
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    rank, processes = world()
    rngs = payload["rngs"]
    if len(rngs) == processes:
        torch.set_rng_state(rngs[rank])
    else:  # resumed on another number of processes: same weights and data, new noise
        pyro.set_rng_seed(seed + rank)


SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupt:
    """SIGINT and SIGTERM turned into a request to stop between steps, so that a checkpoint
    can be written first."""

    def __init__(self) -> None:
        self.signalled = False
        self.previous: dict[int, object] = {}

    def __enter__(self) -> Interrupt:
        self.previous = {sig: signal.signal(sig, self.handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exception: object) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True


# -- steps, schedules, evaluation and reports -------------------------------------------------


def steps_per_epoch(train_set: Dataset, tc: TrainConfig, processes: int) -> int:
    """Optimiser steps in an epoch: every process takes an equal share of its canvases (or
    photos) in batches of its share of the global batch."""
    # Photos of several aspect ratios fill up each one's last batch (PhotoFolder.epoch_order).
    epoch_size = len(train_set.epoch_order(0, tc.batch_size)) if tc.photos else tc.train_size
    return math.ceil(epoch_size // processes / local_batch(tc))


def cosine(step: int, total: int, final: float) -> float:
    """Learning-rate multiplier: cosine from 1 to ``final`` over ``total`` steps, in closed form
    for torch's ``LambdaLR``: ``CosineAnnealingLR`` updates its rate recursively, which is not
    bit-identical to this and would change the learning rates of resumed and reproduced runs."""
    progress = min(step / max(total, 1), 1.0)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def kl_annealing(step: int, total: int, fraction: float) -> float:
    """The KL weight's factor at ``step``: rising linearly to 1 over ``fraction`` of ``total``."""
    return min(1.0, (step + 1) / max(fraction * total, 1))


def held_out_accuracy(model: nn.Module, test_set: Dataset, tc: TrainConfig) -> float:
    """Accuracy on the run's held-out data, with posterior-mean glimpses: the curve measures the
    policy, not the sampling."""
    model.eval()
    accuracy = evaluate(model, test_set, samples=0, noise=tc.proxy_noise, workers=tc.workers)
    model.train()
    return accuracy


def epoch_line(record: dict) -> str:
    return (
        f"epoch {record['epoch']}: loss {record['loss']:.2f}  train acc "
        f"{record['train_accuracy']:.4f}  test acc {record['test_accuracy']:.4f}"
    )


def diverged(out: Path, loss: Tensor, norm: Tensor, epoch: int, step: int) -> TrainingDiverged:
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
        f"training diverged: {what} at epoch {epoch + 1}, step {step + 1}; {kept}"
    )
