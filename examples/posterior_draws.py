"""Accuracy against the number of posterior draws averaged per canvas.

``saccade evaluate NAME --samples S`` averages the class probabilities of S glimpse sequences
drawn from q(z | c). This script draws S once per canvas and reports every power of two up to S
from the same draws (the first 1, 2, 4, ... of them), beside the posterior-mean glimpses, so the
rows differ only by how many draws are averaged. The canvases are those of ``saccade evaluate``
with the same ``--seed`` and ``--n``; the draws are not, so a row can differ from that command's
by a few canvases.

python examples/posterior_draws.py sum-100 --n 2000 --samples 64 --seed 1
"""

from __future__ import annotations

import argparse

import pyro
import torch
from tqdm import tqdm

from pyro_saccade import load
from pyro_saccade.data import TwoDigitCluttered, proxies_of
from pyro_saccade.prediction import predict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Accuracy against posterior draws averaged.")
    parser.add_argument("checkpoint", nargs="?", default="sum-100")
    parser.add_argument("--n", type=int, default=400, help="number of held-out canvases")
    parser.add_argument("--samples", type=int, default=16, help="most draws averaged")
    parser.add_argument("--seed", type=int, default=0, help="seed of the canvases and draws")
    parser.add_argument("--canvas", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)

    model = load(args.checkpoint)
    data = TwoDigitCluttered(model.config.task, args.canvas, n=args.n, split="test", seed=args.seed)
    pyro.set_rng_seed(args.seed)
    means, draws, labels = [], [], []
    for start in tqdm(range(0, args.n, args.batch_size), desc="batches", leave=False):
        batch = [data[i] for i in range(start, min(start + args.batch_size, args.n))]
        images = torch.stack([image for image, _ in batch])
        labels.append(torch.stack([label for _, label in batch]))
        proxies = proxies_of(images, model.config.proxy_side)  # once, not once per draw
        means.append(predict(model, images, proxies))
        # One draw per call, so that every prefix of the draws is an S-draw average.
        draws.append(
            torch.stack(
                [predict(model, images, proxies, samples=1, seed=s) for s in range(args.samples)]
            )
        )
    target, draws = torch.cat(labels), torch.cat(draws, 1)  # draws: [S, N, K]

    def accuracy(probs: torch.Tensor) -> float:
        return float((probs.argmax(-1) == target).float().mean())

    print(f"{args.checkpoint}, {args.n} held-out canvases (seed {args.seed})")
    print(f"posterior-mean glimpses: {accuracy(torch.cat(means)):.4f}")
    count = 1
    while count <= args.samples:
        print(f"{count:>3} draws averaged: {accuracy(draws[:count].mean(0)):.4f}")
        count *= 2


if __name__ == "__main__":
    main()
