#!/usr/bin/env python
"""Draw where each part query of the TSD student decoder looks (as the original code's vis_attn).

    .venv/bin/python tools/vis_attn.py [--num 16] [--images DIR] [--out DIR] \\
        TEST.WEIGHT logs/occ_duke/tsd_5/transformer_90.pth

The config is the run's ``config.yaml`` beside ``TEST.WEIGHT`` (``--config_file FILE`` for a
checkpoint without one). For the first ``--num`` query images of the configured data set (or of the
images under ``--images``, recursively, sorted) it writes ``<out>/<nnn>_<image name>.png``: the image,
then for the background query and every part query the head-averaged cross-attention (min-max
normalised per map, upsampled bicubic, JET colours blended 50/50 over the image: red = where the query
looks most), titled with the query name, the predicted visibility sigmoid(logit) of that part and
whether it counts as visible (> 0.5: the part enters the distance). ``index.png`` stacks the first
images, ``visibility.json`` holds the numbers. ``<out>`` defaults to ``OUTPUT_DIR/vis_attn``.

Unlike the original code, each column carries its own part's visibility (the original labels part k
with the visibility of the part before it) and the background gets none. The maps of a small model
trained briefly (the demo's tiny ViT) are diffuse and say little; those of a trained ViT-B show parts.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from tools import _common as common
from utils.cli import run_main
from utils.errors import ConfigError, DataError
from utils.logger import get_logger
from utils.misc import atomic_write_json

__all__ = ["AttentionRow", "attention_and_visibility", "head_mean_attention", "attention_titles", "overlay",
           "plot_attention", "main"]

BLEND = 0.5  # weight of the heat map over the image (the reference's 50/50)
VISIBLE_ABOVE = 0.5  # a part is visible when sigmoid(visibility logit) > this (model.tsd's eval forward)
LEGEND = (f"student decoder cross-attention per query (each map min-max scaled, red = most)\n"
          f"vis = predicted visibility: visible when > {VISIBLE_ABOVE} (then the part enters the distance)")
INDEX_ROWS = 6  # images stacked in index.png


@dataclass
class AttentionRow:
    """One image with its attention maps, ready to draw.

    Attributes:
        caption: title of the image column.
        image: (H, W, 3) float RGB in [0, 1].
        maps: (P+1, num_y, num_x) head-averaged attention; row 0 is the background query.
        titles: the P+1 column titles (:func:`attention_titles`).
    """

    caption: str
    image: np.ndarray
    maps: np.ndarray
    titles: list[str]


@torch.no_grad()
def attention_and_visibility(model: nn.Module, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Student cross-attention and part visibility probabilities of a batch (TSD in eval mode).

    The eval forward returns only the thresholded visibility, so the logits of ``visb_pred`` are read
    with a forward hook during the same pass.

    Args:
        imgs: (B, 3, H, W) normalised images.

    Returns:
        ``(attn (B, heads, P+1, N), probs (B, P))`` with ``probs = sigmoid(visb_logits)``.
    """
    logits = []
    handle = model.visb_pred.register_forward_hook(lambda _m, _inp, out: logits.append(out[..., 0]))
    try:
        _, _, attn = model(imgs, return_attn=True)
    finally:
        handle.remove()
    return attn, logits[0].sigmoid()


def head_mean_attention(attn: torch.Tensor, num_y: int, num_x: int) -> torch.Tensor:
    """(B, heads, Q, N) attention → (B, Q, num_y, num_x) mean over heads on the patch grid."""
    return attn.mean(dim=1).unflatten(-1, (num_y, num_x))


def attention_titles(part_names: Sequence[str], probs: Sequence[float]) -> list[str]:
    """Titles of the P+1 attention columns: the background query (no visibility: 'bg'), then part k
    with its own visibility probability ``probs[k]`` = sigmoid(visb_logit_k) and the verdict of the
    threshold (``visible`` above :data:`VISIBLE_ABOVE`, else ``hidden``: 0.50 may round either way)."""
    if len(part_names) != len(probs):
        raise ValueError(f"{len(part_names)} part names for {len(probs)} visibility values")
    return ["background\nbg"] + [f"{name}\nvis {float(p):.2f} {'visible' if p > VISIBLE_ABOVE else 'hidden'}"
                                  for name, p in zip(part_names, probs)]


