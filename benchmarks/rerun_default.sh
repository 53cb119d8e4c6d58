#!/usr/bin/env bash
# After the shipped default's weights change: rerun every CPU benchmark that measures the default,
# then regenerate BENCHMARKS.md and the README's screenshots. 30-55 min on the 2-core machine,
# by its speed;
# run it on an otherwise idle machine (speed.py times wall clock). The readings
# (benchmarks/readings/*.md) are written by hand afterwards, from the new numbers.
#
#   bash benchmarks/rerun_default.sh PREVIOUS_DEFAULT.safetensors LABEL
#
# PREVIOUS_DEFAULT (with its .json card beside it) stays in sections 0 and 1 as LABEL.
# Section 7 (cuda_check) needs a lent GPU and is not rerun here.
set -euo pipefail
cd "$(dirname "$0")/.."
previous=${1:?usage: bash benchmarks/rerun_default.sh PREVIOUS_DEFAULT.safetensors LABEL}
label=${2:?usage: bash benchmarks/rerun_default.sh PREVIOUS_DEFAULT.safetensors LABEL}

step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; }
step python benchmarks/real_anatomy.py --models mammo-unet "$label=$previous" --true-params \
    --cache "${BM3D_CACHE:-/tmp/mammo-bm3d-cache}"
step python benchmarks/noise_real_anatomy.py
step python benchmarks/quality.py --phantoms 20 --size 512 --default-model mammo-unet \
    --models mammo-unet eckert-resnet "$label=$previous"
step python benchmarks/card_metrics.py
step python benchmarks/speed.py --default-model mammo-unet --models mammo-unet eckert-resnet \
    --timing-architectures dncnn cae
step python benchmarks/nps.py --slab 1024 --phantoms 3 --size 256 --realisations 4
step python benchmarks/robustness.py --phantoms 4 --size 512
step python benchmarks/field_edge.py --phantoms 6 --models mammo-unet "$label=$previous"
step python benchmarks/precision.py --phantoms 20 --models mammo-unet
step python benchmarks/dose_sweep.py --phantoms 6 --size 512
step xvfb-run -a python docs/make_screenshots.py
step python benchmarks/report.py
