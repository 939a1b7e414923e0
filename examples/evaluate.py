"""Accuracy of a trained model on held-out canvases (digits it never saw in training).

python examples/evaluate.py                         # the checkpoint of train_identify.py
python examples/evaluate.py identify-100 --samples 8
"""

from __future__ import annotations

import argparse
import dataclasses

from pyro_saccade.training import (
    canvases,
    evaluate,
    model_from_checkpoint,
    read_checkpoint,
    trained_config,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on held-out canvases.")
    parser.add_argument("checkpoint", nargs="?", default="runs/examples/identify")
    parser.add_argument("--n", type=int, default=500, help="number of test canvases")
    parser.add_argument(
        "--samples", type=int, default=0, help="posterior samples averaged (0: posterior mean)"
    )
    args = parser.parse_args(argv)

    # Test canvases like the ones the model was trained on: same task, size and clutter.
    payload = read_checkpoint(args.checkpoint)
    trained = trained_config(payload)
    test_set = canvases(dataclasses.replace(trained, seed=1), "test", args.n)
    model = model_from_checkpoint(payload, args.checkpoint).eval()
    accuracy = evaluate(model, test_set, samples=args.samples, progress=True)
    print(f"accuracy {accuracy:.4f} on {args.n} held-out canvases ({trained.task})")


if __name__ == "__main__":
    main()
