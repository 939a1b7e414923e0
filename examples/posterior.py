"""Posterior samples of the glimpses as ArviZ data: summary, netCDF file, and a look inside.

python examples/posterior.py                        # the checkpoint of train_identify.py
python examples/posterior.py identify-100 --samples 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro
import torch

from pyro_saccade.checkpoint import load
from pyro_saccade.data import TwoDigitCluttered
from pyro_saccade.posterior import read_posterior, sample_posterior


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export posterior samples of the glimpses.")
    parser.add_argument("checkpoint", nargs="?", default="runs/examples/identify")
    parser.add_argument("--n", type=int, default=3, help="number of test canvases")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--out", default="runs/examples/posterior.nc")
    args = parser.parse_args(argv)

    pyro.set_rng_seed(0)
    model = load(args.checkpoint)
    test_set = TwoDigitCluttered(model.config.task, 100, args.n, split="test", seed=1)
    images = [test_set[i][0] for i in range(args.n)]
    labels = torch.stack([test_set[i][1] for i in range(args.n)])
    names = [f"canvas_{i}" for i in range(args.n)]
    result = sample_posterior(model, images, args.samples, names=names, labels=labels)
    print(result.summary())

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result.to_arviz().to_netcdf(args.out)
    data = read_posterior(args.out)
    # Plain xarray from here: where, on average, does each glimpse land (x = centre / width)?
    x = data.posterior["crop"].sel(coord="x").mean(("chain", "draw"))
    print(x.to_pandas().round(3))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
