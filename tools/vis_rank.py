#!/usr/bin/env python
"""Draw the top-K gallery of query images under the configured evaluation protocol.

    .venv/bin/python tools/vis_rank.py [--num-queries 8] [--topk 10] [--out DIR] \\
        TEST.WEIGHT logs/occ_duke/tsd_5/transformer_90.pth

The config is the run's ``config.yaml`` beside ``TEST.WEIGHT`` (``--config_file FILE`` for a checkpoint
without one; ``KEY VALUE`` pairs override it, e.g. ``DATASETS.NAMES new_occ_duke TEST.NEW_METRIC
True``). Evaluates the val set (query + gallery) exactly like ``test.py`` — same features,
visibility-weighted part distance and protocol (``TEST.NEW_METRIC``, ``TEST.RE_RANKING``,
``TEST.FLIP_FEATS``) — logs the metrics, and for ``--num-queries`` queries (half rank-1 failures, half
successes, spread over the query list) writes ``<out>/<nnn>_<query name>.png``: the query (blue frame)
and its top-K gallery images with green (same identity) / red (other identity) frames, their distances
to the query ``d`` (lower = closer), and a strip of per-part visibility squares under each image (for
'five' H A T L F: head, arm, torso, leg, feet; coloured = predicted visible, used in the distance; grey
= hidden). A legend at the bottom of every picture says the same. Gallery images the protocol removes
for that query (same identity and camera; on the new benchmark also the ignored occlusion labels) are
skipped, as in the evaluation. ``ranking.json`` lists the drawn rankings. ``<out>`` defaults to
``OUTPUT_DIR/vis_rank``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from config.parts import part_abbrev
from evaluation import ReidEvaluator
from evaluation.protocols import ignored_entries
from tools import _common as common
from utils.cli import run_main
from utils.logger import get_logger
from utils.misc import atomic_write_json

__all__ = ["RankedImage", "pick_queries", "protocol_removed", "ranked_gallery", "ranking_legend", "plot_ranking",
           "main"]

FRAME = {True: (0.1, 0.75, 0.2), False: (0.9, 0.1, 0.1), None: (0.55, 0.55, 0.55)}  # match / non-match / unknown
QUERY_FRAME = (0.1, 0.3, 0.9)
VISIBLE, HIDDEN = (0.15, 0.6, 0.25), (0.85, 0.85, 0.85)
FRAME_PX = 5
STRIP_PX = 22  # height of the visibility squares under an image
VISIBLE_AT = 0.5  # vis >= this is drawn as visible (the binary visibilities are 0 / 1)


@dataclass
class RankedImage:
    """One image of a ranking figure.

    Attributes:
        path: image file.
        vis: (P,) part visibility (>= 0.5 is drawn as visible).
        caption: text over the image (rank, distance, identity ...).
        match: same identity as the query (green / red frame); None when unknown (grey frame).
    """

    path: str
    vis: np.ndarray
    caption: str
    match: bool | None = None


def pick_queries(per_query: Mapping[str, np.ndarray], num: int) -> list[int]:
    """Indices of ``num`` valid queries, half rank-1 failures and half successes (the other kind
    fills in when one runs short), each kind spread evenly over the query list.

    Args:
        per_query: the evaluator's per-query results: ``valid`` (Q,) bool and ``cmc`` (Q, R).
    """
    valid = np.asarray(per_query["valid"], dtype=bool)
    hit = np.asarray(per_query["cmc"])[:, 0] > 0
    failures, successes = np.flatnonzero(valid & ~hit), np.flatnonzero(valid & hit)
    num_fail = min(len(failures), max(num // 2, num - len(successes)))
    num_succ = min(len(successes), num - num_fail)

    def spread(indices: np.ndarray, n: int) -> np.ndarray:
        return indices[np.linspace(0, len(indices) - 1, n).round().astype(int)] if n else indices[:0]

    return sorted(int(i) for i in np.concatenate([spread(failures, num_fail), spread(successes, num_succ)]))


def protocol_removed(q_pid: int, q_camid: int, g_pids: np.ndarray, g_camids: np.ndarray,
                     g_ignored: np.ndarray) -> np.ndarray:
    """(G,) bool: gallery entries the protocol drops for this query — same identity and (same camera
    or an ignored occlusion label, ``g_ignored``; all False on the standard protocol)."""
    return (g_pids == q_pid) & ((g_camids == q_camid) | g_ignored)


def ranked_gallery(distances: np.ndarray, removed: np.ndarray, k: int) -> np.ndarray:
    """Gallery indices of the ``k`` nearest kept entries, ascending distance (ties by index, as the
    evaluator's stable ranking)."""
    order = np.argsort(distances, kind="stable")
    return order[~removed[order]][:k]


def _framed(image: np.ndarray, colour: Sequence[float]) -> np.ndarray:
    """``image`` (H, W, 3) with a ``FRAME_PX`` border of ``colour``."""
    height, width = image.shape[:2]
    framed = np.empty((height + 2 * FRAME_PX, width + 2 * FRAME_PX, 3), dtype=image.dtype)
    framed[:] = colour
    framed[FRAME_PX:-FRAME_PX, FRAME_PX:-FRAME_PX] = image
    return framed


def _draw(ax: Axes, item: RankedImage, size: Sequence[int], frame: Sequence[float], labels: Sequence[str]) -> None:
    """The framed image of ``item`` with a row of part-visibility squares under it."""
    picture = _framed(common.display_image(item.path, size), frame)
    height, width = picture.shape[:2]
    if labels:
        strip = np.ones((STRIP_PX, width, 3))
        cell = width / len(labels)
        for k, visible in enumerate(np.asarray(item.vis) >= VISIBLE_AT):
            strip[3:-2, int(k * cell) + 1 : int((k + 1) * cell) - 1] = VISIBLE if visible else HIDDEN
            ax.text((k + 0.5) * cell, height + STRIP_PX / 2 + 0.5, labels[k], ha="center", va="center",
                    fontsize=5, color="white" if visible else "0.45", fontweight="bold")
        picture = np.concatenate([picture, strip])
    ax.imshow(picture)
    ax.set_title(item.caption, fontsize=6)
    ax.axis("off")


def ranking_legend(part_names: Sequence[str], identities: bool) -> str:
    """The legend under a ranking picture: frames (``identities``: whether match colours are drawn),
    the distance, and the visibility strip's letters."""
    frames = ("frames: blue query, green same identity, red other identity; " if identities
              else "frames: blue query, grey gallery (identities unknown); ")
    lines = [frames + "d = distance to the query (lower = closer; ranked by it)"]
    if part_names:
        letters = ", ".join(f"{part_abbrev(n)} {n.replace('_', ' ')}" for n in part_names)
        lines.append(f"squares: {letters}; coloured = predicted visible (used in the distance), grey = hidden")
    return "\n".join(lines)


def plot_ranking(query: RankedImage, gallery: Sequence[RankedImage], part_names: Sequence[str],
                 size: Sequence[int], title: str = "") -> Figure:
    """The query (blue frame), a gap, then the ranked gallery images (frames by ``match``); under each
    image one square per part, coloured when the part is visible; the :func:`ranking_legend` at the
    bottom.

    Args:
        part_names: the P part names (abbreviated in the squares: 'H A T L F' for 'five').
        size: (H, W) at which the images are shown.
    """
    labels = [part_abbrev(n) for n in part_names]
    fig = Figure(figsize=(1.0 * (len(gallery) + 1.3), 2.95), layout="constrained")  # + the legend
    axes = fig.subplots(1, len(gallery) + 2, width_ratios=[1, 0.3] + [1] * len(gallery))
    _draw(axes[0], query, size, QUERY_FRAME, labels)
    axes[1].axis("off")
    for ax, item in zip(axes[2:], gallery):
        _draw(ax, item, size, FRAME[item.match], labels)
    if title:
        fig.suptitle(title, fontsize=7)
    fig.supxlabel(ranking_legend(part_names, any(item.match is not None for item in gallery)), fontsize=5)
    return fig


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = common.tool_argparser(__doc__.splitlines()[0])
    parser.add_argument("--num-queries", type=int, default=8, help="number of queries to draw (default 8)")
    parser.add_argument("--topk", type=int, default=10, help="gallery images per query (default 10)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default OUTPUT_DIR/vis_rank)")
    args = common.parse_tool_args(parser, argv)
    cfg = common.load_tool_cfg(args)
    out = common.tool_output_dir(cfg, args.out, "vis_rank", "vis_rank_log.txt")

    from datasets import make_test_loader
    from processor.inference import eval_amp_dtype, extract_features, format_results

    val_loader, num_query, num_classes, camera_num, view_num = make_test_loader(cfg)
    model, device = common.load_model(cfg, num_classes, camera_num, view_num)
    data = extract_features(model, val_loader, device, flip=cfg.TEST.FLIP_FEATS, amp_dtype=eval_amp_dtype(cfg, device))
    evaluator = ReidEvaluator.from_cfg(cfg, num_query)
    occ = data["occ"] if cfg.TEST.NEW_METRIC else None
    evaluator.update(data["feats"], data["vis"], data["pids"], data["camids"], occ)
    results, distmat = evaluator.compute(return_distmat=True)
    get_logger().info(format_results(results, f"{cfg.DATASETS.NAMES} - {os.path.basename(cfg.TEST.WEIGHT)}"))

    distmat = distmat.cpu().numpy()
    paths, vis = data["paths"], data["vis"][:, 1:].cpu().numpy()
    pids, camids = data["pids"].numpy(), data["camids"].numpy()
    g = slice(num_query, None)
    # the evaluation's own rule for the ranking it drew (ALL split on the new benchmark)
    g_ignored = ignored_entries(evaluator.protocol, occ[g] if occ is not None else None,
                                len(paths) - num_query)["all"].numpy()
    per_query = results["all"]["per_query"]
    names = common.query_names(cfg)
    rankings = {}
    for n, qi in enumerate(pick_queries(per_query, args.num_queries)):
        removed = protocol_removed(pids[qi], camids[qi], pids[g], camids[g], g_ignored)
        top = ranked_gallery(distmat[qi], removed, args.topk)
        query = RankedImage(paths[qi], vis[qi], f"query\nid {pids[qi]} cam {camids[qi] + 1}")
        gallery = [
            RankedImage(paths[num_query + j], vis[num_query + j],
                        f"#{r + 1}  d {distmat[qi, j]:.3f}\nid {pids[num_query + j]} cam {camids[num_query + j] + 1}",
                        bool(pids[num_query + j] == pids[qi]))
            for r, j in enumerate(top)
        ]
        hit = per_query["cmc"][qi, 0] > 0
        title = f"{os.path.basename(paths[qi])}: rank-1 {'hit' if hit else 'miss'}, AP {per_query['ap'][qi]:.2f}"
        common.save_figure(plot_ranking(query, gallery, names, cfg.INPUT.SIZE_TEST, title),
                           common.figure_path(out, n, paths[qi]))
        rankings[paths[qi]] = [{"path": item.path, "distance": float(distmat[qi, j]), "match": item.match}
                               for item, j in zip(gallery, top)]
    atomic_write_json(rankings, os.path.join(out, "ranking.json"))
    get_logger().info(f"wrote {len(rankings)} rankings to {out} (+ ranking.json)")
    return 0


if __name__ == "__main__":
    run_main(main)
