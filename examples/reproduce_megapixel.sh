#!/usr/bin/env bash
# Reproduce the megapixel models of docs/results.md: identify-2528-28px (two native 28-px digits
# on 2528x2528 canvases) and megapixel-majority (Megapixel MNIST, 1500x1500), both trained
# offline on the bundled digits, and their proxy-only baselines.
# Usage: examples/reproduce_megapixel.sh [stage1|identify|majority|clutter|baselines|evaluate|curves|all]
set -euo pipefail
export OMP_NUM_THREADS=1  # one intra-op thread per process, as the runs were made
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
what="${1:-all}"

if [[ "$what" == stage1 || "$what" == all ]]; then
  # The reader: glimpses aimed at the proxy's ink (the attention held, where.learn=false) learn
  # to read digits from pair labels. The shipped models start from its checkpoint after 8 epochs
  # and 97 steps of this 15-epoch schedule (one process, then two from epoch 3).
  saccade train --task identify --canvas 2528 --digit-size 28 --distractors 8 --glimpses 4 \
    --crop 32 --proxy 256 --set where.kind=cells --set where.box_min=32 --set where.box_max=96 \
    --set evidence=crops --set crop_width=16 --set proxy_width=8 --set hidden=128 \
    --set where.learn=false --set where.ink_floor=1e-4 --epochs 15 --train-size 6400 \
    --test-size 500 --batch-size 32 --lr 1e-3 --seed 0 --checkpoint-every 50 --resume --quiet \
    --out runs/id28-stage1
fi

if [[ "$what" == identify || "$what" == all ]]; then
  # The reader, identifying for 4 epochs at 3e-4 with glimpses drawn from the ink, its boxes
  # 24-64 px (44 px at the middle of the range: digits read at 20 px) ...
  saccade train --init runs/id28-stage1 --task identify --canvas 2528 --digit-size 28 \
    --distractors 8 --set where.ink_floor=1e-6 --set where.box_min=24 --set where.box_max=64 \
    --epochs 4 --train-size 6400 --test-size 300 --batch-size 32 --lr 3e-4 --seed 1 \
    --checkpoint-every 50 --resume --quiet --out runs/identify-2528-28px-reader
  # ... then the attention learns what is worth reading (where.learn=true), 11 epochs and 4 more.
  saccade train --init runs/identify-2528-28px-reader --task identify --canvas 2528 \
    --digit-size 28 --distractors 8 --set where.learn=true --epochs 11 --train-size 6400 \
    --test-size 300 --batch-size 32 --lr 3e-4 --seed 2 --checkpoint-every 50 --resume --quiet \
    --out runs/identify-2528-28px-where
  # The model predicts with the average of 8 posterior draws (predict_samples=8): training
  # does not read it, so the weights are those of a run without it.
  saccade train --init runs/identify-2528-28px-where --task identify --canvas 2528 \
    --digit-size 28 --distractors 8 --set predict_samples=8 --epochs 4 --train-size 6400 \
    --test-size 300 --batch-size 32 --lr 2e-4 --seed 3 --checkpoint-every 50 --resume --quiet \
    --out runs/identify-2528-28px
  # The shipped model: the same weights reading each crop as showing one of the pair's digits
  # (evidence=mixture, networks.DigitPairHead), saved without training (--epochs 0).
  saccade train --init runs/identify-2528-28px --task identify --canvas 2528 --digit-size 28 \
    --distractors 8 --set evidence=mixture --epochs 0 --train-size 6400 --test-size 300 \
    --batch-size 32 --lr 2e-4 --seed 3 --checkpoint-every 50 --quiet \
    --out runs/identify-2528-28px-mixture
fi

