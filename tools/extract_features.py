#!/usr/bin/env python
"""Extract TSD features of your own images and, optionally, rank a gallery folder against them.

    .venv/bin/python tools/extract_features.py --images DIR [--gallery DIR] [--out DIR] [--topk 10] \\
        TEST.WEIGHT logs/occ_duke/tsd_5/transformer_90.pth
    .venv/bin/python tools/extract_features.py --images DIR \\
        --onnx logs/occ_duke/tsd_5/transformer_90.onnx    # the same with onnxruntime (tools/export_onnx.py)

The config is the run's ``config.yaml`` beside ``TEST.WEIGHT`` (or beside the ``--onnx`` file;
``--config_file FILE`` for a model without one). Reads every image under ``--images`` (recursively,
sorted; person crops, any size — they are resized to ``INPUT.SIZE_TEST`` by the evaluation transform;
no identity or camera ids needed) and writes to ``<out>`` (default ``logs/features/<name of the
--images folder>`` in the current folder: the training run's folder is left alone):

* ``features.npy`` (M, 1+P, C) float32: [global, part 1..P] features after the BNNecks, as the model
  returns them (the evaluator L2-normalises each token when ``TEST.FEAT_NORM`` is 'yes');
* ``visibility.npy`` (M, 1+P) float32: [1, part visible (sigmoid > 0.5)];
* ``paths.txt``: the M image paths, one per line, in row order.

With ``--gallery DIR`` the gallery gets the same three files prefixed ``gallery_``, and every image
is ranked against the gallery by the evaluator's visibility-weighted part distance
(``evaluation.distance.part_distance``, i.e. the mean Euclidean distance over the global token and the
mutually visible parts): ``ranking.json`` maps each image path to its top-K ``[{path, distance}]``
and ``ranking/<nnn>_<name>.png`` draws it (no identities: grey frames). ``TEST.RE_RANKING`` is not
applied here.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Sequence

import numpy as np

from config.run_config import EVAL_CONFIG_HELP
from evaluation import query_gallery_distance
from tools import _common as common
from tools.vis_rank import RankedImage, plot_ranking, ranked_gallery
from utils.cli import run_main
from utils.logger import get_logger
from utils.misc import atomic_write_json

__all__ = ["save_features", "default_out", "main"]


def default_out(images: str) -> str:
    """``logs/features/<name of the images folder>``: beside the runs, one folder per image set, never
    inside a training run's folder."""
    return os.path.join("logs", "features", os.path.basename(os.path.abspath(images)))


def save_features(out: str, prefix: str, feats: np.ndarray, vis: np.ndarray, paths: Sequence[str]) -> None:
    """Write ``<prefix>features.npy``, ``<prefix>visibility.npy`` and ``<prefix>paths.txt`` into ``out``."""
    np.save(os.path.join(out, f"{prefix}features.npy"), feats)
    np.save(os.path.join(out, f"{prefix}visibility.npy"), vis)
    with open(os.path.join(out, f"{prefix}paths.txt"), "w") as f:
        f.writelines(p + "\n" for p in paths)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = common.tool_argparser(__doc__.splitlines()[0], config_help=EVAL_CONFIG_HELP.replace(
        "beside TEST.WEIGHT", "beside TEST.WEIGHT or the --onnx file"))
    parser.add_argument("--images", metavar="DIR", required=True, help="folder of images to extract")
    parser.add_argument("--gallery", metavar="DIR", help="also extract this folder and rank it for every image")
    parser.add_argument("--out", metavar="DIR",
                        help="output folder (default logs/features/<name of the --images folder>)")
    parser.add_argument("--topk", type=int, default=10, help="gallery images per ranking (default 10)")
    parser.add_argument("--onnx", metavar="FILE", help="compute the features with onnxruntime from this file of "
                        "tools/export_onnx.py instead of PyTorch (TEST.WEIGHT is then not needed)")
    args = common.parse_tool_args(parser, argv)
    cfg = common.load_tool_cfg(args, need_weight=not args.onnx, model_file=args.onnx)
    out = common.tool_output_dir(cfg, args.out or default_out(args.images), "", "extract_features_log.txt")
    log = get_logger()
    queries = common.folder_records(args.images)
    gallery = common.folder_records(args.gallery) if args.gallery else []

    from processor.inference import eval_amp_dtype, extract_features

    if args.onnx:
        from processor.export import load_onnx_model

        model, device = load_onnx_model(args.onnx, cfg), "cpu"
        flip = False  # the flip, if any, is inside the exported graph
        log.info(f"features from {args.onnx} by onnxruntime"
                 + (" (flip averaged in the graph)" if model.metadata.get("flip_feats") else ""))
    else:
        (model, device), flip = common.load_model(cfg, num_classes=1), cfg.TEST.FLIP_FEATS
    amp = None if args.onnx else eval_amp_dtype(cfg, device)  # TEST.AMP, as test.py
    data = extract_features(model, common.eval_loader(cfg, queries, gallery), device, flip=flip, amp_dtype=amp)
    feats, vis, paths, m = data["feats"].cpu().numpy(), data["vis"].cpu().numpy(), data["paths"], len(queries)
    save_features(out, "", feats[:m], vis[:m], paths[:m])
    log.info(f"wrote features {feats[:m].shape} and visibility {vis[:m].shape} of {args.images} to {out}"
             + ("" if args.out else " (the default folder; --out DIR chooses another)"))
    if not gallery:
        return 0

    save_features(out, "gallery_", feats[m:], vis[m:], paths[m:])
    if cfg.TEST.RE_RANKING:
        log.warning("TEST.RE_RANKING is ignored here: the rankings use the plain part distance")
    dist = query_gallery_distance(data["feats"].float(), data["vis"].float(), m,
                                  cfg.TEST.FEAT_NORM == "yes").cpu().numpy()
    names, rankings = common.query_names(cfg), {}
    os.makedirs(os.path.join(out, "ranking"), exist_ok=True)
    for i in range(m):
        top = ranked_gallery(dist[i], np.zeros(dist.shape[1], dtype=bool), args.topk)
        ranked = [RankedImage(paths[m + j], vis[m + j, 1:],
                              f"#{r + 1}  d {dist[i, j]:.3f}\n{common.file_stem(paths[m + j])[:16]}")
                  for r, j in enumerate(top)]
        query = RankedImage(paths[i], vis[i, 1:], f"query\n{common.file_stem(paths[i])[:16]}")
        fig = plot_ranking(query, ranked, names, cfg.INPUT.SIZE_TEST, os.path.basename(paths[i]))
        common.save_figure(fig, common.figure_path(os.path.join(out, "ranking"), i, paths[i]))
        rankings[paths[i]] = [{"path": paths[m + j], "distance": float(dist[i, j])} for j in top]
    atomic_write_json(rankings, os.path.join(out, "ranking.json"))
    log.info(f"ranked {len(gallery)} gallery images of {args.gallery} for {m} images: "
             f"{out}/ranking.json, {out}/ranking/")
    return 0


if __name__ == "__main__":
    run_main(main)
