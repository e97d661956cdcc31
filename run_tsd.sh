#!/usr/bin/env sh
# The paper recipe (the reference's run_tsd.sh): train TSD with five parts on Occluded-Duke, then
# evaluate the epoch-90 checkpoint on the TSD new benchmark (ALL / NPO / NTP).
# Everything runs on synthetic data instead with `make demo`.
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
DATA=data/Occluded_Duke
WEIGHTS=logs/pretrain_model/jx_vit_base_p16_224-80ecf9dd.pth
OUT=logs/occ_duke/tsd_5

missing=0
for d in bounding_box_train query bounding_box_test; do
  if [ ! -d "$DATA/$d" ]; then
    echo "missing: $DATA/$d/ - Occluded-Duke images, made from DukeMTMC-reID by lightas' convert_duke_to_occduke.py (github.com/lightas/Occluded-DukeMTMC-Dataset)"
    missing=1
  fi
done
if [ ! -d "$DATA/masks/pifpaf_maskrcnn_filtering/bounding_box_train" ]; then
  echo "missing: $DATA/masks/pifpaf_maskrcnn_filtering/bounding_box_train/ - the bpbreid human-parsing masks (PifPaf confidence fields filtered with Mask R-CNN), downloaded from the bpbreid README (github.com/VlSomers/bpbreid)"
  missing=1
fi
for f in new_query.txt new_gallery.txt; do
  if [ ! -f "$DATA/$f" ]; then
    echo "missing: $DATA/$f - the new-benchmark lists from the root of the TSD repository (github.com/hh23333/TSD)"
    missing=1
  fi
done
if [ ! -f "$WEIGHTS" ]; then
  echo "missing: $WEIGHTS - ImageNet ViT-B/16 weights (timm's jx_vit_base_p16_224-80ecf9dd.pth, linked from the TransReID README)"
  missing=1
fi
if [ "$missing" -ne 0 ]; then
  echo "run_tsd.sh needs the real data above. To run everything end to end on synthetic data instead: make demo"
  exit 1
fi

$PY train.py --config_file configs/OCC_Duke/vit_base.yml INPUT.MASK_PREPROCESS five MODEL.NUM_PARTS 5 \
  SOLVER.BASE_LR 0.004 MODEL.DEVICE_ID 0 MODEL.WITH_FORE_HEAD True MODEL.WITH_DIVERSE_LOSS True \
  MODEL.PRETRAIN_PATH "$WEIGHTS" OUTPUT_DIR "$OUT"

$PY test.py --config_file configs/OCC_Duke/vit_base.yml TEST.WEIGHT "$OUT/transformer_90.pth" \
  INPUT.MASK_PREPROCESS five MODEL.NUM_PARTS 5 MODEL.DEVICE_ID 0 MODEL.WITH_FORE_HEAD True \
  DATASETS.NAMES new_occ_duke TEST.NEW_METRIC True OUTPUT_DIR "$OUT"
