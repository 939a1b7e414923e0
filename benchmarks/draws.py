"""What a megapixel model's posterior draws buy and cost: accuracy, coverage and ECE on held-out
canvases, and milliseconds per prediction at batch 1 on one torch thread, for each number of
draws (docs/benchmarks.md, "Posterior draws").

    OMP_NUM_THREADS=1 python benchmarks/draws.py megapixel-majority megapixel-max \
        megapixel-top megapixel-multi --seed 1 --n 1000 --samples 0,2,4,8

Each line printed is one JSON object: a model at one number of draws (0: the posterior-mean
glimpses). The canvases are those of ``saccade evaluate NAME --n N --seed S``; the time is the
median of ``--repeats`` predictions of one held-out 1500x1500 canvas of seed 0, after three
warm-up predictions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import warnings

import torch
from saccade_benchmark.measure import time_phase

from pyro_saccade import predict
from pyro_saccade.checkpoint import model_from_checkpoint, read_checkpoint, trained_config
from pyro_saccade.metrics import evaluate_glimpses
from pyro_saccade.model import SaccadeModel
from pyro_saccade.training import canvases


def milliseconds(model: SaccadeModel, canvas: torch.Tensor, samples: int, repeats: int) -> float:
    """Median wall time of one prediction of ``canvas`` [1, C, H, W] with ``samples`` draws,
    after three warm-up predictions (``saccade benchmark``'s ``time_phase``)."""

    def step() -> None:
        predict(model, canvas, samples=samples)

    def prime() -> None:  # with time_phase's own warm-up run, three
        step()
        step()

    phase = time_phase(prime, step, torch.device("cpu"), repeats, budget=math.inf)
    return 1000 * phase["latency_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="checkpoints or pretrained names")
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out canvases")
    parser.add_argument("--n", type=int, default=1000, help="held-out canvases")
    parser.add_argument("--samples", default="0,2,4,8", help="numbers of draws, comma-separated")
    parser.add_argument("--repeats", type=int, default=15, help="timed predictions")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # held-out canvases: nothing to warn about
    for name in args.models:
        payload = read_checkpoint(name)
        model = model_from_checkpoint(payload, name).eval()
        trained = trained_config(payload)
        task = model.config.task
        held_out = canvases(dataclasses.replace(trained, seed=args.seed), task, "test", args.n)
        timed = canvases(dataclasses.replace(trained, seed=0), task, "test", 1)[0][0]
        timed = timed.dense() if hasattr(timed, "dense") else timed
        for samples in (int(s) for s in args.samples.split(",")):
            result = evaluate_glimpses(
                model, held_out, samples=samples, seed=args.seed, random_glimpses=False
            )
            line = {
                "model": name,
                "seed": args.seed,
                "n": args.n,
                "samples": samples,
                "accuracy": result.accuracy,
                "coverage": result.coverage,
                "ece": result.ece,
                "ms": round(milliseconds(model, timed[None], samples, args.repeats), 1),
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
