#!/usr/bin/env sh
# The paper recipe (the reference's run_tsd.sh): train TSD with five parts on Occluded-Duke, then
# evaluate the epoch-90 checkpoint on the TSD new benchmark (ALL / NPO / NTP). GPU: $GPU (default 0).
# The commands: paper_recipe in tools/paper_data.sh. Everything runs on synthetic data with `make demo`.
set -eu
cd "$(dirname "$0")"
. tools/paper_data.sh
check_paper_data run_tsd.sh
paper_recipe five 5 logs/occ_duke/tsd_5 90
