"""One short training run of a recipe variant, for comparing recipes by measurement.

Model settings (SaccadeConfig fields) and training settings (TrainConfig fields) are given as
KEY=VALUE, read as ``saccade train --set`` reads them (``pyro_saccade.settings``: numbers, lists,
true/false/none, JSON, else text; ``where.box_min=32`` sets a field of a section), e.g. a short
run:

python examples/recipe_search.py runs/variant --model evidence=crops posterior_std=0.2 \\
    kl_weight=0.05 --train epochs=8 train_size=5000 test_size=500 workers=1

With --init the variant starts from a trained model's weights (its config with the overrides):

python examples/recipe_search.py runs/tight-0.25 --init runs/identify-100 \\
    --model posterior_std_max=0.25 posterior_std=0.125 \\
    --train epochs=2 train_size=50000 test_size=1000 lr=2e-4 seed=0
"""

from __future__ import annotations

import argparse
import json

import torch

from pyro_saccade import load
from pyro_saccade.checkpoint import with_config
from pyro_saccade.config import updated
from pyro_saccade.settings import parse_settings
from pyro_saccade.training import TrainConfig, default_model_config, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one recipe variant briefly.")
    parser.add_argument("out", help="run directory")
    parser.add_argument("--model", nargs="*", default=[], help="SaccadeConfig KEY=VALUE")
    parser.add_argument("--train", nargs="*", default=[], help="TrainConfig KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--init", help="start from this checkpoint, run or pretrained name")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    try:
        train_settings, overrides = parse_settings(args.train), parse_settings(args.model)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    train_config = TrainConfig(**train_settings)
    model = None
    try:  # updated() validates the changed fields, and rejects unknown ones
        if args.init:
            model = with_config(load(args.init), **overrides)
            model_config = model.config
        else:
            task = overrides.get("task", "identify")  # the model's task, and the data's
            data = default_model_config(task, train_config.photos)
            model_config = updated(data, overrides)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"SaccadeConfig: {error}") from None
    train(model_config, train_config, out=args.out, progress=False, model=model)
    for line in open(f"{args.out}/metrics.jsonl"):
        record = json.loads(line)
        print(f"epoch {record['epoch']}: held-out accuracy {record['test_accuracy']:.3f}")


if __name__ == "__main__":
    main()
