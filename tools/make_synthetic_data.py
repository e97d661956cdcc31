#!/usr/bin/env python
"""Generate a synthetic stand-in for Occluded-Duke, Market-1501 or Occluded-REID in the exact on-disk layout.

The real images and the bpbreid PifPaf parsing masks cannot be redistributed, so CI, the demo, the
tests and the benchmarks run on this generator's output (reference layout: TSD_REFERENCE.md §3)::

    ROOT/Occluded_Duke/{bounding_box_train,query,bounding_box_test}/<pid:04d>_c<cam>_f<frame:07d>.jpg
    ROOT/Occluded_Duke/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy   (36, H/8, W/8) float16
    ROOT/Occluded_Duke/new_query.txt, new_gallery.txt                      (§3.8 new benchmark)

    --dataset market1501 (train here, test on Occluded-REID: the paper's second protocol)
    ROOT/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/<pid:04d>_c<cam>s<seq>_<frame:06d>_<box:02d>.jpg
    ROOT/Market-1501-v15.09.15/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy   (junk -1, distractors 0000)

    --dataset occ_reid (evaluation only: no masks)
    ROOT/ICME2018_Occluded-Person-Reidentification_datasets/Occluded_REID/
        {occluded_body_images,whole_body_images}/<id:03d>/<id:03d>_<n:02d>.tif

Each image shows one target person (clothes a function of ``(seed, pid)``) on a camera-specific street
scene, with an object or another person in front of it in occluded images; its mask holds the 36 PifPaf
fields zeroed wherever the target is hidden. The code lives in ``tools/synthetic/``: ``render.py`` (one
image), ``occ_duke.py`` / ``market1501.py`` / ``occ_reid.py`` (which files each data set holds) and
``writer.py`` (:func:`generate`, the files on disk); this file is the command line.

Scales: ``tiny`` (~20 ids, unit tests), ``small`` (~100 ids, demo) and ``full``, which mirrors the real
Occluded-Duke one-to-one from its name lists (``--names-from``) and has the real split statistics of
Market-1501 (751 train ids / 12,936 images, 3,368 queries, 19,732 gallery files) and Occluded-REID
(200 ids x 5 occluded + 5 whole-body images). Each image is rendered from its own RNG
seeded by ``(seed, file name)``, so the output bytes do not depend on the number of workers.

Usage::

    python tools/make_synthetic_data.py --root data --scale small --seed 0
    python tools/make_synthetic_data.py --root data --scale full --names-from ../shared/data/Occluded_Duke --workers 2
    python tools/make_synthetic_data.py --root data --dataset market1501 --scale small
    python tools/make_synthetic_data.py --root data --dataset occ_reid --scale small
"""
from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run as a script from anywhere: make `tools` and `utils` importable
    sys.path.insert(0, _REPO)

import argparse  # noqa: E402

from tools.synthetic.writer import DATASETS, SCALE_CHOICES, generate  # noqa: E402
from utils.logger import get_logger, setup_logger  # noqa: E402


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description="Generate a synthetic Occluded-Duke, Market-1501 or Occluded-REID "
                                                 "(images, PifPaf masks, new-benchmark lists) in the real layout.")
    parser.add_argument("--root", required=True, help="data root; the set is written to ROOT/<the data set's folder>")
    parser.add_argument("--dataset", default="occ_duke", choices=DATASETS,
                        help="occ_duke (ROOT/Occluded_Duke), market1501 (ROOT/Market-1501-v15.09.15) or occ_reid "
                             "(ROOT/ICME2018_Occluded-Person-Reidentification_datasets/Occluded_REID)")
    parser.add_argument("--scale", default="tiny", choices=SCALE_CHOICES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names-from", default=None, metavar="DIR",
                        help="folder with the real name lists (.list, new_query.txt, new_gallery.txt); "
                             "--dataset occ_duke --scale full only")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    setup_logger(None)
    stats = generate(args.root, args.scale, args.seed, args.names_from, args.workers, args.dataset)
    log = get_logger()
    for split in stats["images"]:
        log.info("%-20s %6d images %5d ids %6d occluded", split, stats["images"][split], stats["ids"][split],
                 stats["occluded"][split])
    if args.dataset == "occ_duke":
        log.info("new_query.txt %d lines, new_gallery.txt %d lines", stats["new_query"], stats["new_gallery"])
    log.info("done in %.1f s, %.1f MB written", stats["seconds"], stats["bytes"] / 2**20)


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main)
