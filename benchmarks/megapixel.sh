#!/usr/bin/env bash
# The "Megapixel models" benchmark of docs/benchmarks.md: each model at batch 1 against the tiled
# and full-image resnet18 and the proxy-only CNN on dense 1500² and 2528² canvases, then on lazy
# canvases (data.CanvasBatch) from 1500² to 100,000². Arguments: the models (checkpoints, run
# directories, pretrained names, or configs: weights do not change the cost) [default: the two
# megapixel models' configs, docs/benchmark-megapixel/*.json]. Results go to
# docs/benchmark-megapixel/NAME and NAME-lazy.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- docs/benchmark-megapixel/megapixel-majority.json \
    docs/benchmark-megapixel/identify-2528-28px.json
fi
export OMP_NUM_THREADS=1  # one thread per process, as the benchmark's own --threads 1
for model in "$@"; do
  name=$(basename "${model%.*}")
  nice -n 10 saccade benchmark --checkpoint "$model" --sizes 1500,2528 --batch-sizes 1 \
    --budget 60 --quiet --out "docs/benchmark-megapixel/$name"
  nice -n 10 saccade benchmark --checkpoint "$model" --lazy --sizes 1500,10000,100000 \
    --batch-sizes 1 --repeats 15 --budget 60 --quiet --out "docs/benchmark-megapixel/$name-lazy"
done
