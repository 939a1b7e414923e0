"""Several processes training one model (torchrun): joining the process group, each process's
share of the batch and its device, collectives, and checks that the replicas stay equal."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .config import TrainConfig


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
