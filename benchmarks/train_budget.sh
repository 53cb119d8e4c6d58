#!/usr/bin/env bash
# Table 1 models under one stated training budget: the same wall-clock minutes on this machine's
# CPU, the same 40 phantoms (768x576, seed 0), 20 % dose, patch 64, batch 16, Adam lr 1e-3 with a
# cosine decay that follows the time budget (each run anneals within its minutes).
# Architectures differ ~70x in cost per patch, so equal time means very unequal patch counts;
# each card records patches_seen. Usage: bash benchmarks/train_budget.sh [MINUTES] [OUTDIR]
# Run on an otherwise idle machine: the budget is wall-clock. THREADS (default: all cores) caps
# torch's threads.
set -euo pipefail
minutes=${1:-6}
out=${2:-runs/budget}
export OMP_NUM_THREADS=${THREADS:-$(nproc)}
mkdir -p "$out"
common=(--phantoms 40 --phantom-size 768x576 --dose 0.2 --patch 64 --batch-size 16 --lr 1e-3 --lr-schedule cosine
        --epochs 1000 --iters-per-epoch 50 --patience 1000 --seed 0 --time-budget "$minutes")
run() {
  local name=$1; shift
  if [ -f "$out/$name.safetensors" ]; then echo "== $name: exists, skipped"; return; fi
  echo "== $name"; mammo-denoise train --out "$out/$name.safetensors" "${common[@]}" "$@" 2>&1 | tail -3
}
run unet          --architecture unet
run dncnn         --architecture dncnn
run eckert-resnet --architecture eckert-resnet
run cae-ours      --architecture cae
run cae-seed2     --architecture cae --noise-model gaussian-saltpepper --loss mse
