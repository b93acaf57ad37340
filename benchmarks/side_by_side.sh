#!/usr/bin/env bash
# Issue 2/3 side-by-side run on CIFAR-10 JPEG folders, one after the other on the same machine:
#   (a) the design's Keras pipeline (benchmarks/seed_keras.py, own venv .venv-keras),
#   (b) tuneforge seed-cnn with the same recipe (+ the same model re-evaluated with flip TTA),
#   (c) the seed-cnn training-throughput micro-benchmark (batch 256, data in memory), both sides.
# Usage: bash benchmarks/side_by_side.sh [DATA] [extra foundation.py runs, e.g. efficientnet_lite0]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/datasets/cifar10}; shift || true
RUNS=("seed-cnn" "$@")
if [ ! -x .venv-keras/bin/python ]; then
  python3 -m venv .venv-keras
  .venv-keras/bin/pip install -q -r benchmarks/keras_requirements.txt
fi
make -s install
mkdir -p benchmarks/results
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)"
.venv-keras/bin/python benchmarks/seed_keras.py --data "$DATA" --no-throughput --out benchmarks/results/seed_keras.json \
  > benchmarks/results/seed_keras.log 2>&1
.venv/bin/python benchmarks/foundation.py --data "$DATA" --only "${RUNS[@]}" --out benchmarks/results/foundation.json
# Throughput: both frameworks back to back, each in a fresh process on an idle machine.
.venv-keras/bin/python benchmarks/seed_keras.py --throughput-only --out benchmarks/results/seed_keras_throughput.json \
  > benchmarks/results/seed_keras_throughput.log 2>&1
.venv/bin/python benchmarks/throughput.py --out benchmarks/results/throughput.json
.venv/bin/python benchmarks/summarize.py
