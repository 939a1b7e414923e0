"""A clutter model on the same held-out canvases over a field another generator makes.

`MegapixelMNIST(background="clutter")` paints the ink over value noise on hashed lattices,
interpolated by cubic B-splines and standardised through the normal CDF (`data.background`).
Here the same layouts are painted over a field made another way to the same description:
octaves of Gaussian noise on grids of 60 px up to the canvas side, each upsampled bicubically
and weighted equally, their sum scaled to span the canvas's contrast (drawn in [0.2, 0.5])
about its mean (drawn in [0.25, 0.75]); the ink, black or white with even odds, is painted
with its value as alpha. A model that learned the marks, not one generator's field, reads both
alike. Prints accuracy, coverage and ECE of each.

python examples/other_clutter.py megapixel-majority-clutter --n 300 --seed 0
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from pyro_saccade import load
from pyro_saccade.data import MegapixelMNIST
from pyro_saccade.metrics import evaluate_glimpses

FINEST = 60  # px: the finest octave's grid spacing
_FIELD_KEY = 0x6F746872  # apart from every stream of the library's generator


def other_field(rng: np.random.Generator, height: int, width: int) -> torch.Tensor:
    """A smooth random field float32 [height, width]: Gaussian octaves of spacing 60 px,
    doubling up to the longer side, bicubic, equally weighted, at a random offset each; scaled
    to a contrast in [0.2, 0.5] (max - min) about a mean in [0.25, 0.75]."""
    total = torch.zeros(height, width, dtype=torch.float64)
    spacing = FINEST
    while True:
        rows, cols = height // spacing + 3, width // spacing + 3
        nodes = torch.from_numpy(rng.standard_normal((1, 1, rows, cols)))
        up = F.interpolate(nodes, size=(rows * spacing, cols * spacing), mode="bicubic")[0, 0]
        dy, dx = (int(d) for d in rng.integers(0, spacing, size=2))
        octave = up[dy : dy + height, dx : dx + width]
        total += octave / octave.std()
        if spacing >= max(height, width):
            break
        spacing *= 2
    level, contrast = rng.uniform(0.25, 0.75), rng.uniform(0.2, 0.5)
    shape = (total - total.mean()) / (total.max() - total.min())
    return (level + contrast * shape).clamp(0, 1).float()


class OtherClutter(MegapixelMNIST):
    """The black canvases' ink painted over ``other_field`` in black or white."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ink, label = super().__getitem__(i)
        rng = np.random.default_rng([self.seed, i, _FIELD_KEY])
        field = other_field(rng, *ink.shape[-2:])
        colour = float(rng.random() < 0.5)
        return torch.lerp(field, torch.tensor(colour), ink), label


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint, run directory or pretrained name")
    parser.add_argument("--n", type=int, default=300, help="held-out canvases")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load(args.model)
    common = {"task": model.config.task, "n": args.n, "split": "test", "seed": args.seed}
    for name, data in (
        ("the library's clutter", MegapixelMNIST(**common, background="clutter", lazy=True)),
        ("the other field", OtherClutter(**common)),
    ):
        result = evaluate_glimpses(
            model, data, batch_size=20, seed=args.seed, random_glimpses=False, progress=False
        )
        print(
            f"{args.model}, {name}: accuracy {result.accuracy:.1%}, "
            f"coverage {result.coverage:.1%}, ECE {result.ece:.3f}"
        )


if __name__ == "__main__":
    main()
