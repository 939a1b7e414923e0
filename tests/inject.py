"""Faults injected into a run from outside the loop: a signal or a crash after a step, a NaN in
a step. They hook into torch (every optimiser's steps, every module's forward), not the loop."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_post_hook


class Crash(Exception):
    """Stands for a kill: nothing after it runs."""


def crash() -> None:
    raise Crash


def signal_self(sig: int) -> Callable[[], None]:
    """Send this process ``sig``, as Ctrl-C (SIGINT) or a job scheduler (SIGTERM) does."""
    return lambda: os.kill(os.getpid(), sig)


@contextmanager
def after_step(k: int, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` right after the k-th optimiser step of this process (a signal arriving,
    or a crash, while a run trains)."""
    steps = itertools.count(1)

    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        if next(steps) == k:
            action()

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class PoisonGradient(torch.autograd.Function):
    """The identity, with a NaN gradient: a finite loss whose backward pass breaks."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


def nan_output(x: torch.Tensor) -> torch.Tensor:
    return x * float("nan")


@contextmanager
def broken_step(k: int, fault: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Apply ``fault`` to the output of every network that runs in the k-th training step of
    this process: a NaN reaches the loss, or the gradients."""
    done = {"steps": 0}

    def count(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        done["steps"] += 1

    def poison(module: torch.nn.Module, args: object, output: object) -> object:
        broken = done["steps"] == k - 1 and module.training and isinstance(output, torch.Tensor)
        return fault(output) if broken else output

    handles = [register_optimizer_step_post_hook(count), register_module_forward_hook(poison)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
