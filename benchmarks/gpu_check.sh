#!/usr/bin/env bash
# On a CUDA machine: PromptPAR ViT-L-14 (random weights, bf16 autocast, batch 16) train-step and eval
# images/s and peak memory, for both variants. Needs the project installed (make test or pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_promptpar.py "$@"
