#!/usr/bin/env sh
# The paper recipe (the reference's run_tsd.sh): train TSD with five parts on Occluded-Duke, then
# evaluate the epoch-90 checkpoint on the TSD new benchmark (ALL / NPO / NTP). GPU: $GPU (default 0).
# Everything runs on synthetic data instead with `make demo`.
set -eu
cd "$(dirname "$0")"
. tools/paper_data.sh
check_paper_data run_tsd.sh
OUT=logs/occ_duke/tsd_5
GPU=${GPU:-0}

$PY train.py --config_file configs/OCC_Duke/vit_base.yml INPUT.MASK_PREPROCESS five MODEL.NUM_PARTS 5 \
  SOLVER.BASE_LR 0.004 MODEL.DEVICE_ID "('$GPU')" MODEL.WITH_FORE_HEAD True MODEL.WITH_DIVERSE_LOSS True \
  MODEL.PRETRAIN_PATH "$WEIGHTS" OUTPUT_DIR "$OUT"

$PY test.py --config_file configs/OCC_Duke/vit_base.yml TEST.WEIGHT "$OUT/transformer_90.pth" \
  INPUT.MASK_PREPROCESS five MODEL.NUM_PARTS 5 MODEL.DEVICE_ID "('$GPU')" MODEL.WITH_FORE_HEAD True \
  DATASETS.NAMES new_occ_duke TEST.NEW_METRIC True OUTPUT_DIR "$OUT"