if [[ "$what" == majority || "$what" == all ]]; then
  # The same reader answers majority with its per-digit evidence (checkpoint.for_task), with
  # ten glimpses and a 192x192 proxy, the attention held at the ink ...
  saccade train --init runs/id28-stage1 --task majority --canvas 1500 --noise 50 \
    --set glimpses=10 --set proxy=192 --set where.ink_floor=1e-6 --epochs 4 --train-size 6400 \
    --test-size 300 --batch-size 32 --lr 3e-4 --seed 1 --checkpoint-every 50 --resume --quiet \
    --out runs/megapixel-majority-reader
  # ... then the attention learns to tell digits from scribbles (where.learn=true), 3 epochs and
  # 6 more.
  saccade train --init runs/megapixel-majority-reader --task majority --canvas 1500 --noise 50 \
    --set where.learn=true --epochs 3 --train-size 6400 --test-size 300 --batch-size 32 \
    --lr 3e-4 --seed 2 --checkpoint-every 50 --resume --quiet --out runs/megapixel-majority-where
  saccade train --init runs/megapixel-majority-where --task majority --canvas 1500 --noise 50 \
    --set predict_samples=8 --epochs 6 --train-size 6400 --test-size 300 --batch-size 32 \
    --lr 3e-4 --seed 3 --checkpoint-every 50 --resume --quiet --out runs/megapixel-majority
  # The shipped model: each crop read as showing the majority's class with probability 3/5.
  saccade train --init runs/megapixel-majority --task majority --canvas 1500 --noise 50 \
    --set evidence=mixture --epochs 0 --train-size 6400 --test-size 300 --batch-size 32 \
    --lr 3e-4 --seed 3 --checkpoint-every 50 --quiet --out runs/megapixel-majority-mixture
fi

if [[ "$what" == clutter || "$what" == all ]]; then
  # megapixel-majority-clutter: the shipped megapixel-majority (trained on black canvases) on
  # canvases of a smooth random field with black or white digits, 4 epochs and 8 more, then
  # saved under the mixture reading and calibrated on canvases of seed 10.
  saccade train --init megapixel-majority --task majority --canvas 1500 --noise 50 \
    --background clutter --set evidence=crops --epochs 4 --train-size 6400 --test-size 300 \
    --batch-size 32 --lr 3e-4 --seed 4 --checkpoint-every 50 --resume --quiet \
    --out runs/megapixel-majority-clutter-short
  saccade train --init runs/megapixel-majority-clutter-short --task majority --canvas 1500 \
    --noise 50 --background clutter --epochs 8 --train-size 6400 --test-size 300 \
    --batch-size 32 --lr 3e-4 --seed 5 --checkpoint-every 50 --resume --quiet \
    --out runs/megapixel-majority-clutter
  saccade train --init runs/megapixel-majority-clutter --task majority --canvas 1500 --noise 50 \
    --background clutter --set evidence=mixture --epochs 0 --train-size 6400 --test-size 300 \
    --batch-size 32 --seed 5 --quiet --out runs/megapixel-majority-clutter-mixture
  saccade calibrate runs/megapixel-majority-clutter-mixture \
    --out runs/megapixel-majority-clutter-calibrated.pt
fi

if [[ "$what" == baselines || "$what" == all ]]; then
  saccade train --model proxy-cnn --task majority --canvas 1500 --noise 50 --proxy 192 \
    --epochs 4 --train-size 6400 --test-size 300 --batch-size 32 --lr 1e-3 --seed 1 --quiet \
    --out runs/megapixel-majority-proxy
  saccade train --model proxy-cnn --task majority --canvas 1500 --noise 50 --background clutter \
    --proxy 192 --epochs 4 --train-size 6400 --test-size 300 --batch-size 32 --lr 1e-3 --seed 1 \
    --quiet --out runs/megapixel-majority-clutter-proxy
  saccade train --model proxy-cnn --task identify --canvas 2528 --digit-size 28 --distractors 8 \
    --proxy 256 --epochs 4 --train-size 6400 --test-size 300 --batch-size 32 --lr 1e-3 --seed 1 \
    --quiet --out runs/identify-2528-28px-proxy
fi

if [[ "$what" == evaluate || "$what" == all ]]; then
  saccade evaluate runs/megapixel-majority-mixture --n 1000 --seed 1 --batch-size 50 --json
  saccade evaluate runs/megapixel-majority-proxy --n 1000 --seed 1 --batch-size 50 --json  # same canvases
  saccade evaluate runs/identify-2528-28px-mixture --n 1000 --seed 1 --batch-size 50 --json
  saccade evaluate runs/identify-2528-28px-proxy --n 1000 --seed 1 --batch-size 50 --json  # same canvases
fi

if [[ "$what" == curves || "$what" == all ]]; then
  # docs/megapixel_curves.png from the runs' metrics (docs/runs/ holds the ones committed).
  python - <<'PY'
from pyro_saccade.viz import training_curves

stage1 = "docs/runs/id28-stage1"
training_curves(
    {
        "megapixel-majority": [stage1] + [
            f"docs/runs/megapixel-majority{s}" for s in ("-reader", "-where", "")
        ],
        "identify-2528-28px": [stage1] + [
            f"docs/runs/identify-2528-28px{s}" for s in ("-reader", "-where", "")
        ],
    },
    "docs/megapixel_curves.png",
)
PY
fi
