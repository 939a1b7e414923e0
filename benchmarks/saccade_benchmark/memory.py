"""Process memory as the benchmark measures it: peak resident memory (Linux ``/proc``, with
``getrusage`` elsewhere), the CUDA allocator's peak, and the machine's memory. psutil reports
the current resident memory but neither its peak on Linux (VmHWM) nor a way to reset it."""

from __future__ import annotations

import gc
import re
import resource
import sys
from pathlib import Path

import torch


def _kb_field(path: str, key: str) -> int | None:
    """A ``kB`` field of a /proc file in bytes, or None off Linux."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _proc_status(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None off Linux."""
    return _kb_field("/proc/self/status", key)


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
    """Peak memory increase of a block: RSS on CPU, the caching allocator's peak on CUDA.

    On CPU it also tracks the growth of file-backed resident pages (``file_increase``): library
    code read from disk on first use, shared with other processes and reclaimable.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.start = 0
        self.file_start = 0

    def __enter__(self) -> MemoryMeter:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            _reset_peak_rss()
            self.start = _rss()
            self.file_start = _proc_status("RssFile") or 0
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def increase(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.start
        return max(_peak_rss() - self.start, 0)

    def file_increase(self) -> int:
        if self.cuda:
            return 0
        return max((_proc_status("RssFile") or 0) - self.file_start, 0)


def meminfo(key: str) -> int | None:
    """A ``kB`` field of /proc/meminfo in bytes, or None off Linux."""
    return _kb_field("/proc/meminfo", key)
