"""Latency, memory and scaling of the saccade model against the resnet18 baselines and the
proxy-only CNN, in one run (the report's tables and plot: :mod:`.report`).

A measurement is one phase (building the proxy, saccade inference given the proxy, end-to-end
prediction, or a training step) of one model at one canvas size and batch size. Each runs in a
fresh process forked from a server that has imported torch and done nothing else, so no
measurement inherits another's allocations, caches or thread pools. It runs the phase once on a
tiny canvas (one-time initialisation), records the peak memory increase of the first full-size
run, then the median wall-clock and CPU time of the runs after it. Every inference phase is also
measured "cold": in another fresh process, the peak memory increase of its very first call, on
the full-size input already in memory, one-time initialisation included.

Inputs are uniform-noise image tensors, or with ``lazy`` canvases drawn from their patches
(``data.CanvasBatch``) of the dataset of the model's task, which never exist as dense tensors.

Measurements whose estimated cost (scaled from a smaller measured one of the same model and
phase) exceeds the time budget or the memory limit are skipped and say why; no estimate is ever
reported as a result.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pyro_saccade.baselines import BASELINES, CHUNK, TILE, ProxyCNN, tile_grid
from pyro_saccade.checkpoint import load, pretrained_names, resolve
from pyro_saccade.config import SaccadeConfig
from pyro_saccade.data import (
    MEGAPIXEL_TASKS,
    TASKS,
    CanvasBatch,
    MegapixelMNIST,
    TwoDigitCluttered,
    collate_canvases,
    proxies_of,
)
from pyro_saccade.data.megapixel import MIN_SIDE
from pyro_saccade.model import SaccadeModel
from pyro_saccade.prediction import predict
from pyro_saccade.training import objective

from .memory import MemoryMeter, meminfo

# saccade, resnet18, resnet18-tiled, proxy-cnn
SUBJECTS = ("saccade", *BASELINES, ProxyCNN.kind)
PHASES = {
    "saccade": ("proxy", "infer", "predict", "train"),
    "resnet18-tiled": ("infer", "train"),
    "resnet18": ("infer", "train"),
    "proxy-cnn": ("infer",),  # end to end: it builds its proxy from the image
}
# On lazy canvases: inference of the models that read only crops and proxies.
LAZY_PHASES = {"saccade": ("proxy", "infer", "predict"), "proxy-cnn": ("infer",)}
COLD_PHASES = ("infer", "predict")  # inference phases, also measured cold
# Column names of the report: what each (subject, phase) measures.
LABELS = {
    ("saccade", "proxy"): "proxy (build)",
    ("saccade", "infer"): "saccade (given proxy)",
    ("saccade", "predict"): "saccade (end to end)",
    ("resnet18-tiled", "infer"): "resnet18-tiled",
    ("resnet18", "infer"): "resnet18 (full image)",
    ("proxy-cnn", "infer"): "proxy-cnn (end to end)",
}
# Subjects whose cost barely grows with the canvas (a fixed number of crops, or a proxy): always
# measured, never skipped on an estimate.
FLAT = ("saccade", "proxy-cnn")
LAZY_DIGIT = 28  # digit side of the lazy two-digit canvases: native MNIST
PRETRAINED = "identify-100"
MB = 2**20
PRIME = 32  # side of the tiny canvas that triggers one-time initialisation before measuring


def prime_side(config: object) -> int:
    """The side of the warm-up canvas: PRIME, or the smallest image a saccade model takes
    where that is larger."""
    return max(PRIME, getattr(config, "smallest_side", 0))


# -- one measurement, in its own process ------------------------------------------------------


def saccade_model(checkpoint: str | None) -> SaccadeModel:
    """A checkpoint (file, run directory or pretrained name); an untrained model of a run's
    ``config.json`` (weights do not change the cost); or the untrained default config."""
    if not checkpoint:
        return SaccadeModel(SaccadeConfig())
    if checkpoint.endswith(".json"):
        values = json.loads(Path(checkpoint).read_text())
        return SaccadeModel(SaccadeConfig.from_dict(values.get("model", values)))
    return load(checkpoint)


def build(subject: str, checkpoint: str | None) -> torch.nn.Module:
    """The saccade model, or a baseline for its classes (the proxy CNN on its proxy)."""
    saccade = saccade_model(checkpoint)
    if subject == "saccade":
        return saccade
    config = saccade.config
    if subject == ProxyCNN.kind:
        return ProxyCNN(config.classes, config.proxy, task=config.task, channels=config.channels)
    return BASELINES[subject](config.classes, task=config.task, channels=config.channels)


def phase_step(
    phase: str,
    model: torch.nn.Module,
    images: torch.Tensor | CanvasBatch,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
) -> Callable[[], object]:
    """The function a phase times: one proxy, one prediction or one optimiser step."""
    side = getattr(model.config, "proxy_side", 32)
    is_saccade = isinstance(model, SaccadeModel)
    if phase == "proxy":
        return lambda: proxies_of(images, side)
    if phase == "infer":  # given the proxy, built here, outside what is measured
        proxies = proxies_of(images, side) if is_saccade else None
        return lambda: predict(model, images, proxies)
    if phase == "predict":
        return lambda: predict(model, images)
    if phase == "train":
        loss_fn = objective(model)

        def step() -> None:
            model.train()
            # A training step of the saccade model builds its batch's proxies, as train() does.
            batch_proxies = proxies_of(images, side) if is_saccade else None
            loss, _ = loss_fn(images, batch_proxies, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step
    raise ValueError(f"unknown phase {phase!r}")


def timed(step: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call of ``step`` (a GPU's queued work included)."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_phase(
    prime: Callable[[], object],
    step: Callable[[], object],
    device: torch.device,
    repeats: int,
    budget: float,
) -> dict:
    """Memory and time of ``step``, after ``prime`` (the same step on a tiny canvas).

    ``prime`` absorbs one-time costs (kernel selection, lazy imports, optimiser state), reported
    as ``init_mb``; ``memory_mb`` is then the peak increase of the first full-size run, which is
    also the warm-up. Up to ``repeats`` timed runs follow, stopping once another would overrun
    ``budget`` seconds in all; at least one runs. Wall-clock and CPU time are both kept: on a
    shared machine the wall clock also counts the time spent waiting for a core.
    """

    with MemoryMeter(device) as meter:
        prime()
        init = meter.increase()
    with MemoryMeter(device) as meter:
        warmup, _ = timed(step, device)
        memory = meter.increase()
    walls: list[float] = []
    cpus: list[float] = []
    while len(walls) < repeats and (not walls or warmup + sum(walls) + walls[-1] <= budget):
        wall, cpu = timed(step, device)
        walls.append(wall)
        cpus.append(cpu)
    return {
        "status": "ok",
        "latency_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "runs": len(walls),
        "times_s": [round(t, 6) for t in walls],
        "warmup_s": round(warmup, 6),
        "memory_mb": round(memory / MB, 3),
        "init_mb": round(init / MB, 3),
    }


def cold_phase(step: Callable[[], object], device: torch.device) -> dict:
    """Peak memory increase and wall-clock time of the first call of ``step`` in a process that
    has not run the model yet: one-time initialisation included; how much of the increase is
    library code paged in (``cold_file_mb``)."""
    with MemoryMeter(device) as meter:
        seconds, _ = timed(step, device)
        memory, files = meter.increase(), meter.file_increase()
    return {
        "status": "ok",
        "cold_mb": round(memory / MB, 3),
        "cold_file_mb": round(files / MB, 3),
        "first_s": round(seconds, 6),
    }


def batch_of(
    config: object, batch: int, height: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform-noise images and random labels: the slow case, as no window of the proxy is
    background enough to skip (contrast.window_medians)."""
    images = torch.rand(batch, config.channels, height, width, device=device)
    if config.multilabel:
        return images, (torch.rand(batch, config.num_classes, device=device) < 0.2).float()
    return images, torch.randint(config.num_classes, (batch,), device=device)


