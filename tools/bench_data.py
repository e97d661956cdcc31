#!/usr/bin/env python
"""Training data throughput: JPEG + PifPaf mask -> augmented (image, soft part masks) pair, per second.

Runs the real TSD training loader (identity sampler, 256x128, ``five`` parts) over the ``small``
synthetic Occluded-Duke (generated into a temporary folder unless ``--root`` is given) with each
requested number of workers and prints a table with the speed-up over the 0-worker baseline measured
in the same run. The first batch of every setting is excluded (worker start-up).

    python tools/bench_data.py [--root DATA_ROOT] [--workers 0 2] [--samples 1024] [--batch 64]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from config import load_cfg  # noqa: E402
from datasets import build_dataset, make_train_loader, preflight  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "OCC_Duke", "vit_base.yml")


def samples_per_second(cfg, num_samples: int) -> float:
    """Steady-state training samples/s of the loader configured by ``cfg`` (first batch excluded)."""
    dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    preflight(cfg, dataset)
    loader = make_train_loader(cfg, dataset)
    seen, start = 0, None
    while start is None or seen < num_samples:
        for batch in loader:
            if start is None:  # worker start-up and the first batch are not timed
                start = time.perf_counter()
                continue
            seen += batch[0].shape[0]
            if seen >= num_samples:
                break
    return seen / (time.perf_counter() - start)


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root with Occluded_Duke/ (default: generate 'small')")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DATALOADER.NUM_WORKERS values")
    parser.add_argument("--samples", type=int, default=1024, help="timed samples per setting")
    parser.add_argument("--batch", type=int, default=64, help="SOLVER.IMS_PER_BATCH (multiple of 4)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per process, the way a loader worker runs

    with tempfile.TemporaryDirectory(prefix="tsd_bench_") as tmp:
        root = args.root
        if root is None:
            from tools.make_synthetic_data import generate

            root = tmp
            print(f"generating the small synthetic set in {root} ...", flush=True)
            generate(root, scale="small", seed=0)
        results = {}
        for workers in args.workers:
            cfg = load_cfg(CONFIG, ["DATASETS.ROOT_DIR", root, "DATALOADER.NUM_WORKERS", str(workers),
                                    "SOLVER.IMS_PER_BATCH", str(args.batch), "MODEL.DEVICE", "cpu"])
            results[workers] = samples_per_second(cfg, args.samples)
    base = results.get(0)
    print(f"\ntraining samples (JPEG + mask -> augmented 256x128 image + {cfg.MODEL.NUM_PARTS + 1}-channel soft mask), "
          f"{os.cpu_count()} CPU cores")
    print(f"{'workers':>8} {'samples/s':>10} {'vs 0 workers':>13}")
    for workers, rate in results.items():
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(f"{workers:>8d} {rate:>10.1f} {ratio:>13}")


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main)
