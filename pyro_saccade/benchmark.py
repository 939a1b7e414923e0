"""Latency, memory and scaling of the saccade model against the resnet18 baselines, in one run.

A measurement is one phase (building the proxy, saccade inference given the proxy, end-to-end
prediction, or a training step) of one model at one canvas size and batch size. Each runs in a
fresh process forked from a server that has imported torch and done nothing else, so no
measurement inherits another's allocations, caches or thread pools. It runs the phase once on a
tiny canvas (one-time initialisation), records the peak memory increase of the first full-size
run, then the median wall-clock and CPU time of the runs after it.

Measurements whose estimated cost (scaled from a smaller measured one of the same model and
phase) exceeds the time budget or the memory limit are skipped and say why; no estimate is ever
reported as a result.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .baselines import BASELINES, CHUNK, TILE, tile_grid
from .data import make_proxy
from .model import SaccadeConfig, SaccadeModel
from .training import load, objective, pretrained_names

SUBJECTS = ("saccade", *BASELINES)  # saccade, resnet18, resnet18-tiled
PHASES = {
    "saccade": ("proxy", "infer", "predict", "train"),
    "resnet18-tiled": ("infer", "train"),
    "resnet18": ("infer", "train"),
}
# Column names of the report: what each (subject, phase) measures.
LABELS = {
    ("saccade", "proxy"): "proxy (build)",
    ("saccade", "infer"): "saccade (given proxy)",
    ("saccade", "predict"): "saccade (end to end)",
    ("resnet18-tiled", "infer"): "resnet18-tiled",
    ("resnet18", "infer"): "resnet18 (full image)",
}
DEFAULT_SIZES = (100, 512, 1024, 2528, 4096)
DEFAULT_BATCH_SIZES = (1, 16)
PRETRAINED = "identify-100"
MB = 2**20
PRIME = 32  # side of the tiny canvas that triggers one-time initialisation before measuring


def prime_side(config: object) -> int:
    """The side of the warm-up canvas: PRIME, or the smallest image a saccade model takes
    where that is larger."""
    return max(PRIME, getattr(config, "smallest_side", 0))


# -- memory -----------------------------------------------------------------------------------


def _proc_status(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    peak = _proc_status("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, kB elsewhere


def _rss() -> int:
    rss = _proc_status("VmRSS")
    return rss if rss is not None else _peak_rss()


class MemoryMeter:
    """Peak memory increase of a block: RSS on CPU, the caching allocator's peak on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.start = 0

    def __enter__(self) -> MemoryMeter:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            _reset_peak_rss()
            self.start = _rss()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def increase(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.start
        return max(_peak_rss() - self.start, 0)


# -- one measurement, in its own process ------------------------------------------------------


def build(subject: str, checkpoint: str | None) -> torch.nn.Module:
    """The saccade model (pretrained or untrained default config), or a baseline for its classes."""
    saccade = load(checkpoint) if checkpoint else SaccadeModel(SaccadeConfig())
    if subject == "saccade":
        return saccade
    config = saccade.config
    return BASELINES[subject](config.classes, task=config.task, channels=config.channels)


def phase_step(
    phase: str,
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
) -> Callable[[], object]:
    """The function a phase times: one proxy, one prediction or one optimiser step."""
    side = getattr(model.config, "proxy", 32)
    is_saccade = isinstance(model, SaccadeModel)
    proxies = make_proxy(images, side) if is_saccade else None
    if phase == "proxy":
        return lambda: make_proxy(images, side)
    if phase == "infer":
        return lambda: model.predict(images, proxies)
    if phase == "predict":
        return lambda: model.predict(images)
    if phase == "train":
        loss_fn = objective(model)

        def step() -> None:
            model.train()
            # A training step of the saccade model builds its batch's proxies, as train() does.
            batch_proxies = make_proxy(images, side) if is_saccade else None
            loss = loss_fn(images, batch_proxies, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step
    raise ValueError(f"unknown phase {phase!r}")


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

    def timed() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    with MemoryMeter(device) as meter:
        prime()
        init = meter.increase()
    with MemoryMeter(device) as meter:
        warmup, _ = timed()
        memory = meter.increase()
    walls: list[float] = []
    cpus: list[float] = []
    while len(walls) < repeats and (not walls or warmup + sum(walls) + walls[-1] <= budget):
        wall, cpu = timed()
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


def batch_of(
    config: object, batch: int, height: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform-noise images and random labels: the content does not change the cost."""
    images = torch.rand(batch, config.channels, height, width, device=device)
    if config.multilabel:
        return images, (torch.rand(batch, config.num_classes, device=device) < 0.2).float()
    return images, torch.randint(config.num_classes, (batch,), device=device)


def measure(spec: dict) -> dict:
    """Measure one phase of one (subject, canvas, batch) cell; runs in a fresh process."""
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model = build(spec["subject"], spec["checkpoint"]).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    height, width = spec["canvas"]
    # Tiny images, at most two (batch norm trains on no fewer): the prime initialises without
    # pre-allocating the batch's own buffers.
    side = prime_side(model.config)
    small = (min(spec["batch"], 2), min(height, side), min(width, side))
    tiny = batch_of(model.config, *small, device)
    full = batch_of(model.config, spec["batch"], height, width, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)  # its state: made by the prime
    try:
        prime = phase_step(spec["phase"], model, *tiny, optimizer)
        step = phase_step(spec["phase"], model, *full, optimizer)
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
    """A clean forking server preloaded with torch; plain spawn where forking is unavailable."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
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
    if subject == "saccade":
        return None  # its cost does not grow with the canvas: always measured
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
        "from": f"{_canvas_name(ref['canvas'])} batch {ref['batch']}",
    }


def skip_reason(
    subject: str,
    phase: str,
    canvas: tuple[int, int],
    batch: int,
    results: list[dict],
    budget: float,
    memory_limit_mb: float,
) -> str | None:
    """Why a cell is not measured, or None to measure it."""
    if subject != "saccade" and phase == "train" and batch == 1:
        return "the batch-norm head cannot train on a batch of 1"
    input_mb = batch * canvas[0] * canvas[1] * 4 / MB
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
    total = _meminfo("MemTotal")
    if total:
        info["memory_gb"] = round(total / 2**30, 1)
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _meminfo(key: str) -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def default_memory_limit(device: str) -> float:
    """Half the memory available now, in MB: room for the machine's other work."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2 / MB
    available = _meminfo("MemAvailable")
    return available / 2 / MB if available else 4096.0


def default_checkpoint() -> str | None:
    """The pretrained identify-100 model if shipped; else None (untrained default config)."""
    return PRETRAINED if PRETRAINED in pretrained_names() else None


def run_benchmark(
    sizes: Sequence[int] = DEFAULT_SIZES,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    repeats: int = 5,
    budget: float = 30.0,
    memory_limit_gb: float | None = None,
    threads: int = 1,
    device: str = "cpu",
    checkpoint: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Measure every (model, canvas, batch) cell; returns the JSON-ready report."""
    from tqdm.auto import tqdm

    if repeats < 1 or budget <= 0 or threads < 1:
        raise ValueError(
            f"need repeats >= 1, budget > 0 and threads >= 1, got {repeats}, {budget}, {threads}"
        )
    started = time.perf_counter()
    limit_mb = memory_limit_gb * 1024 if memory_limit_gb else default_memory_limit(device)
    context = _context(device)
    results: list[dict] = []
    params: dict[str, int] = {}
    cells = [
        (side, batch, subject, phase)
        for side in sorted(set(sizes))
        for batch in sorted(set(batch_sizes))
        for subject in SUBJECTS
        for phase in PHASES[subject]
    ]
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    for side, batch, subject, phase in tqdm(cells, desc="benchmark", disable=not progress):
        canvas = (side, side)
        cell = {"subject": subject, "phase": phase, "canvas": canvas, "batch": batch}
        reason = skip_reason(subject, phase, canvas, batch, results, budget, limit_mb)
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
        }
        out = run_in_process(spec, context, timeout=120 + 4 * budget)
        if "params" in out:
            params[subject] = out.pop("params")
        results.append(cell | out)
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
            "checkpoint": checkpoint or "untrained default SaccadeConfig",
            "seed": seed,
            "inputs": "uniform noise canvases (content does not change the cost)",
        },
        "load_average": {"before": load_before, "after": os.getloadavg() if load_before else None},
        "params": params,
        "tiles": {str(s): len(tile_grid(s, s, TILE)) for s in sorted(set(sizes))},
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- the report -------------------------------------------------------------------------------


