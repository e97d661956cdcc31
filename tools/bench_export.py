#!/usr/bin/env python
"""Evaluation-forward throughput of the exported model: onnxruntime vs PyTorch on the CPU, images per second.

    .venv/bin/python tools/bench_export.py                                   # tiny demo TSD, random weights
    .venv/bin/python tools/bench_export.py --config_file configs/demo/vit_tiny.yml --batch 64
    .venv/bin/python tools/bench_export.py --config_file configs/OCC_Duke/vit_base.yml --batch 8 TEST.WEIGHT W.pth

Builds the configured model (``TEST.WEIGHT`` if given, else a random initialisation: speed does not
depend on the weights), exports it with :func:`processor.export.export_onnx` into a temporary folder,
checks it, and times both runtimes on the same batch round-robin with the same number of threads
(median of ``--iters`` after warm-up). The ratio is onnxruntime / PyTorch (> 1: onnxruntime faster).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch import nn

from config.run_config import check_test_weight, load_eval_cfg
from utils.cli import config_argparser, run_main

DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "demo", "tsd_tiny.yml")


def compare_speed(model: nn.Module, session, images: torch.Tensor, warmup: int = 2, iters: int = 5,
                  gap: float = 0.2) -> dict[str, float]:
    """Images per second of the evaluation forward in PyTorch (eval, no grad) and in onnxruntime on one
    batch, timed round-robin (median of ``iters`` after ``warmup``) so that both see the same load.

    Each timed call waits ``gap`` seconds first: both runtimes' worker threads keep spinning for a
    while after a call (OpenMP's and onnxruntime's busy-wait) and would take cores from the other
    one's call (on 2 cores this cost either side 2-3x).

    The flip, if exported, must be reflected by the caller's ``model`` (pass a
    :class:`processor.export.EvalModel`).

    Returns:
        ``{'torch': img/s, 'onnxruntime': img/s, 'ratio': ort / torch}``.
    """
    from processor.export import OnnxModel

    onnx_model = OnnxModel(session)
    model.eval()
    runs = {"torch": model, "onnxruntime": onnx_model}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for i in range(warmup + iters):
            for name, m in runs.items():
                time.sleep(gap)
                start = time.perf_counter()
                m(images)
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    speed = {k: images.shape[0] / float(np.median(v)) for k, v in times.items()}
    speed["ratio"] = speed["onnxruntime"] / speed["torch"]
    return speed


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    from model import make_model
    from processor.export import EvalModel, export_onnx, onnx_session, random_batches, verify_onnx

    parser = config_argparser(__doc__.splitlines()[0], config_required=False)
    parser.add_argument("--batch", type=int, default=32, help="images per forward (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of both runtimes (default 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="timed forwards per runtime (default 5)")
    args = parser.parse_args(argv)
    cfg = load_eval_cfg(args.config_file or DEMO_CONFIG, list(args.opts) + ["MODEL.DEVICE", "cpu"])
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = make_model(cfg, 1).eval()
    if cfg.TEST.WEIGHT:
        check_test_weight(cfg)
        model.load_param(cfg.TEST.WEIGHT)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, cfg, os.path.join(tmp, "model.onnx"))
        session = onnx_session(path, args.threads)
        check = verify_onnx(model, session, random_batches(cfg), cfg.TEST.FLIP_FEATS)
        h, w = cfg.INPUT.SIZE_TEST
        images = torch.randn(args.batch, 3, h, w)
        speed = compare_speed(EvalModel(model, cfg.TEST.FLIP_FEATS), session, images, args.warmup, args.iters)
    import onnxruntime

    print(f"{cfg.MODEL.TRANSFORMER_TYPE} {cfg.MODEL.ARCH}, {h}x{w}, flip {cfg.TEST.FLIP_FEATS}, batch {args.batch}, "
          f"{args.threads} threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
          f"{args.warmup} warm-up + {args.iters} timed forwards per runtime, round-robin, median")
    print(check.summary())
    print(f"{'runtime':<12}{'img/s':>10}{'ratio':>8}")
    print(f"{'PyTorch':<12}{speed['torch']:>10.1f}{1.0:>8.2f}")
    print(f"{'onnxruntime':<12}{speed['onnxruntime']:>10.1f}{speed['ratio']:>8.2f}")
    return 0


if __name__ == "__main__":
    run_main(main)
