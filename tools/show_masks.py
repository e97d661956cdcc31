#!/usr/bin/env python
"""Draw images with the part masks of ``tools/make_masks.py`` grouped as training groups them, as one grid PNG.

    .venv/bin/python tools/show_masks.py --images DIR --masks DIR [--out masks.png] [--n 12]

One column per image (``--n`` of them, spread evenly over the sorted list): the image, then its mask
grouped by ``five``, ``eight`` and ``three`` (``INPUT.MASK_PREPROCESS``), each drawn as the argmax of
the soft masks training supervises with (the project's own grouping, background threshold 0.3 and
softmax: :class:`datasets.transforms.TrainTransform` without augmentation), one colour per part.
Images whose mask is all zero (no person found) are titled "no person". Runs in the training
environment (it uses the torch transforms); the masks are looked up as ``make_masks.py --images DIR
--out DIR`` wrote them.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from config.parts import part_labels
from datasets.masks import load_mask
from datasets.transforms import TrainTransform, read_image
from tools.make_masks import folder_jobs
from tools.show_samples import MEAN, STD, overlay
from utils.cli import ArgumentParser
from utils.errors import DataError

GROUPINGS = ("five", "eight", "three")


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, metavar="DIR", help="the images (make_masks.py --images)")
    parser.add_argument("--masks", required=True, metavar="DIR", help="their masks (make_masks.py --out)")
    parser.add_argument("--out", default="masks.png", help="output PNG (default %(default)s)")
    parser.add_argument("--n", type=int, default=12, help="number of images (default %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"),
                        help="drawing size of each image (default 256 128, the training input)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")

    jobs = folder_jobs(args.images, args.masks)
    picked = [jobs[i] for i in np.unique(np.linspace(0, len(jobs) - 1, min(args.n, len(jobs))).round().astype(int))]
    missing = [dst for _, dst in picked if not os.path.isfile(dst)]
    if missing:
        raise DataError(f"{len(missing)} of the drawn images have no mask (first: {missing[0]}); make them with "
                        f"`make masks IMAGES={args.images} OUT={args.masks}`")
    transforms = {g: TrainTransform(args.size, MEAN, STD, 0.0, 0, 0.0, grouping=g) for g in GROUPINGS}
    colours = {g: matplotlib.colormaps["tab10"](np.arange(len(part_labels(g))) % 10)[:, :3] for g in GROUPINGS}

    cols, rows = len(picked), 1 + len(GROUPINGS)
    fig = Figure(figsize=(0.95 * cols + 1.6, 1.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
        ax.spines[:].set_visible(False)
    for col, (src, dst) in enumerate(picked):
        image, raw = read_image(src), load_mask(dst)
        found = bool(raw.max() > 0)
        for row, g in enumerate(GROUPINGS, 1):
            normalised, soft = transforms[g](image, raw)
            axes[row, col].imshow(overlay(normalised, soft, colours[g]))
            if row == 1:  # the plain image, as the transform resized it
                axes[0, col].imshow((normalised.permute(1, 2, 0).numpy() * np.array(STD) + np.array(MEAN)).clip(0, 1))
        stem = os.path.splitext(os.path.basename(src))[0]
        axes[0, col].set_title(stem if found else f"{stem}\nno person", fontsize=5)
    for row, g in enumerate(GROUPINGS, 1):
        axes[row, 0].set_ylabel(g, fontsize=8)
        handles = [Patch(color=c, label=n) for c, n in zip(colours[g], part_labels(g))]
        axes[row, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=6,
                             frameon=False, handlelength=1)
    fig.suptitle(f"part masks of {len(picked)} of the {len(jobs)} images under {args.images}", fontsize=8)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out} ({len(picked)} images)")
    return 0


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main)
