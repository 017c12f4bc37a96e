#!/usr/bin/env bash
# On a CUDA machine: (1) PromptPAR ViT-L-14 (random weights, bf16 autocast, batch 16) train-step and eval
# images/s and peak memory for both variants, fine-tuning for scale, and the tiny model's CPU-vs-CUDA logits;
# (2) the side by side with the reference code (benchmarks/promptpar_speed.py, interleaved, medians) when
# REFERENCE points to an Event-AHU/OpenPAR checkout, else parbench's two variants alone.
# Needs the project installed (make test or pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_promptpar.py "$@"
PYTHONUNBUFFERED=1 "$PY" benchmarks/promptpar_speed.py --device cuda --train-batch 16 --eval-batch 64 --steps 5 \
  --warmup 2 --compile ${REFERENCE:+--reference "$REFERENCE"}
# (3) the data path: end-to-end against model-only images/s on real-format crops and WIDER scenes, with the
# machine's cores (ViT-L/14, random weights, bf16 autocast), then the tiny model for the CPU comparison
PYTHONUNBUFFERED=1 "$PY" benchmarks/end_to_end.py --device cuda --backbone ViT-L-14 \
  --methods promptpar,finetune,linear-probe --images 2048 --scenes 256 --batch 64 --json "${OUT:-.}/end_to_end.json"
# (4) bf16 against fp32 for the baselines whose authors train in fp32 (they run fp32 until this says bf16 is safe)
PYTHONUNBUFFERED=1 "$PY" benchmarks/amp_parity.py --json "${OUT:-.}/amp_parity.json"
