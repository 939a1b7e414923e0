#!/usr/bin/env bash
# Reproduce the rows of docs/results.md: the shipped models and the noisy-proxy ablation.
# Usage: examples/reproduce_results.sh [identify-100|sum-100|identify-2528|noise|all]
# Each 100x100 model trains in two stages (10 epochs, then 6 more with a fresh cosine schedule
# and new canvases); on one core of a 2-core CPU that took about 50 minutes in all.
set -euo pipefail
export OMP_NUM_THREADS=1  # one intra-op thread: the runs were made this way, two at a time
what="${1:-all}"

train_100() {  # task, run name
  saccade train --task "$1" --canvas 100 --epochs 10 --train-size 20000 --test-size 1000 \
    --workers 1 --seed 0 --quiet --out "runs/$2-stage1"
  saccade train --init "runs/$2-stage1" --task "$1" --canvas 100 --epochs 6 --train-size 20000 \
    --test-size 1000 --lr 5e-4 --workers 1 --seed 1 --quiet --out "runs/$2"
  saccade evaluate "runs/$2" --n 2000
}

if [[ "$what" == identify-100 || "$what" == all ]]; then
  train_100 identify identify-100
fi

if [[ "$what" == sum-100 || "$what" == all ]]; then
  train_100 sum sum-100
fi

if [[ "$what" == identify-2528 || "$what" == all ]]; then
  # Glimpse coordinates are fractions of the image and digits scale with the canvas, so the
  # 100x100 model transfers; one short epoch on natively rendered 2528x2528 canvases follows.
  saccade evaluate runs/identify-100 --canvas 2528 --n 500 --batch-size 20
  saccade train --init runs/identify-100 --task identify --canvas 2528 --epochs 1 \
    --train-size 2000 --test-size 200 --batch-size 16 --lr 1e-4 --workers 1 --seed 0 --quiet \
    --out runs/identify-2528
  saccade evaluate runs/identify-2528 --n 2000 --batch-size 20
fi

if [[ "$what" == noise || "$what" == all ]]; then
  # Fig. 5 of the paper: accuracy of identify-100 when its proxy is noisy (test time only).
  for sigma in 0 0.1 0.25 0.5; do
    saccade evaluate runs/identify-100 --n 2000 --proxy-noise "$sigma"
  done
fi

# Ship a run as a pretrained model (weights and configs only):
#   python -c "import pyro_saccade as ps; ps.export('runs/identify-100', 'identify-100.pt')"