def lazy_batch(
    config: object, batch: int, height: int, width: int, device: torch.device
) -> tuple[CanvasBatch, torch.Tensor]:
    """Test canvases of the model's task drawn from their patches: Megapixel MNIST (50 noise
    boxes) for its tasks, else two native 28-px digits among 8 distractors."""
    if config.task in MEGAPIXEL_TASKS:
        data = MegapixelMNIST(config.task, (height, width), n=batch, split="test", lazy=True)
    elif config.task in TASKS:
        data = TwoDigitCluttered(
            config.task, (height, width), n=batch, digit_size=LAZY_DIGIT, split="test", lazy=True
        )
    else:
        raise ValueError(f"no lazy canvases for the {config.task!r} task")
    canvases, labels = collate_canvases([data[i] for i in range(batch)])
    return canvases.to(device), labels.to(device)


def lazy_side(config: object) -> int:
    """The side of the warm-up canvas in lazy mode: large enough for Megapixel MNIST's layout."""
    return max(prime_side(config), MIN_SIDE)


def measure(spec: dict) -> dict:
    """Measure one phase of one (subject, canvas, batch) cell; runs in a fresh process."""
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(spec["threads"])
    # The warm-up's tiny canvas and the random canvases are unlike the model's training images:
    # the check still runs (and is timed), its warning is noise here.
    warnings.filterwarnings("ignore", message="unlike the training images")
    device = torch.device(spec["device"])
    model = build(spec["subject"], spec["checkpoint"]).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    height, width = spec["canvas"]
    inputs = lazy_batch if spec.get("lazy") else batch_of
    # Tiny images, at most two (batch norm trains on no fewer): the prime initialises without
    # pre-allocating the batch's own buffers.
    side = lazy_side(model.config) if spec.get("lazy") else prime_side(model.config)
    small = (min(spec["batch"], 2), min(height, side), min(width, side))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)  # its state: made by the prime
    try:
        full = inputs(model.config, spec["batch"], height, width, device)
        step = phase_step(spec["phase"], model, *full, optimizer)
        if spec.get("cold"):
            return {"params": params} | cold_phase(step, device)
        tiny = inputs(model.config, *small, device)
        prime = phase_step(spec["phase"], model, *tiny, optimizer)
        return {"params": params} | time_phase(prime, step, device, spec["repeats"], spec["budget"])
    except (RuntimeError, MemoryError, ValueError) as error:
        return {"params": params, "status": "failed", "reason": _one_line(error)}