def _canvas_name(canvas: Sequence[int]) -> str:
    return f"{canvas[0]}²" if canvas[0] == canvas[1] else f"{canvas[0]}x{canvas[1]}"


def _find(report: dict, subject: str, phase: str, side: int, batch: int) -> dict | None:
    for r in report["results"]:
        if (r["subject"], r["phase"], r["canvas"][0], r["batch"]) == (subject, phase, side, batch):
            return r
    return None


def _cell(r: dict | None, key: str, repeats: int, digits: int = 3) -> str:
    if r is None:
        return "–"
    if r["status"] != "ok":
        return r["status"]
    value = f"{r[key]:.{digits}g}" if r[key] < 1000 else f"{r[key]:.0f}"
    if key == "latency_s" and r["runs"] < repeats:
        value += f" ({r['runs']}×)"
    return value


def _ratio(top: dict | None, bottom: dict | None, key: str, percent: bool = False) -> str:
    if not (top and bottom and top["status"] == bottom["status"] == "ok" and bottom[key] > 0):
        return "–"
    value = top[key] / bottom[key]
    return f"{100 * value:.2g}%" if percent else f"{value:.3g}"


def _table(
    report: dict, columns: list[tuple[str, str, str]], key: str, ratios: list, percent: bool = False
) -> list[str]:
    """One row per canvas and batch: a column per (subject, phase), then ratios of columns."""
    repeats = report["settings"]["repeats"]
    header = ["canvas", "tiles", "batch"] + [title for title, _, _ in columns]
    header += [title for title, _, _ in ratios]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for side in report["settings"]["sizes"]:
        for batch in report["settings"]["batch_sizes"]:
            row = [f"{side}²", str(report["tiles"][str(side)]), str(batch)]
            row += [_cell(_find(report, s, p, side, batch), key, repeats) for _, s, p in columns]
            for _, top, bottom in ratios:
                row.append(
                    _ratio(
                        _find(report, *top, side, batch),
                        _find(report, *bottom, side, batch),
                        key,
                        percent,
                    )
                )
            lines.append("| " + " | ".join(row) + " |")
    return lines


