#!/usr/bin/env python
"""Training data throughput per CPU core: today's per-sample pipeline vs the cached + batched one.

Runs the real TSD training loader (paper config: identity sampler, 256x128, ``five`` parts, batch 64)
in-process (``NUM_WORKERS 0``, one torch thread: one core, the way a loader worker runs) over a slice
of the ``full``-scale synthetic Occluded-Duke -- the real file names, real image sizes (150-300 px
high) and float16 (36, H/8, W/8) masks -- generated into a temporary folder unless ``--root`` is
given. Pipelines, measured in the same run:

- ``per-sample`` (the baseline, the reference's): JPEG decode, mask load + grouping, v2 resize / flip /
  pad-crop / normalise / erasing and background + softmax at full resolution, per sample;
- ``cache``: ``DATALOADER.CACHE`` (decoded once, memory-mapped) with the per-sample augmentation;
- ``batched``: ``INPUT.BATCH_AUGMENT`` decoding per sample, augmenting whole batches;
- ``cache+batched`` (the new path): both.

The batched transform normally runs on the GPU after the transfer; here it runs on the CPU over every
produced batch and its time counts against the pipeline. The first batch of every setting is not
timed; the pipelines take turns (``--rounds``) and each one's fastest round counts, which keeps a
burst of load from other processes out of the ratio. Also reported: the cache build time and size.
The last line is the new path's speed-up.

    .venv/bin/python tools/bench_data.py [--root DATA_ROOT] [--slice 2000] [--samples 1024] [--batch 64]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import tempfile
import time

import torch

from config import load_cfg
from datasets import build_dataset, make_batch_transform, make_train_loader, preflight

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "OCC_Duke", "vit_base.yml")
NAMES = os.path.join(os.path.dirname(REPO), "shared", "data", "Occluded_Duke")
# name: (DATALOADER.CACHE, INPUT.BATCH_AUGMENT)
PIPELINES = {"per-sample": (False, False), "cache": (True, False), "batched": (False, True),
             "cache+batched": (True, True)}


class Timed:
    """One pipeline's loader (and batched transform) over endless epochs, timed batch by batch."""

    def __init__(self, cfg):
        dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
        preflight(cfg, dataset)
        self.loader = make_train_loader(cfg, dataset)
        self.transform = make_batch_transform(cfg)
        self.batches = self._endless()
        self.run(1)  # start-up and the first batch are not timed

    def _endless(self):
        while True:
            yield from self.loader

    def run(self, num_batches: int) -> tuple[float, float, int]:
        """``(loader seconds, transform seconds, samples)`` of the next ``num_batches`` batches."""
        loading = augmenting = 0.0
        seen = 0
        for _ in range(num_batches):
            t0 = time.perf_counter()
            batch = next(self.batches)
            t1 = time.perf_counter()
            if self.transform is not None:
                batch = self.transform(batch)
            loading, augmenting = loading + t1 - t0, augmenting + time.perf_counter() - t1
            seen += len(batch)
        return loading, augmenting, seen


def measure(cfgs: dict, num_samples: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per pipeline: ``(loader, transform)`` seconds per sample of its fastest round.

    The pipelines take turns, ``rounds`` rounds of ``num_samples / rounds`` samples each; the fastest
    round of each counts, so a burst of load from other processes on the machine does not.
    """
    timed = {name: Timed(cfg) for name, cfg in cfgs.items()}
    batch = next(iter(cfgs.values())).SOLVER.IMS_PER_BATCH
    per_round = max(1, round(num_samples / rounds / batch))
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, t in timed.items():
            loading, augmenting, seen = t.run(per_round)
            if name not in best or loading + augmenting < seen * sum(best[name]):
                best[name] = (loading / seen, augmenting / seen)
    return best


def folder_bytes(folder: str) -> int:
    """Total size of the files under ``folder``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root with Occluded_Duke/ (default: generate a slice)")
    parser.add_argument("--names-from", default=NAMES, help="real Occluded-Duke name lists for the slice")
    parser.add_argument("--slice", type=int, default=2000, help="training images of the generated slice")
    parser.add_argument("--samples", type=int, default=1536, help="timed samples per pipeline")
    parser.add_argument("--rounds", type=int, default=4, help="turns per pipeline; the fastest counts")
    parser.add_argument("--batch", type=int, default=64, help="SOLVER.IMS_PER_BATCH (multiple of 4)")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--build-workers", type=int, default=os.cpu_count() or 1, help="cache build processes")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per process, the way a loader worker runs

    with tempfile.TemporaryDirectory(prefix="tsd_bench_") as tmp:
        root = args.root
        if root is None:
            from tools.synthetic.occ_duke import write_name_lists
            from tools.synthetic.writer import generate

            root = os.path.join(tmp, "data")
            # The first --slice training names (whole identities, file order) and a few queries / gallery images.
            names = write_name_lists(args.names_from, os.path.join(tmp, "names"), {
                "bounding_box_train.list": args.slice, "query.list": 16, "bounding_box_test.list": 16,
                "new_query.txt": 0, "new_gallery.txt": 0})
            print(f"generating a {args.slice}-image slice of the full synthetic set in {root} ...", flush=True)
            generate(root, scale="full", seed=0, names_from=names, workers=args.build_workers)
        cache_dir = os.path.join(tmp, "cache")
        cfgs, build = {}, None
        for name in args.pipelines:
            cache, batched = PIPELINES[name]
            opts = ["DATASETS.ROOT_DIR", root, "SOLVER.IMS_PER_BATCH", str(args.batch), "MODEL.DEVICE", "cpu",
                    "DATALOADER.CACHE", str(cache), "DATALOADER.CACHE_DIR", cache_dir, "INPUT.BATCH_AUGMENT",
                    str(batched), "DATALOADER.NUM_WORKERS"]
            if cache and build is None:  # built with --build-workers processes, then read in-process
                cfg = load_cfg(CONFIG, [*opts, str(args.build_workers)])
                dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
                start = time.perf_counter()
                make_train_loader(cfg, dataset)
                build = (time.perf_counter() - start, folder_bytes(cache_dir), len(dataset.train))
            cfgs[name] = cfg = load_cfg(CONFIG, [*opts, "0"])
        results = measure(cfgs, args.samples, args.rounds)

    print(f"\ntraining samples (JPEG + mask -> augmented {cfg.INPUT.SIZE_TRAIN[0]}x{cfg.INPUT.SIZE_TRAIN[1]} image + "
          f"{cfg.MODEL.NUM_PARTS + 1}-channel soft mask), one core, batch {args.batch}; "
          f"batched transform run on the CPU")
    print(f"{'pipeline':<15} {'loader us':>10} {'batch-tf us':>12} {'samples/s/core':>15} {'vs per-sample':>14}")
    base = results.get("per-sample")
    for name, (loading, augmenting) in results.items():
        rate = 1 / (loading + augmenting)
        ratio = f"{rate * sum(base):.2f}x" if base else "-"
        print(f"{name:<15} {loading * 1e6:>10.0f} {augmenting * 1e6:>12.0f} {rate:>15.1f} {ratio:>14}")
    if build is not None:
        seconds, nbytes, n = build
        print(f"cache build: {n} images in {seconds:.1f} s with {args.build_workers} process(es), "
              f"{nbytes / 2**20:.0f} MiB on disk ({nbytes / max(n, 1) / 1024:.0f} KiB per image)")
    if base and "cache+batched" in results:
        print(f"per-core speed-up: {sum(base) / sum(results['cache+batched']):.2f}x")


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main)
