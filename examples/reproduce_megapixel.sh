#!/usr/bin/env bash
# Make the megapixel models of docs/results.md from their recipes (pyro_saccade/recipes: one
# TOML file per model, its stages, export and calibration), and their proxy-only baselines.
# Every run is resumable: after a stop, run the script again. A recipe that starts from another
# (megapixel-top from megapixel-max, from megapixel-majority, from megapixel-reader) finds its
# run in runs/ beside it.
# Usage: examples/reproduce_megapixel.sh [models|baselines|evaluate|curves|all]
set -euo pipefail
export OMP_NUM_THREADS=1  # one intra-op thread per process, as the runs were made
what="${1:-all}"
models=(megapixel-reader identify-2528-28px megapixel-majority megapixel-max megapixel-top
  megapixel-multi megapixel-majority-clutter)

if [[ "$what" == models || "$what" == all ]]; then
  for model in "${models[@]}"; do
    saccade train --recipe "$model" --out "runs/$model" --resume --quiet
  done
fi

if [[ "$what" == baselines || "$what" == all ]]; then
  for task in majority max top multi; do
    saccade train --model proxy-cnn --task "$task" --canvas 1500 --noise 50 --proxy 192 \
      --epochs 4 --train-size 6400 --test-size 300 --batch-size 32 --lr 1e-3 --seed 1 --quiet \
      --out "runs/megapixel-$task-proxy"
  done
  saccade train --model proxy-cnn --task majority --canvas 1500 --noise 50 --background clutter \
    --proxy 192 --epochs 4 --train-size 6400 --test-size 300 --batch-size 32 --lr 1e-3 --seed 1 \
    --quiet --out runs/megapixel-majority-clutter-proxy
  saccade train --model proxy-cnn --task identify --canvas 2528 --digit-size 28 --distractors 8 \
    --proxy 256 --epochs 4 --train-size 6400 --test-size 300 --batch-size 32 --lr 1e-3 --seed 1 \
    --quiet --out runs/identify-2528-28px-proxy
fi

if [[ "$what" == evaluate || "$what" == all ]]; then
  # Three seeds of held-out canvases the models were not tuned on (calibration used seed 10),
  # each beside the proxy-only CNN and random glimpses on the same canvases.
  for seed in 0 1 2; do
    for task in majority max top multi; do
      saccade evaluate "runs/megapixel-$task" --n 1000 --seed "$seed" --threads 1 --json \
        --proxy-baseline "runs/megapixel-$task-proxy"
    done
    saccade evaluate runs/megapixel-majority-clutter --background clutter --n 1000 \
      --seed "$seed" --threads 1 --json --proxy-baseline runs/megapixel-majority-clutter-proxy
    saccade evaluate runs/identify-2528-28px --n 1000 --seed "$seed" --threads 1 --json \
      --proxy-baseline runs/identify-2528-28px-proxy
  done
fi

if [[ "$what" == curves || "$what" == all ]]; then
  # docs/megapixel_curves.png from the runs' metrics (docs/runs/ holds the ones committed).
  python - <<'PY'
from pyro_saccade.viz import training_curves


def stages(run, *names):
    return [f"docs/runs/{run}/stages/{name}" for name in names]


stage1 = "docs/runs/id28-stage1"
proxy320 = stages("megapixel-reader", "reader") + stages(
    "megapixel-majority", "reader", "where", "tune", "shown", "proxy320"
)
boxtune = proxy320 + stages("megapixel-majority", "box", "boxtune")
majority = boxtune + stages("megapixel-majority", "small")
tuned = {
    task: [f"docs/runs/megapixel-{task}{suffix}" for suffix in ("", "-tune")]
    for task in ("max", "top")
}
training_curves(
    {
        # max starts from the majority recipe's stage proxy320, top from max, multi from boxtune;
        # each line drawn over those that continue it, so that every line's end shows
        "megapixel-top": proxy320 + tuned["max"] + tuned["top"],
        "megapixel-max": proxy320 + tuned["max"],
        "megapixel-multi": boxtune + stages("megapixel-multi", "task", "tune"),
        "megapixel-majority": majority,
        "identify-2528-28px": [stage1] + [
            f"docs/runs/identify-2528-28px{s}" for s in ("-reader", "-where", "")
        ],
    },
    "docs/megapixel_curves.png",
)
PY
fi