def headline(report: dict, side: int = 2528, batch: int = 1) -> str | None:
    """The paper's comparison at 2528², batch 1: latency and memory of saccade vs tiles."""
    tiled = _find(report, "resnet18-tiled", "infer", side, batch)
    given = _find(report, "saccade", "infer", side, batch)
    whole = _find(report, "saccade", "predict", side, batch)
    if not all(r and r["status"] == "ok" for r in (tiled, given, whole)):
        return None
    speed = tiled["latency_s"] / given["latency_s"]
    speed_cpu = tiled["cpu_s"] / given["cpu_s"]
    speed_whole = tiled["latency_s"] / whole["latency_s"]
    memory = 100 * given["memory_mb"] / max(tiled["memory_mb"], 1e-9)
    cold = [r["init_mb"] + r["memory_mb"] for r in (given, tiled)]
    return (
        f"At {side}², batch {batch}: given the proxy, the saccade model answers {speed:.0f}x "
        f"faster than resnet18 over {report['tiles'][str(side)]} tiles by the wall clock "
        f"({speed_cpu:.0f}x in CPU time; {speed_whole:.0f}x wall counting the proxy build); its "
        f"peak memory increase is {memory:.2g}% of the tiled baseline's "
        f"({given['memory_mb']:.3g} MB vs {tiled['memory_mb']:.3g} MB). Expected >= 100x and "
        f"<= 5%: {'met' if min(speed, speed_cpu) >= 100 and memory <= 5 else 'NOT met'}. "
        f"Counting one-time initialisation (the first inference in a fresh process): "
        f"{cold[0]:.3g} MB vs {cold[1]:.3g} MB, {100 * cold[0] / max(cold[1], 1e-9):.2g}%."
    )


def scaling(report: dict, batch: int = 1) -> list[str]:
    """How each inference cost grows from the smallest to the largest measured canvas."""
    lines = []
    for key, label in LABELS.items():
        rows = [
            r
            for r in report["results"]
            if (r["subject"], r["phase"]) == key and r["batch"] == batch and r["status"] == "ok"
        ]
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            pixels = (b["canvas"][0] * b["canvas"][1]) / (a["canvas"][0] * a["canvas"][1])
            lines.append(
                f"- {label}: {a['cpu_s']:.3g} s CPU at {_canvas_name(a['canvas'])}, "
                f"{b['cpu_s']:.3g} s at {_canvas_name(b['canvas'])} "
                f"(x{b['cpu_s'] / a['cpu_s']:.3g} for x{pixels:.0f} pixels)"
            )
    return lines


