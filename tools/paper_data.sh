# Shared by run_tsd.sh and run_tsd_2.sh (sourced, POSIX sh): the real data the paper scripts need, each
# missing piece named with where it comes from, and the reference's train + test commands.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
DATA=data/Occluded_Duke
WEIGHTS=logs/pretrain_model/jx_vit_base_p16_224-80ecf9dd.pth
GPU=${GPU:-0}

# need -d|-f PATH WHAT: a line "missing: PATH - WHAT" unless PATH is a folder (-d) / file (-f).
need() {
  if [ ! "$1" "$2" ]; then
    echo "missing: $2 - $3"
    missing=1
  fi
}

# check_paper_data NAME: print a line per missing piece and exit 1 if any (NAME: the calling script).
check_paper_data() {
  missing=0
  for d in bounding_box_train query bounding_box_test; do
    need -d "$DATA/$d/" "Occluded-Duke images, made from DukeMTMC-reID by lightas' convert_duke_to_occduke.py (github.com/lightas/Occluded-DukeMTMC-Dataset)"
  done
  need -d "$DATA/masks/pifpaf_maskrcnn_filtering/bounding_box_train/" "the bpbreid human-parsing masks (PifPaf confidence fields filtered with Mask R-CNN), downloaded from the bpbreid README (github.com/VlSomers/bpbreid)"
  for f in new_query.txt new_gallery.txt; do
    need -f "$DATA/$f" "the new-benchmark lists from the root of the TSD repository (github.com/hh23333/TSD)"
  done
  need -f "$WEIGHTS" "ImageNet ViT-B/16 weights (timm's jx_vit_base_p16_224-80ecf9dd.pth, linked from the TransReID README)"
  if [ "$missing" -ne 0 ]; then
    echo "$1 needs the real data above. To run everything end to end on synthetic data instead: make demo"
    exit 1
  fi
}

# paper_recipe GROUPING PARTS OUTPUT_DIR EPOCH: the reference's commands (§1.3 of its notes): train with
# lr 0.004, the fore head and the diversity loss, then test OUTPUT_DIR/transformer_EPOCH.pth on the new
# benchmark (ALL / NPO / NTP), on GPU $GPU.
paper_recipe() {
  $PY train.py --config_file configs/OCC_Duke/vit_base.yml INPUT.MASK_PREPROCESS "$1" MODEL.NUM_PARTS "$2" \
    SOLVER.BASE_LR 0.004 MODEL.DEVICE_ID "$GPU" MODEL.WITH_FORE_HEAD True MODEL.WITH_DIVERSE_LOSS True \
    MODEL.PRETRAIN_PATH "$WEIGHTS" OUTPUT_DIR "$3"
  $PY test.py --config_file configs/OCC_Duke/vit_base.yml TEST.WEIGHT "$3/transformer_$4.pth" \
    INPUT.MASK_PREPROCESS "$1" MODEL.NUM_PARTS "$2" MODEL.DEVICE_ID "$GPU" MODEL.WITH_FORE_HEAD True \
    DATASETS.NAMES new_occ_duke TEST.NEW_METRIC True OUTPUT_DIR "$3"
}
