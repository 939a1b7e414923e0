"""How many held-out Megapixel MNIST canvases their visible digits still decide.

`MegapixelMNIST` paints the scribbles after the digits, as attention sampling's generator does,
each replacing what is under its whole 28-px box, so that a scribble can erase most of a digit.
A digit counts as visible if at least `--kept` of its ink is left; a canvas's label is decided
if the visible digits alone give it (majority: a tie of m classes counts 1/m). The share is the
accuracy of a reader that reads every visible digit right and nothing else: what a model can
reach on these canvases, whatever it reads.

python examples/visible_digits.py --task majority --n 1000 --seed 0
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from pyro_saccade.data import MegapixelMNIST, PatchCanvas
from pyro_saccade.data.megapixel import DIGITS, megapixel_label


def ink_kept(canvas: PatchCanvas) -> list[float]:
    """The share of each digit's ink that the scribbles painted after it leave."""
    kept = []
    for k in range(DIGITS):
        x0, y0, x1, y1 = canvas.boxes[k].tolist()
        ink = canvas.patches[k, : y1 - y0, : x1 - x0]
        left = ink.clone()
        for a0, b0, a1, b1 in canvas.boxes[DIGITS:].tolist():
            xa, xb, ya, yb = max(a0, x0), min(a1, x1), max(b0, y0), min(b1, y1)
            if xa < xb and ya < yb:
                left[ya - y0 : yb - y0, xa - x0 : xb - x0] = 0
        kept.append(float(left.sum() / ink.sum().clamp(min=1e-6)))
    return kept


def decided(task: str, description: dict, visible: list[int]) -> float:
    """How much of canvas's label the ``visible`` digits (indices) decide: 1, 0, or 1/m for a
    majority tied between m classes one of which is the target."""
    digits, boxes = description["digits"], description["boxes"]
    if task == "majority":
        counts = Counter(digits[k] for k in visible)
        most = max(counts.values(), default=0)
        tied = [c for c in range(10) if counts.get(c, 0) == most]
        return 1 / len(tied) if description["target"] in tied else 0.0
    if not visible:
        return 0.0
    seen = megapixel_label(
        task, [digits[k] for k in visible], [boxes[k] for k in visible], description["target"]
    )
    truth = megapixel_label(task, digits, boxes, description["target"])
    return float(torch.equal(seen, truth))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="majority", choices=("majority", "max", "top", "multi"))
    parser.add_argument("--n", type=int, default=1000, help="held-out canvases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--canvas", type=int, default=1500)
    parser.add_argument("--noise", type=int, default=50)
    parser.add_argument("--kept", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    args = parser.parse_args(argv)
    data = MegapixelMNIST(
        task=args.task,
        canvas=args.canvas,
        n=args.n,
        noise=args.noise,
        split="test",
        seed=args.seed,
        lazy=True,
    )
    totals = dict.fromkeys(args.kept, 0.0)
    for i in range(len(data)):
        kept = ink_kept(data[i][0])
        description = data.describe(i)
        for share in args.kept:
            visible = [k for k in range(DIGITS) if kept[k] >= share]
            totals[share] += decided(args.task, description, visible)
    for share, total in totals.items():
        print(
            f"{args.task}, --seed {args.seed}: digits with at least {share:.0%} of their ink left "
            f"decide {total / len(data):.1%} of {len(data)} canvases"
        )


if __name__ == "__main__":
    main()
