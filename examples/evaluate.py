"""Accuracy of a trained model on held-out canvases (digits it never saw in training).

python examples/evaluate.py                         # the checkpoint of train_identify.py
python examples/evaluate.py identify-100 --samples 8
"""

from __future__ import annotations

import argparse
import dataclasses

from pyro_saccade.checkpoint import model_from_checkpoint, read_checkpoint, trained_config
from pyro_saccade.training import canvases, evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on held-out canvases.")
    parser.add_argument("checkpoint", nargs="?", default="runs/examples/identify")
    parser.add_argument("--n", type=int, default=500, help="number of test canvases")
    parser.add_argument(
        "--samples", type=int, default=0, help="posterior samples averaged (0: posterior mean)"
    )
    args = parser.parse_args(argv)

    # Test canvases like the ones the model was trained on: its task, size and clutter.
    payload = read_checkpoint(args.checkpoint)
    model = model_from_checkpoint(payload, args.checkpoint).eval()
    task = model.config.task
    test_set = canvases(dataclasses.replace(trained_config(payload), seed=1), task, "test", args.n)
    accuracy = evaluate(model, test_set, samples=args.samples, progress=True)
    print(f"accuracy {accuracy:.4f} on {args.n} held-out canvases ({task})")


if __name__ == "__main__":
    main()