def markdown(report: dict) -> str:
    """The report's tables, ratios, skipped cells and machine, as Markdown."""
    s = report["settings"]
    inference = [(label, *key) for key, label in LABELS.items()]
    vs_saccade = [
        ("tiled ÷ saccade", ("resnet18-tiled", "infer"), ("saccade", "infer")),
        ("tiled ÷ saccade end to end", ("resnet18-tiled", "infer"), ("saccade", "predict")),
        ("full ÷ saccade", ("resnet18", "infer"), ("saccade", "infer")),
    ]
    memory_ratio = [
        ("saccade ÷ tiled", ("saccade", "infer"), ("resnet18-tiled", "infer")),
        ("saccade ÷ full", ("saccade", "infer"), ("resnet18", "infer")),
    ]
    training = [(subject, subject, "train") for subject in SUBJECTS]
    train_ratio = [
        ("tiled ÷ saccade", ("resnet18-tiled", "train"), ("saccade", "train")),
        ("full ÷ saccade", ("resnet18", "train"), ("saccade", "train")),
    ]
    m = report["machine"]
    load = report["load_average"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gb', '?')} GB RAM, "
        f"device {m['device']}{', ' + m['gpu'] if 'gpu' in m else ''}; torch {m['torch']}, "
        f"Python {m['python']}; niceness {m['niceness']}; load average (1, 5, 15 min) "
        f"{_load(load['before'])} before, {_load(load['after'])} after.",
        "",
        f"Settings: canvases {', '.join(map(str, s['sizes']))}; batches "
        f"{', '.join(map(str, s['batch_sizes']))}; {s['threads']} torch thread(s); median of up "
        f"to {s['repeats']} runs after one warm-up, fewer (shown as n×) where more would overrun "
        f"the {s['budget_s']:g} s per-measurement budget; memory limit {s['memory_limit_gb']} GB; "
        f"model: {s['checkpoint']}; inputs: {s['inputs']}. Total time {report['seconds']:.0f} s.",
        "",
        "Parameters: "
        + ", ".join(f"{name} {count / 1e6:.2f}M" for name, count in report["params"].items()),
        "",
    ]
    line = headline(report)
    if line:
        lines += [f"**{line}**", ""]
    init = [
        f"{LABELS.get((r['subject'], r['phase']), r['subject'])} {r['init_mb']:.1f} MB"
        for r in report["results"]
        if r["status"] == "ok"
        and r["phase"] == "infer"
        and r["batch"] == s["batch_sizes"][0]
        and r["canvas"][0] == s["sizes"][0]
    ]
    if init:
        lines += ["One-time initialisation before the first inference: " + ", ".join(init), ""]
    if scaling(report):
        lines += ["Growth with the canvas (batch 1, CPU time):", "", *scaling(report), ""]
    memory_note = (
        "peak RSS increase of the first full-size run in a fresh process"
        if m["device"] == "cpu"
        else "peak CUDA allocation of the first full-size run"
    ) + (
        f", after a warm-up on {PRIME}² images (or the saccade model's smallest image side, "
        "its crop or proxy, if larger) that absorbs one-time initialisation"
    )
    sections = [
        ("Inference latency (wall-clock seconds)", inference, "latency_s", vs_saccade, False),
        ("Inference CPU time (seconds)", inference, "cpu_s", vs_saccade, False),
        (
            f"Inference peak memory increase (MB: {memory_note})",
            inference,
            "memory_mb",
            memory_ratio,
            True,
        ),
        (
            "Training step, one Adam step (wall-clock seconds)",
            training,
            "latency_s",
            train_ratio,
            False,
        ),
        ("Training step CPU time (seconds)", training, "cpu_s", train_ratio, False),
        ("Training step peak memory increase (MB)", training, "memory_mb", [], False),
    ]
    for title, columns, key, ratios, percent in sections:
        lines += [f"### {title}", "", *_table(report, columns, key, ratios, percent), ""]
    notes = [r for r in report["results"] if r["status"] != "ok"]
    if notes:
        lines += ["### Not measured", ""]
        for r in notes:
            lines.append(
                f"- {r['subject']} {r['phase']}, {_canvas_name(r['canvas'])} batch {r['batch']}: "
                f"{r['status']}, {r['reason']}"
            )
    return "\n".join(lines) + "\n"


def _load(values: Sequence[float] | None) -> str:
    return ", ".join(f"{v:.1f}" for v in values) if values else "unknown"


def plot(report: dict, path: Path) -> None:
    """Latency and inference memory against canvas side, log-log, one line per model and batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    floor = 0.01  # MB: a memory increase below one page rounds to 0, which log axes cannot show
    styles = ["-", "--", ":", "-."]
    for key, label in LABELS.items():
        for i, batch in enumerate(report["settings"]["batch_sizes"]):
            rows = [
                r
                for r in report["results"]
                if (r["subject"], r["phase"]) == key and r["batch"] == batch and r["status"] == "ok"
            ]
            if not rows:
                continue
            sides = [r["canvas"][0] for r in rows]
            color = f"C{list(LABELS).index(key)}"
            style = dict(color=color, linestyle=styles[i % len(styles)], marker="o")
            axes[0].plot(
                sides, [r["latency_s"] for r in rows], label=f"{label}, batch {batch}", **style
            )
            axes[1].plot(sides, [max(r["memory_mb"], floor) for r in rows], **style)
    axes[0].set_ylabel("latency (s)")
    axes[1].set_ylabel(f"peak memory increase (MB, floor {floor})")
    for axis in axes:
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("canvas side (pixels)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_title("inference latency")
    axes[1].set_title("inference memory")
    figure.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(report: dict, out: Path) -> dict[str, Path]:
    """benchmark.json, benchmark.md and benchmark.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "benchmark.json",
        "md": out / "benchmark.md",
        "png": out / "benchmark.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["md"].write_text(markdown(report))
    plot(report, paths["png"])
    return paths
