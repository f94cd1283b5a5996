#!/usr/bin/env bash
# Reproduce the bundled demonstration model in weights/ with one command:
#   bash training/make_bundled.sh [WORKDIR]
# Synthetic training data (generator seed 1) and a held-out test set (seed 1000, never used
# in training) -> manifests -> `training.train --config demo` -> training.bundle (fp16
# weights, test metrics, real-photo check, model card) -> weights/.
# About an hour on a 2-core CPU; most of it is training.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/bundled}
py=${PYTHON:-.venv/bin/python}
export NO_ALBUMENTATIONS_UPDATE=1
# One BLAS/OpenMP thread per process beside two loader workers: oversubscribing 2 cores made
# each step 4x slower in our measurements.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$work"
"$py" -m training.synthetic --out "$work/train_data" --n 800 --seed 1 --size 1024 --splits train=0.85,valid=0.15
"$py" -m training.synthetic --out "$work/test_data" --n 120 --seed 1000 --size 1024 --splits test=1.0
"$py" -m training.prepare --synthetic "$work/train_data" --out "$work/train.csv" --val-fraction 0.1
"$py" -m training.prepare --synthetic "$work/test_data" --out "$work/test.csv"
start=$(date +%s)
"$py" -m training.train --manifest "$work/train.csv" --config demo --out "$work/run" --set epochs=12
seconds=$(( $(date +%s) - start ))
"$py" -m training.bundle --run "$work/run" --test-manifest "$work/test.csv" --out weights --train-seconds "$seconds"
