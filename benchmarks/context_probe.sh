#!/usr/bin/env bash
# Large-context probe on a lent GPU (one call of the device tool, under 10 minutes).
#
# Does a U-Net that sees 5x the default's radius (depth 5, base 32: 122 px, 7.8 M parameters,
# ~8x the default's multiply-accumulates per pixel) find PSNR the default's 26 px cannot?
# Trained from scratch for a fixed wall-clock budget on the GPU; scored on this project's CPU by
# quality.py (section 1's protocol), since only a model within the speed bar could ship.
# Also re-times the full field on the GPU (cuda_check.py --part speed), which the channels_last
# change of session 12 left unmeasured.
# Session 16's run (before train clipped gradients) diverged: NaN in epoch 8 at lr 1e-3 under fp16,
# and at 5e-4 in float32 a collapse in epoch 3 (BENCHMARKS.md section 7). With the clipping now on
# by default (--clip-grad-norm 10) the same script is the one to rerun on the next lent GPU; the
# grown, zero-started version of the question was answered on the CPU (section 1, +0.006 dB).
#
#   bash benchmarks/context_probe.sh OUT_DIR [TRAIN_MINUTES]
#   DEVICE=cpu WORKERS=2 bash benchmarks/context_probe.sh /tmp/probe 1    # smoke test, no GPU
#
# The weights (31 MB) come back in 15 MB pieces (the device tool returns files of at most 16 MiB):
#   cat OUT_DIR/unet-ctx.safetensors.part* > unet-ctx.safetensors
set -uo pipefail
out=${1:?OUT_DIR}
minutes=${2:-5}
device=${DEVICE:-cuda}
amp=$([ "$device" = cuda ] && echo --amp)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

# 1. Speed first, on a quiet machine: the host-side Anscombe round trip is part of the time.
if timeout 150 python3 benchmarks/cuda_check.py --part speed 2>&1 | tee "$out/speed.log"; then
    cp benchmarks/results/cuda_check_speed.json "$out/"
fi

# 2. The probe: the default's data and dose range, plain MSE, no calcification weight.
timeout $((minutes * 60 + 100)) python3 -m mammo_denoise.cli train \
    --out "$out/run/unet-ctx.safetensors" --name unet-ctx --device "$device" $amp \
    --architecture unet --arch-option depth=5 --arch-option base=32 \
    --phantoms "${PHANTOMS:-60}" --phantom-size 1024x1024 --dose-range 0.1 0.5 \
    --patch 192 --batch-size 32 --loss mse --lr 1e-3 --lr-schedule cosine \
    --time-budget "$minutes" --epochs 1000 --iters-per-epoch 100 --patience 1000 \
    --workers "${WORKERS:-14}" --seed 71 2>&1 | tee "$out/train.log"
if [ -f "$out/run/unet-ctx.safetensors" ]; then
    split -b 15M -d "$out/run/unet-ctx.safetensors" "$out/unet-ctx.safetensors.part"
    cp "$out/run/unet-ctx.json" "$out/"
fi
rm -rf "$out/run"
ls -la "$out"