def _one_line(error: BaseException) -> str:
    return f"{error.__class__.__name__}: {' '.join(str(error).split())}"[:300]


def _child(spec: dict, connection: object) -> None:
    try:
        connection.send(measure(spec))
    except BaseException as error:  # report anything, so the parent never waits in vain
        connection.send({"status": "failed", "reason": _one_line(error)})
    finally:
        connection.close()


def _context(device: str) -> multiprocessing.context.BaseContext:
    """A clean forking server preloaded with torch and the library; plain spawn where forking
    is unavailable."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # The library's modules loaded here, not this one: the server is started without the
        # sys.path entry of benchmarks/ (Python 3.11 ignores the sys_path it is given), while
        # each measuring process is prepared with this process's sys.path and finds it.
        library = sorted(name for name in sys.modules if name.partition(".")[0] == "pyro_saccade")
        context.set_forkserver_preload(library)
        return context
    return multiprocessing.get_context("spawn")


def run_in_process(
    spec: dict, context: multiprocessing.context.BaseContext, timeout: float
) -> dict:
    """Run :func:`measure` in a fresh process; a crash or a timeout becomes a failed entry."""
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(spec, send), daemon=True)
    process.start()
    send.close()
    try:
        if receive.poll(timeout):
            return receive.recv()
        return {"status": "failed", "reason": f"no result within {timeout:.0f} s"}
    except EOFError:
        return {"status": "failed", "reason": "the measuring process died (out of memory?)"}
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        receive.close()


# -- planning: what to run, what to skip ------------------------------------------------------


def work(subject: str, phase: str, height: int, width: int, batch: int) -> tuple[float, float]:
    """Relative (time, memory) cost of a baseline cell: pixels its resnet18 reads or holds."""
    if subject == "resnet18-tiled":
        tiles = len(tile_grid(height, width, TILE))
        area = min(height, TILE) * min(width, TILE)
        held = tiles if phase == "train" else min(tiles, CHUNK)  # inference holds one chunk
        return batch * tiles * area, batch * held * area
    pixels = batch * height * width
    return pixels, pixels


def estimate(
    results: list[dict], subject: str, phase: str, canvas: tuple[int, int], batch: int
) -> dict | None:
    """Cost of a baseline measurement scaled from a cheaper measured one; None if none."""
    if subject in FLAT:
        return None  # its cost barely grows with the canvas: always measured
    time_work, memory_work = work(subject, phase, *canvas, batch)
    measured = [
        r
        for r in results
        if r["subject"] == subject
        and r["phase"] == phase
        and r["status"] == "ok"
        and work(subject, phase, *r["canvas"], r["batch"])[0] <= time_work
    ]
    if not measured:
        return None
    # The nearest cheaper measurement, at the same batch size if there is one.
    same_batch = [r for r in measured if r["batch"] == batch]
    ref = max(
        same_batch or measured, key=lambda r: work(subject, phase, *r["canvas"], r["batch"])[0]
    )
    ref_time, ref_memory = work(subject, phase, *ref["canvas"], ref["batch"])
    return {
        "seconds": max(ref["latency_s"], ref["warmup_s"]) * time_work / ref_time,
        "memory_mb": ref["memory_mb"] * memory_work / ref_memory,
        "from": f"{canvas_name(ref['canvas'])} batch {ref['batch']}",
    }


def skip_reason(
    subject: str,
    phase: str,
    canvas: tuple[int, int],
    batch: int,
    results: list[dict],
    budget: float,
    memory_limit_mb: float,
    lazy: bool = False,
) -> str | None:
    """Why a cell is not measured, or None to measure it. A lazy canvas holds only its
    patches, so its input never counts against the memory limit."""
    if subject != "saccade" and phase == "train" and batch == 1:
        return "the batch-norm head cannot train on a batch of 1"
    input_mb = 0.0 if lazy else batch * canvas[0] * canvas[1] * 4 / MB
    guess = estimate(results, subject, phase, canvas, batch)
    if guess and 2 * guess["seconds"] > budget:  # the warm-up and one timed run must fit
        return (
            f"estimated {guess['seconds']:.0f} s per run (scaled from {guess['from']}): "
            f"a warm-up and one timed run exceed the {budget:g} s budget"
        )
    need = input_mb + (guess["memory_mb"] if guess else 0.0)
    if need > memory_limit_mb:
        return (
            f"estimated {need / 1024:.1f} GB (input {input_mb / 1024:.1f} GB"
            + (f" + peak scaled from {guess['from']}" if guess else "")
            + f") exceeds the {memory_limit_mb / 1024:.1f} GB memory limit"
        )
    return None


def canvas_name(canvas: Sequence[int]) -> str:
    return f"{canvas[0]}²" if canvas[0] == canvas[1] else f"{canvas[0]}x{canvas[1]}"


# -- the whole run ----------------------------------------------------------------------------


def machine(device: str) -> dict:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "device": device,
        "niceness": os.nice(0) if hasattr(os, "nice") else None,
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1).strip()
    except (OSError, AttributeError):
        pass
    total = meminfo("MemTotal")
    if total:
        info["memory_gb"] = round(total / 2**30, 1)
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def default_memory_limit(device: str) -> float:
    """Half the memory available now, in MB: room for the machine's other work."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2 / MB
    available = meminfo("MemAvailable")
    return available / 2 / MB if available else 4096.0


