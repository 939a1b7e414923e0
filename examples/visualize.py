"""Pictures of where a trained model looks (the paper's Fig. 4), one PNG per test canvas.

python examples/visualize.py                        # the checkpoint of train_identify.py
python examples/visualize.py --canvas 1000          # same model, 10x larger canvases
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro

from pyro_saccade.checkpoint import load
from pyro_saccade.data import TwoDigitCluttered
from pyro_saccade.viz import glimpse_figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw the glimpses of a trained model.")
    parser.add_argument("checkpoint", nargs="?", default="runs/examples/identify")
    parser.add_argument("--n", type=int, default=4, help="number of test canvases")
    parser.add_argument("--canvas", type=int, default=100, help="canvas side in pixels")
    parser.add_argument("--cloud", type=int, default=32, help="sampled boxes drawn faintly")
    parser.add_argument("--out", default="runs/examples/pictures")
    args = parser.parse_args(argv)

    pyro.set_rng_seed(0)
    model = load(args.checkpoint)
    test_set = TwoDigitCluttered(model.config.task, args.canvas, args.n, split="test", seed=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.n):
        image, _ = test_set[i]
        figure = glimpse_figure(model, image, args.cloud, test_set.describe(i)["label"])
        figure.savefig(out / f"canvas_{i}.png", dpi=100)
        print(out / f"canvas_{i}.png")


if __name__ == "__main__":
    main()
