"""How often a model's glimpses hold the digits: the diagnostic that found what held training back.

For each held-out canvas, the share of each digit's box inside the best of the model's
(posterior-mean) glimpses, and the standard deviation of q(z_t | c, h_{t-1}) at each step: a
guide whose standard deviation stays near 1 crops at random places while it trains. Then the
accuracy by how much the two digits overlap (the mnist-cluttered recipe places them
independently, so some canvases hold one digit drawn over the other).

python examples/glimpse_coverage.py identify-100 --n 400
"""

from __future__ import annotations

import argparse

import torch
from pyro import poutine

from pyro_saccade import load
from pyro_saccade.data import TwoDigitCluttered, proxies_of
from pyro_saccade.glimpse import box_share
from pyro_saccade.prediction import boxes, infer


def coverage(digit: tuple[int, int, int, int], boxes: torch.Tensor) -> float:
    """The largest share of the digit's box (x0, y0, x1, y1) inside any of the boxes [N, 4]."""
    return float(box_share(torch.tensor(digit, dtype=boxes.dtype), boxes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Glimpse coverage of the digits.")
    parser.add_argument("checkpoint", nargs="?", default="identify-100")
    parser.add_argument("--n", type=int, default=400, help="number of held-out canvases")
    parser.add_argument("--canvas", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out canvases")
    args = parser.parse_args(argv)

    model = load(args.checkpoint)
    data = TwoDigitCluttered("identify", args.canvas, n=args.n, split="test", seed=args.seed)
    images = torch.stack([data[i][0] for i in range(args.n)])
    labels = torch.stack([data[i][1] for i in range(args.n)])
    out = infer(model, images)
    digits = [data.describe(i)["boxes"] for i in range(args.n)]  # two boxes per canvas
    centres = None if out.centres is None else out.centres[0]  # a cells model's aims
    placed = boxes(model, out.z[0], args.canvas, args.canvas, centres)
    shares = torch.tensor([coverage(box, placed[i]) for i in range(args.n) for box in digits[i]])
    hits = out.probs.argmax(-1) == labels
    print(f"accuracy {hits.float().mean():.3f} on {args.n} held-out canvases")
    print(f"digits at least 90% inside a glimpse: {(shares >= 0.9).float().mean():.3f}")
    print(f"digits at least 70% inside a glimpse: {(shares >= 0.7).float().mean():.3f}")
    sides = (placed[..., 2] - placed[..., 0]).mean(0)
    print("mean crop side per glimpse (px):", " ".join(f"{s:.1f}" for s in sides.tolist()))
    overlap = torch.tensor(
        [coverage(first, torch.tensor([second], dtype=torch.float32)) for first, second in digits]
    )
    for low, high in [(0, 0), (0, 0.25), (0.25, 0.5), (0.5, 1)]:
        chosen = (overlap == 0) if high == 0 else (overlap > low) & (overlap <= high)
        span = "no overlap" if high == 0 else f"overlap in ({low}, {high}]"
        if chosen.any():
            print(
                f"digits' boxes with {span}: {int(chosen.sum())} canvases, "
                f"accuracy {hits[chosen].float().mean():.3f}"
            )
    # Among the canvases whose digits overlap by at most half: does a glimpse miss a digit?
    seen = shares.view(-1, 2).min(-1).values >= 0.9
    for held, name in [(True, "both digits"), (False, "a digit less than")]:
        chosen = (overlap <= 0.5) & (seen == held)
        if chosen.any():
            print(
                f"overlap at most 0.5, {name} 90% inside a glimpse: {int(chosen.sum())} "
                f"canvases, accuracy {hits[chosen].float().mean():.3f}, "
                f"{int((~hits[chosen]).sum())} errors"
            )
    guide = poutine.trace(model.guide).get_trace(
        images, proxies_of(images, model.config.proxy_side)
    )
    for t in range(model.config.glimpses):
        std = guide.nodes[f"z_{t}"]["fn"].base_dist.scale.mean(0)
        print(f"glimpse {t}: mean std of q over (scale, x, y):", " ".join(f"{s:.3f}" for s in std))


if __name__ == "__main__":
    main()
