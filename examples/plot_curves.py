"""Held-out accuracy after each epoch against training wall time, for runs that continue one
another (each ``saccade train --init`` the one before), from their ``metrics.jsonl``.

    python examples/plot_curves.py --out docs/megapixel_curves.png \
        "majority=docs/runs/id28-stage1,docs/runs/megapixel-majority-reader,..." \
        "identify=docs/runs/id28-stage1,docs/runs/identify-2528-28px-reader,..."

Each argument is LABEL=RUN,RUN,...: one line, its runs in the order they were trained. The time
axis is the runs' summed ``train_seconds`` (evaluations and pauses between runs left out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve(runs: list[Path]) -> tuple[list[float], list[float], list[float]]:
    """Minutes, accuracies and the minutes at which each run after the first starts."""
    minutes, accuracies, starts, elapsed = [], [], [], 0.0
    for k, run in enumerate(runs):
        if k:
            starts.append(elapsed)
        for line in (run / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if "test_accuracy" not in record:
                continue
            elapsed += record["train_seconds"] / 60
            minutes.append(elapsed)
            accuracies.append(record["test_accuracy"])
    return minutes, accuracies, starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lines", nargs="+", help="LABEL=RUN,RUN,...")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    figure, axis = plt.subplots(figsize=(7, 4))
    for spec in args.lines:
        label, _, runs = spec.partition("=")
        minutes, accuracies, starts = curve([Path(run) for run in runs.split(",")])
        (line,) = axis.plot(minutes, accuracies, marker="o", markersize=3, label=label)
        for start in starts:
            axis.axvline(start, color=line.get_color(), linestyle=":", linewidth=0.8)
    axis.set_xlabel("training wall time, minutes (dotted: a run starts from the one before)")
    axis.set_ylabel("held-out accuracy")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
