#!/usr/bin/env python
"""Export a trained TSD / ViT-baseline model to ONNX and check the file with onnxruntime.

    .venv/bin/python tools/export_onnx.py [--output model.onnx] [--images DIR] [--opset N] \\
        TEST.WEIGHT logs/occ_duke/tsd_5/transformer_90.pth

The config is the run's ``config.yaml`` beside ``TEST.WEIGHT`` (``--config_file FILE`` for a checkpoint
without one). Writes the evaluation model — normalised images (B, 3, H, W) at ``INPUT.SIZE_TEST`` ->
``features`` (B, 1+P, C) after the BNNecks and ``visibility`` (B, 1+P), the flip of ``TEST.FLIP_FEATS``
included — with a dynamic batch axis, as one self-contained file (default: ``TEST.WEIGHT`` with
``.onnx``). The file's metadata (``tsd.*``: input size, pixel mean / std, flip, feature norm, token
names) says how to feed it. Then runs the file in onnxruntime next to PyTorch, on the images under
``--images`` (through the evaluation transform) or else on random batches of two sizes, and stops with
an error unless the features agree within ``--atol`` (default 1e-4, max abs) and the visibilities are
identical (parts whose PyTorch logit lies within 1e-4 of the threshold may differ; they are counted in
the log line).

Export runs on the CPU. Needs the optional packages: ``.venv/bin/pip install -r requirements-export.txt``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from processor.export import FEATURE_TOL, ExportError, export_onnx, onnx_session, random_batches, verify_onnx
from tools import _common as common
from utils.cli import run_main
from utils.logger import get_logger, setup_logger

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""

    parser = common.tool_argparser(__doc__.splitlines()[0])
    parser.add_argument("--output", metavar="FILE", help="the .onnx file to write (default: TEST.WEIGHT with .onnx)")
    parser.add_argument("--images", metavar="DIR", help="check the export on these images (default: random batches)")
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--atol", type=float, default=FEATURE_TOL,
                        help=f"largest max-abs feature difference that passes the check (default {FEATURE_TOL:g})")
    args = common.parse_tool_args(parser, argv)
    args.opts = list(args.opts) + ["MODEL.DEVICE", "cpu"]  # export and its check run on the CPU
    cfg = common.load_tool_cfg(args)
    output = args.output or os.path.splitext(cfg.TEST.WEIGHT)[0] + ".onnx"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    setup_logger(os.path.dirname(os.path.abspath(output)), "export_onnx_log.txt")
    log = get_logger()
    model, _ = common.load_model(cfg, num_classes=1)

    export_onnx(model, cfg, output, args.opset)
    log.info(f"wrote {output} ({os.path.getsize(output) / 2**20:.1f} MiB): images (batch, 3, "
             f"{cfg.INPUT.SIZE_TEST[0]}, {cfg.INPUT.SIZE_TEST[1]}) -> features, visibility"
             + (" (flip averaged in the graph)" if cfg.TEST.FLIP_FEATS else ""))
    if args.images:
        batches = (batch.images for batch in common.eval_loader(cfg, common.folder_records(args.images)))
    else:
        batches = random_batches(cfg)
    check = verify_onnx(model, onnx_session(output), batches, cfg.TEST.FLIP_FEATS, args.atol)
    log.info(check.summary())
    if not check.ok:
        raise ExportError(f"{output} disagrees with the PyTorch model: {check.summary()}")
    return 0


if __name__ == "__main__":
    run_main(main)
