"""Train variational saccading on two-digit cluttered MNIST (identification, 55 classes).

    python examples/train_identify.py                                 # a short run on a CPU
    python examples/train_identify.py --epochs 100 --train-size 20000 # a real one (use a GPU)

The other examples read the checkpoint this writes (runs/examples/identify by default).
"""

from __future__ import annotations

import argparse

from pyro_saccade.config import SaccadeConfig
from pyro_saccade.data import class_names
from pyro_saccade.training import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train on two-digit cluttered MNIST.")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=2000, help="fresh canvases per epoch")
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--canvas", type=int, default=100, help="canvas side in pixels")
    parser.add_argument("--glimpses", type=int, default=SaccadeConfig.glimpses)
    parser.add_argument("--prior", default="vrnn", help="vrnn, normal, fixed or centre")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/examples/identify")
    args = parser.parse_args(argv)

    model_config = SaccadeConfig(
        classes=class_names("identify"), task="identify", glimpses=args.glimpses, prior=args.prior
    )
    train_config = TrainConfig(
        canvas=[args.canvas, args.canvas],
        epochs=args.epochs,
        train_size=args.train_size,
        test_size=args.test_size,
        device=args.device,
    )
    # Writes checkpoint.pt every epoch; run again with resume=True to continue.
    train(model_config, train_config, out=args.out)
    print(f"checkpoint: {args.out}/checkpoint.pt")


if __name__ == "__main__":
    main()
