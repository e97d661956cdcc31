#!/usr/bin/env sh
# The reference's run_tsd_2.sh: train TSD with three parts (head, upper body, lower body) on
# Occluded-Duke, then evaluate the epoch-120 checkpoint (the last) on the TSD new benchmark
# (ALL / NPO / NTP). GPU: $GPU (default 0; the reference hard-codes 1 to run beside run_tsd.sh on GPU 0:
# `GPU=1 sh run_tsd_2.sh`). The commands: paper_recipe in tools/paper_data.sh. Synthetic data: `make demo`.
set -eu
cd "$(dirname "$0")"
. tools/paper_data.sh
check_paper_data run_tsd_2.sh
paper_recipe three 3 logs/occ_duke/tsd_3 120
