"""Where the saccade model's inference time goes: CPU time of each piece of one prediction.

    nice -n 15 python benchmarks/profile_saccade.py [--size 2528] [--batch 1] [--threads 1]

CPU time (not wall-clock) so that the answer does not depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import pyro.poutine as poutine
import torch

from pyro_saccade import SaccadeConfig, SaccadeModel
from pyro_saccade.data import make_proxy
from pyro_saccade.prediction import predict


def cpu_ms(fn: Callable[[], object], runs: int = 10) -> float:
    """Median CPU milliseconds of ``fn`` after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        started = time.process_time()
        fn()
        times.append(1000 * (time.process_time() - started))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2528)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SaccadeModel(SaccadeConfig()).eval()
    c = model.config
    images = torch.rand(args.batch, c.channels, args.size, args.size)
    proxies = make_proxy(images, c.proxy)

    def guide_then_model() -> object:
        """The posterior-mean glimpses, then the model replayed on them: one pass of each."""
        trace = poutine.trace(model.guide).get_trace(images, proxies, mean=True)
        return poutine.replay(model.model, trace)(images, proxies)

    z = torch.zeros(args.batch, 3)
    h, state = model.initial(args.batch, proxies)
    background, contrast = model.contrast(images, proxies)
    features, maps = model.proxy_encoder.encode(contrast)
    crops, placed, _ = model.where.glimpse(images, z, None, background)
    lstm_input = crops.new_zeros(args.batch, model.rnn.input_size)
    rows = [
        ("make_proxy (from the full image)", lambda: make_proxy(images, c.proxy)),
        ("predict(model, images, proxies)", lambda: predict(model, images, proxies)),
        ("guide (posterior mean) + model replayed on it", guide_then_model),
        ("guide alone", lambda: model.guide(images, proxies, mean=True)),
        ("  background and contrast of the proxy", lambda: model.contrast(images, proxies)),
        ("  proxy encoder", lambda: model.proxy_encoder.encode(contrast)),
        (
            "  one step: crop, crop encoder, LSTM",
            lambda: model.step(images, z, None, features, state, background),
        ),
        (
            "    crop against its background",
            lambda: model.where.glimpse(images, z, None, background),
        ),
        ("    crop encoder", lambda: model.crop_encoder(crops)),
        ("    LSTM", lambda: model.rnn(lstm_input, state)),
        ("  posterior head", lambda: model.where.posterior(0, features, maps, h, None, False)),
        ("  proxy decoder (model only)", lambda: model.proxy_decoder(z, h)),
    ]
    print(f"{args.size}x{args.size}, batch {args.batch}, {args.threads} thread(s), T={c.glimpses}")
    with torch.no_grad():
        for name, fn in rows:
            print(f"{cpu_ms(fn):9.2f} ms CPU  {name}")


if __name__ == "__main__":
    main()
