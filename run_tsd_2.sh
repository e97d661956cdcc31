#!/usr/bin/env sh
# The reference's run_tsd_2.sh: train TSD with three parts (head, upper body, lower body) on
# Occluded-Duke, then evaluate the epoch-120 checkpoint (the last) on the TSD new benchmark
# (ALL / NPO / NTP). GPU: $GPU (default 0; the reference hard-codes 1 to run beside run_tsd.sh on GPU 0:
# `GPU=1 sh run_tsd_2.sh`).
# Everything runs on synthetic data instead with `make demo`.
set -eu
cd "$(dirname "$0")"
. tools/paper_data.sh
check_paper_data run_tsd_2.sh
OUT=logs/occ_duke/tsd_3
GPU=${GPU:-0}

$PY train.py --config_file configs/OCC_Duke/vit_base.yml INPUT.MASK_PREPROCESS three MODEL.NUM_PARTS 3 \
  SOLVER.BASE_LR 0.004 MODEL.DEVICE_ID "('$GPU')" MODEL.WITH_FORE_HEAD True MODEL.WITH_DIVERSE_LOSS True \
  MODEL.PRETRAIN_PATH "$WEIGHTS" OUTPUT_DIR "$OUT"

$PY test.py --config_file configs/OCC_Duke/vit_base.yml TEST.WEIGHT "$OUT/transformer_120.pth" \
  INPUT.MASK_PREPROCESS three MODEL.NUM_PARTS 3 MODEL.DEVICE_ID "('$GPU')" MODEL.WITH_FORE_HEAD True \
  DATASETS.NAMES new_occ_duke TEST.NEW_METRIC True OUTPUT_DIR "$OUT"