def overlay(image: np.ndarray, attn_map: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) in [0, 1] blended with the JET colours of ``attn_map`` (num_y, num_x),
    min-max normalised and upsampled bicubic to (H, W)."""
    span = attn_map.max() - attn_map.min()
    norm = (attn_map - attn_map.min()) / span if span > 0 else np.zeros_like(attn_map)
    height, width = image.shape[:2]
    # Bicubic overshoots [0, 1] near sharp peaks; clip before the colour map.
    up = cv2.resize(norm.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    heat = matplotlib.colormaps["jet"](up)[..., :3]
    return (1 - BLEND) * image + BLEND * heat


def plot_attention(rows: Sequence[AttentionRow]) -> Figure:
    """A figure with one line per row: the image, then its P+1 overlays with their titles (hidden
    parts' titles in grey), and the :data:`LEGEND` at the bottom."""
    num_cols = 1 + rows[0].maps.shape[0]
    height, width = rows[0].image.shape[:2]
    panel_w = 1.1
    panel_h = panel_w * height / width + 0.35  # room for a two-line title
    fig = Figure(figsize=(panel_w * num_cols, panel_h * len(rows) + 0.2), layout="constrained")  # + the legend
    for ax_row, row in zip(fig.subplots(len(rows), num_cols, squeeze=False), rows):
        panels = [row.image] + [overlay(row.image, m) for m in row.maps]
        for ax, panel, title in zip(ax_row, panels, [row.caption, *row.titles]):
            ax.imshow(panel)
            ax.set_title(title, fontsize=6.5, color="0.5" if title.endswith("hidden") else "black")
            ax.axis("off")
    fig.supxlabel(LEGEND, fontsize=5)
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = common.tool_argparser(__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=16, help="number of images (default 16)")
    parser.add_argument("--images", metavar="DIR", help="draw the images under DIR instead of the query split")
    parser.add_argument("--out", metavar="DIR", help="output folder (default OUTPUT_DIR/vis_attn)")
    args = common.parse_tool_args(parser, argv)
    cfg = common.load_tool_cfg(args)
    if cfg.MODEL.ARCH != "tsd":
        raise ConfigError(f"MODEL.ARCH {cfg.MODEL.ARCH} has no part decoder to visualise; "
                          "use a TSD model (MODEL.ARCH tsd)")
    out = common.tool_output_dir(cfg, args.out, "vis_attn", "vis_attn_log.txt")
    if args.images:
        records, num_classes, source = common.folder_records(args.images), 1, args.images
    else:
        from datasets import build_dataset

        dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
        records, num_classes, source = dataset.query, dataset.num_train_pids, f"{cfg.DATASETS.NAMES} query"
    records = records[: args.num]
    if not records:
        raise DataError(f"{source} has no images to draw")
    model, device = common.load_model(cfg, num_classes)
    names = common.query_names(cfg)

    index_rows, visibility, count = [], {}, 0
    for batch in common.eval_loader(cfg, records):
        attn, probs = attention_and_visibility(model, batch.images.to(device))
        maps = head_mean_attention(attn, model.base.num_y, model.base.num_x).float().cpu().numpy()
        for path, image_maps, image_probs in zip(batch.paths, maps, probs.float().cpu().numpy()):
            row = AttentionRow(common.file_stem(path), common.display_image(path, cfg.INPUT.SIZE_TEST), image_maps,
                               attention_titles(names, image_probs))
            common.save_figure(plot_attention([row]), common.figure_path(out, count, path))
            visibility[path] = dict(zip(names, map(float, image_probs)))
            count += 1
            if len(index_rows) < INDEX_ROWS:
                index_rows.append(row)
    common.save_figure(plot_attention(index_rows), os.path.join(out, "index.png"), dpi=90)
    atomic_write_json(visibility, os.path.join(out, "visibility.json"))
    get_logger().info(f"wrote {count} attention maps of {source} to {out} (+ index.png, visibility.json)")
    return 0


if __name__ == "__main__":
    run_main(main)
