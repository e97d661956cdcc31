# Shared by run_tsd.sh and run_tsd_2.sh (sourced, POSIX sh): the real data the paper scripts need, each
# missing piece named with where it comes from. Sets PY, DATA and WEIGHTS.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
DATA=data/Occluded_Duke
WEIGHTS=logs/pretrain_model/jx_vit_base_p16_224-80ecf9dd.pth

# check_paper_data NAME: print a line per missing piece and exit 1 if any (NAME: the calling script).
check_paper_data() {
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
    echo "$1 needs the real data above. To run everything end to end on synthetic data instead: make demo"
    exit 1
  fi
}
