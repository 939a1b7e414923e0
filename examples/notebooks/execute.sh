#!/usr/bin/env bash
# Run the example notebooks top to bottom and save their outputs in them, as the repository
# keeps them: examples/notebooks/execute.sh [NOTEBOOK...] (default: all of them). Their runs go
# to examples/notebooks/runs/. SACCADE_NOTEBOOK_QUICK=1 gives the test suite's small budget.
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
cd "$(dirname "$0")"
if [[ $# -eq 0 ]]; then set -- *.ipynb; fi
for notebook in "$@"; do
  jupyter execute --inplace --timeout=-1 "$notebook"
done
