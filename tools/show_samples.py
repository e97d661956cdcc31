#!/usr/bin/env python
"""Draw training images with their grouped part masks overlaid (one colour per part, with a legend).

Shows what the TSD pixel classifier is supervised with: the PifPaf fields grouped by
``--grouping`` plus the synthesised background, as the argmax of the soft masks. With
``--augment`` the pairs come out of the real training augmentation (flip, pad + crop, erasing).

    .venv/bin/python tools/show_samples.py --root data/synthetic_small [--out samples.png] [--n 16] [--grouping five]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

from config.parts import PART_GROUPINGS, part_labels
from datasets import DATASET_FACTORY, build_dataset
from datasets.masks import find_mask, load_mask
from datasets.transforms import TrainTransform, read_image
from utils.errors import DataError

MEAN = STD = (0.5, 0.5, 0.5)
ALPHA = 0.55  # opacity of the part colours over the image


def overlay(image: torch.Tensor, soft: torch.Tensor, colours: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB: the de-normalised ``image`` (3,H,W) tinted by the argmax part of ``soft`` (P+1,H,W)."""
    rgb = (image.permute(1, 2, 0).numpy() * np.array(STD) + np.array(MEAN)).clip(0, 1)
    label = soft.argmax(0).numpy()
    tinted = rgb.copy()
    fg = label > 0
    tinted[fg] = (1 - ALPHA) * rgb[fg] + ALPHA * colours[label[fg] - 1]
    return tinted


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="data root (DATASETS.ROOT_DIR)")
    parser.add_argument("--dataset", default="occ_duke", choices=sorted(DATASET_FACTORY))
    parser.add_argument("--out", default="samples.png", help="output PNG")
    parser.add_argument("--n", type=int, default=16, help="number of images")
    parser.add_argument("--grouping", default="five", choices=list(PART_GROUPINGS))
    parser.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    parser.add_argument("--augment", action="store_true", help="apply the training augmentation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    records = build_dataset(args.dataset, args.root).train
    if not records:
        raise DataError(f"{args.dataset} has no training split to draw")
    torch.manual_seed(args.seed)
    picked = torch.randperm(len(records))[:args.n].sort().values.tolist()
    aug = (0.5, 10, 0.5) if args.augment else (0.0, 0, 0.0)  # flip p, padding, erasing p
    transform = TrainTransform(args.size, MEAN, STD, *aug, grouping=args.grouping)
    names = part_labels(args.grouping)
    colours = plt.get_cmap("tab10")(np.arange(len(names)) % 10)[:, :3]

    cols = min(8, len(picked))
    rows = -(-len(picked) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 3.2 * rows + 0.7), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, picked):
        rec = records[index]
        mask_path = find_mask(rec.path)
        if mask_path is None:
            raise DataError(f"no part mask for {rec.path}; run tools/make_synthetic_data.py or add bpbreid's masks")
        image, soft = transform(read_image(rec.path), load_mask(mask_path))
        ax.imshow(overlay(image, soft, colours))
        ax.set_title(os.path.basename(rec.path).rsplit(".", 1)[0], fontsize=6)
    handles = [Patch(color=c, label=n) for c, n in zip(colours, names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.suptitle(f"{args.dataset} training images, '{args.grouping}' part masks"
                 + (" (augmented)" if args.augment else ""), fontsize=9)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(picked)} images)")


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main)
