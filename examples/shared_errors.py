"""Which held-out canvases several models all get wrong, and how many of those hold two digits
drawn over each other: what separates recipes, and what none of them reads.

python examples/shared_errors.py identify-100 runs/ft-crop56 runs/ft-zoom-later --n 2000 --seed 1
"""

from __future__ import annotations

import argparse

import torch

from pyro_saccade import load
from pyro_saccade.data import TwoDigitCluttered
from pyro_saccade.data.cluttered import OVERLAP_SHARE
from pyro_saccade.glimpse import box_share
from pyro_saccade.prediction import predict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Errors that several models share.")
    parser.add_argument("models", nargs="+", help="checkpoints, runs or pretrained names")
    parser.add_argument("--n", type=int, default=2000, help="number of held-out canvases")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out canvases")
    args = parser.parse_args(argv)

    data = TwoDigitCluttered("identify", 100, n=args.n, split="test", seed=args.seed)
    images, labels = map(torch.stack, zip(*(data[i] for i in range(args.n)), strict=True))
    wrong = torch.stack([predict(load(m), images).argmax(-1) != labels for m in args.models])
    digits = torch.tensor([data.describe(i)["boxes"] for i in range(args.n)], dtype=torch.float)
    shares = torch.stack([box_share(first, second[None]) for first, second in digits])
    overlapping = shares > OVERLAP_SHARE  # what --overlap draws more often in training
    every, most = wrong.all(0), wrong.sum(0) > len(args.models) / 2
    for name, errors in zip(args.models, wrong.sum(1).tolist(), strict=True):
        print(f"{name}: {errors} errors on {args.n} canvases")
    print(
        f"wrong for all: {int(every.sum())}, of which {int((every & overlapping).sum())} with the "
        f"digits overlapping by more than half ({int(overlapping.sum())} such canvases)"
    )
    print(
        f"errors of a majority vote: {int(most.sum())} ({1 - float(most.float().mean()):.2%} right)"
    )


if __name__ == "__main__":
    main()
