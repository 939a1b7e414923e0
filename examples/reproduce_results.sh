#!/usr/bin/env bash
# Reproduce the rows of docs/results.md: the shipped models and the noisy-proxy ablation.
# Each training run took about an hour on one core of a 2-core CPU (see docs/results.md).
# Usage: examples/reproduce_results.sh [identify-100|sum-100|identify-2528|noise|all]
set -euo pipefail
export OMP_NUM_THREADS=1  # one intra-op thread: the runs were made this way, two at a time
what="${1:-all}"

if [[ "$what" == identify-100 || "$what" == all ]]; then
  saccade train --task identify --canvas 100 --epochs 10 --train-size 20000 --test-size 1000 \
    --workers 1 --seed 0 --quiet --out runs/identify-100
  saccade evaluate runs/identify-100 --n 2000
fi

if [[ "$what" == sum-100 || "$what" == all ]]; then
  saccade train --task sum --canvas 100 --epochs 10 --train-size 20000 --test-size 1000 \
    --workers 1 --seed 0 --quiet --out runs/sum-100
  saccade evaluate runs/sum-100 --n 2000
fi

if [[ "$what" == identify-2528 || "$what" == all ]]; then
  # The glimpse coordinates are fractions of the image, and digits scale with the canvas, so the
  # 100x100 model transfers; a short fine-tune on natively rendered 2528x2528 canvases follows.
  saccade train --init runs/identify-100 --task identify --canvas 2528 --epochs 1 \
    --train-size 2000 --test-size 200 --batch-size 16 --lr 1e-4 --workers 1 --seed 0 --quiet \
    --out runs/identify-2528
  saccade evaluate runs/identify-2528 --n 2000 --batch-size 20
fi

if [[ "$what" == noise || "$what" == all ]]; then
  # Fig. 5 of the paper: accuracy of identify-100 when its proxy is noisy.
  for sigma in 0 0.1 0.25 0.5; do
    saccade evaluate runs/identify-100 --n 2000 --proxy-noise "$sigma" --json
  done
fi
