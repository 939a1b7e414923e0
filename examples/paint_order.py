"""A Megapixel MNIST model on the same held-out canvases painted in the other order.

`MegapixelMNIST` paints the scribbles over the digits, as attention sampling's generator does;
Iterative Patch Selection's paints the digits over the scribbles. A model that learned the
digits, not one generator's quirks, reads both alike. Prints accuracy and coverage of each.

python examples/paint_order.py megapixel-top --n 300 --seed 0
"""

from __future__ import annotations

import argparse

import torch

from pyro_saccade import load
from pyro_saccade.data import MegapixelMNIST, PatchCanvas
from pyro_saccade.data.megapixel import DIGITS
from pyro_saccade.metrics import evaluate_glimpses


class DigitsOverScribbles(MegapixelMNIST):
    """The same canvases with the five digits painted last."""

    def _canvas_of(self, layout: object) -> PatchCanvas:
        canvas = super()._canvas_of(layout)
        order = list(range(DIGITS, len(canvas.patches))) + list(range(DIGITS))
        return PatchCanvas(
            canvas.height,
            canvas.width,
            canvas.patches[order],
            canvas.sides[order],
            canvas.boxes[order],
            canvas.mode,
            canvas.background,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint, run directory or pretrained name")
    parser.add_argument("--n", type=int, default=300, help="held-out canvases")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load(args.model)
    for order in (MegapixelMNIST, DigitsOverScribbles):
        data = order(task=model.config.task, n=args.n, split="test", seed=args.seed, lazy=True)
        result = evaluate_glimpses(
            model, data, batch_size=50, seed=args.seed, random_glimpses=False, progress=False
        )
        print(
            f"{args.model}, {order.__name__}: accuracy {result.accuracy:.1%}, "
            f"coverage {result.coverage:.1%}"
        )


if __name__ == "__main__":
    main()
