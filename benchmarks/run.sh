#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md: saccade model vs resnet18 baselines, latency, memory and
# scaling with the canvas. Extra arguments go to `saccade benchmark` (see `saccade benchmark
# --help`), e.g. `benchmarks/run.sh --sizes 100,2528 --threads 2`.
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 15 saccade benchmark --out docs/benchmark "$@"