def checked_checkpoint(checkpoint: str | None) -> str | None:
    """The saccade model to time, read once here rather than failing in every measuring
    process: ``checkpoint`` as given, or the pretrained identify-100 if shipped, else None (the
    untrained default config)."""
    if not checkpoint:
        return PRETRAINED if PRETRAINED in pretrained_names() else None
    if checkpoint.endswith(".json"):
        saccade_model(checkpoint)
    else:
        resolve(checkpoint)
    return checkpoint


def run_benchmark(
    sizes: Sequence[int],
    batch_sizes: Sequence[int],
    *,
    repeats: int,
    budget: float,
    memory_limit_gb: float | None,
    threads: int,
    device: str,
    checkpoint: str | None,
    seed: int = 0,
    progress: bool = True,
    lazy: bool = False,
) -> dict:
    """Measure every (model, canvas, batch) cell; returns the JSON-ready report. The saccade
    model is ``checkpoint`` (see :func:`checked_checkpoint`). With ``lazy`` only the inference
    of the saccade model and the proxy CNN, on lazy canvases (see :func:`lazy_batch`).
    ``saccade benchmark`` holds the defaults of the settings."""
    from tqdm.auto import tqdm

    if repeats < 1 or budget <= 0 or threads < 1:
        raise ValueError(
            f"need repeats >= 1, budget > 0 and threads >= 1, got {repeats}, {budget}, {threads}"
        )
    checkpoint = checked_checkpoint(checkpoint)
    started = time.perf_counter()
    limit_mb = memory_limit_gb * 1024 if memory_limit_gb else default_memory_limit(device)
    context = _context(device)
    results: list[dict] = []
    params: dict[str, int] = {}
    phases = LAZY_PHASES if lazy else PHASES
    cells = [
        (side, batch, subject, phase)
        for side in sorted(set(sizes))
        for batch in sorted(set(batch_sizes))
        for subject in phases
        for phase in phases[subject]
    ]
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    for side, batch, subject, phase in tqdm(cells, desc="benchmark", disable=not progress):
        canvas = (side, side)
        cell = {"subject": subject, "phase": phase, "canvas": canvas, "batch": batch}
        reason = skip_reason(subject, phase, canvas, batch, results, budget, limit_mb, lazy)
        if reason:
            results.append(cell | {"status": "skipped", "reason": reason})
            continue
        spec = cell | {
            "repeats": repeats,
            "budget": budget,
            "threads": threads,
            "device": device,
            "checkpoint": checkpoint,
            "seed": seed,
            "lazy": lazy,
        }
        timeout = 120 + 4 * budget
        out = run_in_process(spec, context, timeout)
        if "params" in out:
            params[subject] = out.pop("params")
        if phase in COLD_PHASES and out["status"] == "ok":
            cold = run_in_process(spec | {"cold": True}, context, timeout)
            cold.pop("params", None)
            if cold["status"] == "ok":
                out |= cold
            else:
                out["cold_failed"] = cold["reason"]
        results.append(cell | out)
    if lazy:
        inputs = "lazy test canvases of the model's task (data.CanvasBatch), never drawn"
    else:
        inputs = "uniform noise canvases (the slow case: every background window is sorted)"
    return {
        "machine": machine(device),
        "settings": {
            "sizes": sorted(set(sizes)),
            "batch_sizes": sorted(set(batch_sizes)),
            "repeats": repeats,
            "budget_s": budget,
            "threads": threads,
            "memory_limit_gb": round(limit_mb / 1024, 1),
            "device": device,
            "checkpoint": describe_checkpoint(checkpoint),
            "seed": seed,
            "lazy": lazy,
            "inputs": inputs,
        },
        "load_average": {"before": load_before, "after": os.getloadavg() if load_before else None},
        "params": params,
        "tiles": {str(s): len(tile_grid(s, s, TILE)) for s in sorted(set(sizes))},
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


def describe_checkpoint(checkpoint: str | None) -> str:
    """What the report says the saccade model was."""
    if not checkpoint:
        return "untrained default SaccadeConfig"
    if checkpoint.endswith(".json"):
        return f"untrained model of the configuration in {checkpoint}"
    return checkpoint
