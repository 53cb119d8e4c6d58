#!/usr/bin/env bash
# After the shipped default's weights change: rerun every CPU benchmark that measures the default,
# then regenerate BENCHMARKS.md and the README's screenshots. 30-55 min on the 2-core machine,
# by its speed;
# run it on an otherwise idle machine (speed.py times wall clock). The readings
# (benchmarks/readings/*.md) are written by hand afterwards, from the new numbers.
#
#   bash benchmarks/rerun_default.sh PREVIOUS_DEFAULT.safetensors LABEL
#
# PREVIOUS_DEFAULT (with its .json card beside it) stays in section 1 as LABEL, and
# being run again is what lets quality.py carry the rows of models whose weights are not on this
# machine (quality.py --carry). Section 7 (cuda_check) needs a lent GPU and is not rerun here.
set -euo pipefail
cd "$(dirname "$0")/.."
previous=${1:?usage: bash benchmarks/rerun_default.sh PREVIOUS_DEFAULT.safetensors LABEL}
label=${2:?usage: bash benchmarks/rerun_default.sh PREVIOUS_DEFAULT.safetensors LABEL}
carried=${CARRY:-"eckert-resnet-cpu unet-gpu unet-u2b40-gpu unet-u2 unet-u2-gpu unet-u2-s3 unet-u2-s2 unet-u2-s1
  mammo-unet-s6 mammo-unet-v1 unet-d4 unet-budget dncnn cae-ours cae-seed2"}

step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; }
# shellcheck disable=SC2086  # the carried labels are words
step python benchmarks/quality.py --phantoms 20 --size 512 --default-model mammo-unet \
    --models mammo-unet eckert-resnet "$label=$previous" --carry $carried
step python benchmarks/card_metrics.py
# The same on 20 further phantoms, networks only: how much section 1's set of phantoms decides.
step python benchmarks/quality.py --phantoms 20 --seed0 10020 --size 512 --default-model mammo-unet \
    --models mammo-unet "$label=$previous" --no-bm3d --examples 0 --strengths --name quality_replicate
step python benchmarks/speed.py --default-model mammo-unet --models mammo-unet eckert-resnet \
    --timing-architectures dncnn cae
step python benchmarks/nps.py --slab 1024 --phantoms 3 --size 256 --realisations 4
step python benchmarks/robustness.py --phantoms 4 --size 512
step python benchmarks/field_edge.py --phantoms 6 --models mammo-unet "$label=$previous"
step python benchmarks/precision.py --phantoms 20 --models mammo-unet
step python benchmarks/self_ensemble.py --phantoms 8 --threads 1 --second "$previous"
step python benchmarks/error_by_signal.py --phantoms 8 --threads 1
step python benchmarks/dose_sweep.py --phantoms 6 --size 512
step xvfb-run -a python docs/make_screenshots.py
step python benchmarks/report.py
