#!/usr/bin/env bash
# `make demo`: the whole pipeline on the small synthetic Occluded-Duke, on the CPU, in minutes.
# 1) generate the data set, 2) train the tiny TSD, 3) test it on the standard protocol and on the
# new benchmark, 4) draw the decoder's attention and a ranking, 5) summarise the run: table + curves.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=data/synthetic_small
OUT=logs/demo/tsd_tiny
CFG=configs/demo/tsd_tiny.yml
export HF_HUB_OFFLINE=1
start=$(date +%s)

if [ ! -f "$DATA/Occluded_Duke/new_gallery.txt" ]; then
  $PY tools/make_synthetic_data.py --root "$DATA" --scale small --seed 0 --workers 2
fi
# A second `make demo` continues the run in $OUT (finished: nothing left to train) instead of replacing it.
RESUME=""
[ -f "$OUT/last.pth" ] && RESUME="--resume"
$PY train.py --config_file "$CFG" DATASETS.ROOT_DIR "$DATA" OUTPUT_DIR "$OUT" $RESUME
W=$(ls -t "$OUT"/transformer_*.pth | head -n 1)
# The run's config.yaml beside the weight file gives model, data and device: TEST.WEIGHT is enough.
$PY test.py TEST.WEIGHT "$W"                                                  # -> $OUT/test_occ_duke/
$PY test.py TEST.WEIGHT "$W" DATASETS.NAMES new_occ_duke TEST.NEW_METRIC True  # -> $OUT/test_new_occ_duke/
$PY tools/vis_attn.py TEST.WEIGHT "$W"
$PY tools/vis_rank.py TEST.WEIGHT "$W"
echo
$PY tools/summarize_runs.py "$OUT" --out "$OUT/summary"

echo
echo "demo finished in $(( $(date +%s) - start ))s. Outputs:"
echo "  training log and checkpoints: $OUT/ (train_log.txt, $(basename "$W"), last.pth)"
echo "  standard protocol:            $OUT/test_occ_duke/results.json"
echo "  new benchmark ALL/NPO/NTP:    $OUT/test_new_occ_duke/results.json"
echo "  attention pictures:           $OUT/vis_attn/"
echo "  ranking pictures:             $OUT/vis_rank/"
echo "  run table and curves:         $OUT/summary/ (runs.md, runs.csv, curves.png)"
echo "compare with the ViT baseline (same budget) and read the difference against the seeds' spread:"
echo "  $PY train.py --config_file configs/demo/vit_tiny.yml DATASETS.ROOT_DIR $DATA"
echo "  $PY train.py --config_file $CFG DATASETS.ROOT_DIR $DATA SOLVER.SEED 1 OUTPUT_DIR ${OUT}_seed1"
echo "  $PY train.py --config_file configs/demo/vit_tiny.yml DATASETS.ROOT_DIR $DATA SOLVER.SEED 1 OUTPUT_DIR logs/demo/vit_tiny_seed1"
echo "  $PY tools/summarize_runs.py logs/demo/* --out logs/demo/summary   # one row per run + mean ± std over seeds"
