"""Throughput of the full TSD training step: forward + every loss + backward + SGD update (+ GradScaler).

The step is :meth:`processor.trainer.Trainer.run_step` itself, fed a fixed in-memory batch so data
loading is not measured (see ``tools/bench_data.py`` for that). Each setting is built, warmed up, timed
and freed before the next one is built, so its peak memory is its own; 'vs first' is against the first
setting of the same run, 'eager x' is a compiled setting (``SOLVER.COMPILE``, inductor) against the same
model and precision in eager mode. The warm-up column holds the untimed first steps (for compiled
settings: the compilation).

First (``--no-host`` skips it) the host time per step of the tiny model at batch 64 on small inputs, a
proxy for what a GPU step costs the CPU that launches it: the step as it is (parameter groups of equal
lr and weight decay, one host read) against the earlier step reproduced in the same run (one group per
tensor as in the reference, and the host reads of the part triplet's ``if torch.isinf(loss)`` and of the
erasing rectangles), each with its parameter-group count and host reads per step (counted).

    python tools/bench_train.py                           # CPU: host time; ViT-B, tiny: fp32 / bf16, eager + compiled
    python tools/bench_train.py --device cuda --batch 64  # GPU: fp16 AMP (GradScaler), bf16, fp32, each eager +
                                                          # compiled, peak memory
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import gc
import os
import statistics
import sys
import time
import traceback
from collections.abc import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F

from config import load_cfg
from loss import make_loss
from model import make_model
from processor.trainer import Trainer, compile_model
from solver import create_scheduler, make_optimizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "OCC_Duke", "vit_base.yml")
NUM_CLASSES = 702
TINY = "vit_tiny_patch16_TransReID"
# Tensor methods that copy a value to the host: on a GPU each one waits for every queued kernel.
HOST_READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")


@contextlib.contextmanager
def count_host_reads() -> Iterator[collections.Counter]:
    """Count the calls of :data:`HOST_READS` inside the block, by ``'<method> <file>:<line>'`` of the caller."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name):
        def read(self, *args, **kwargs):
            frame = traceback.extract_stack(limit=2)[0]
            counts[f"{name} {os.path.relpath(frame.filename, REPO)}:{frame.lineno}"] += 1
            return originals[name](self, *args, **kwargs)
        return read

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, counting(name))
        yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def random_batch(cfg, batch: int, size: tuple[int, int], device: str, raw: bool = False):
    """A P x K batch (4 images per identity) of random data on ``device``.

    ``raw``: as the loader of ``INPUT.BATCH_AUGMENT`` ships it (uint8 images, low-resolution part maps,
    per-sample augmentation parameters drawn as the workers draw them), for the trainer's batch
    transform; else already augmented (float images, soft masks).
    """
    from datasets.batch import TrainBatch
    from datasets.batch_transforms import AugmentParams, batch_collate

    h, w = size
    p = cfg.MODEL.NUM_PARTS
    pids = torch.arange(batch) // 4
    if not raw:
        masks = F.interpolate(torch.randn(batch, p + 1, h // 8, w // 8) * 15, size=(h, w)).softmax(1)
        return TrainBatch(torch.randn(batch, 3, h, w), pids, torch.zeros(batch, dtype=torch.long),
                          torch.zeros(batch, dtype=torch.long), masks).to(device)
    params = AugmentParams(size, cfg.INPUT.PROB, cfg.INPUT.PADDING, cfg.INPUT.RE_PROB)
    samples = [(torch.randint(0, 256, (3, h, w), dtype=torch.uint8), int(pids[i]), 0, 0,
                torch.rand(p, h // 8, w // 8).half(), params()) for i in range(batch)]
    return batch_collate(samples).to(device)


def build(backbone: str, device: str, dtype: torch.dtype | None, batch: int, size: tuple[int, int],
          compile: str | None = None, config: str = CONFIG, per_tensor: bool = False, raw: bool = False):
    """A Trainer for ``config`` (default the paper's) with ``backbone`` and a fixed P x K batch of random data.

    ``compile``: None (eager), 'inductor' (``SOLVER.COMPILE``: :func:`processor.trainer.compile_model`)
    or 'eager' (dynamo capture without code generation: exercises the compiled path in seconds).
    GradScaler exactly when ``dtype`` is float16. ``per_tensor``: the reference's one parameter group per
    tensor. ``raw``: the batch goes through the trainer's batch transform (see :func:`random_batch`).
    """
    from datasets import make_batch_transform

    cfg = load_cfg(config, ["MODEL.PRETRAIN_CHOICE", "none", "MODEL.DEVICE", device, "MODEL.TRANSFORMER_TYPE", backbone,
                            "INPUT.SIZE_TRAIN", str(list(size)), "INPUT.BATCH_AUGMENT", str(raw)])
    torch.manual_seed(0)
    model = make_model(cfg, NUM_CLASSES, 8, 1).to(device)
    optimizer = make_optimizer(cfg, model, per_tensor=per_tensor)
    scheduler = create_scheduler(cfg, optimizer)
    scheduler.step(10)
    if compile == "inductor":
        compile_model(model, "default")
    elif compile == "eager":
        model.compile(backend="eager", dynamic=False)
    trainer = Trainer(model, make_loss(cfg, NUM_CLASSES), optimizer, scheduler, [None], device, 1,
                      amp_dtype=dtype, use_scaler=dtype == torch.float16, batch_transform=make_batch_transform(cfg))
    model.train()
    return trainer, random_batch(cfg, batch, size, device, raw)


def timed_steps(trainer: Trainer, data, device: str, n: int = 1) -> float:
    """Seconds per step over ``n`` consecutive steps (the device synchronised before and after only)."""
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        trainer.run_step(data)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def free(compiled: bool) -> None:
    """Release a measured setting: its tensors, the allocator's cache and (compiled) dynamo's graphs."""
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_earlier_host_reads(trainer: Trainer, data):
    """The step as it was before the host reads were removed, for the baseline: the batch without
    ``erase_boxes`` (the erasing loop reads the rectangles back, twice) and the part triplet's
    ``if torch.isinf(loss)`` read of each part-triplet term."""
    from loss.make_loss import PART_TRIPLET_FEATS

    loss_fn = trainer.loss_fn

    def reading(outputs, labels):
        terms = loss_fn(outputs, labels)
        for name in PART_TRIPLET_FEATS.values():
            if name in terms:
                bool(torch.isinf(terms[name]))  # the reference's ``if torch.isinf(loss)``: one read per term
        return terms

    trainer.loss_fn = reading
    return dataclasses.replace(data, augment=dataclasses.replace(data.augment, erase_boxes=None))


def host_time(device: str, batch: int, size: tuple[int, int], iters: int) -> None:
    """Host ms per step of the tiny TSD step, before (per-tensor groups + the earlier host reads) and
    now, measured alternately in one run; with parameter groups and host reads per step."""
    runs = {}
    for name, per_tensor in (("before: per-tensor groups, host reads", True), ("now", False)):
        trainer, data = build(TINY, device, None, batch, size, per_tensor=per_tensor, raw=True)
        if per_tensor:
            data = with_earlier_host_reads(trainer, data)
        timed_steps(trainer, data, device, 2)  # lazy set-up (optimizer state), allocator warm
        with count_host_reads() as reads:
            trainer.run_step(data)
        runs[name] = (trainer, data, len(trainer.optimizer.param_groups), sum(reads.values()), [], [])
    for _ in range(iters):  # alternate, so that a change of machine load hits both alike
        for trainer, data, _, _, steps, updates in runs.values():
            steps.append(timed_steps(trainer, data, device))
            t = time.perf_counter()
            trainer.optimizer.step()  # the update alone, on the step's gradients (still in place)
            if device == "cuda":
                torch.cuda.synchronize()
            updates.append(time.perf_counter() - t)
    print(f"\nhost time per step (proxy for a GPU step's launch cost): tiny TSD, batch {batch}, {size[0]}x{size[1]}, "
          f"fp32 eager, {device}, batched augmentation in the step; medians of {iters} alternated steps; "
          f"'update' is optimizer.step() alone", flush=True)
    print(f"{'step':<40}{'param groups':>14}{'host reads':>12}{'ms/step':>9}{'vs before':>11}{'update ms':>11}"
          f"{'vs before':>11}")
    before = None
    for name, (*_, groups, reads, steps, updates) in runs.items():
        ms, update = (1000 * statistics.median(t) for t in (steps, updates))
        before = before or (ms, update)
        print(f"{name:<40}{groups:>14}{reads:>12}{ms:>9.2f}{before[0] / ms:>10.2f}x{update:>11.2f}"
              f"{before[1] / update:>10.2f}x")
    runs.clear()
    free(False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-vitb", action="store_true", help="skip the ViT-B settings")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    p.add_argument("--no-host", action="store_true", help="skip the host-time comparison")
    p.add_argument("--host-batch", type=int, default=64, help="batch of the host-time comparison")
    p.add_argument("--host-size", type=int, nargs=2, default=[64, 32], metavar=("H", "W"),
                   help="input size of the host-time comparison (small: the host's share of the step shows)")
    p.add_argument("--host-iters", type=int, default=20)
    p.add_argument("--only-host", action="store_true", help="only the host-time comparison")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_host:
        host_time(args.device, args.host_batch, tuple(args.host_size), args.host_iters)
    if args.only_host:
        return
    base = "vit_base_patch16_224_TransReID"
    if args.device == "cuda":
        settings = {"ViT-B fp16 AMP": (base, torch.float16, None), "ViT-B bf16 AMP": (base, torch.bfloat16, None),
                    "ViT-B fp32": (base, None, None)}
        if not args.no_compile:
            settings.update({f"{k} compiled": (b, d, "inductor") for k, (b, d, _) in list(settings.items())})
    else:
        settings = {}
        if not args.no_vitb:
            settings.update({"ViT-B fp32": (base, None, None), "ViT-B bf16": (base, torch.bfloat16, None)})
            if not args.no_compile:
                settings["ViT-B fp32 compiled"] = (base, None, "inductor")
        settings.update({"tiny fp32": (TINY, None, None), "tiny bf16": (TINY, torch.bfloat16, None)})
        if not args.no_compile:
            settings["tiny fp32 compiled"] = (TINY, None, "inductor")
    print(f"\nTSD training step (5 parts, fore head, diversity), 256x128, batch {args.batch}, {args.device}, "
          f"{args.threads} threads, torch {torch.__version__}; {args.warmup} warm-up + {args.iters} timed steps; "
          f"'eager x' is the speed-up over the same model and precision without torch.compile", flush=True)
    med, first_steps, peak = {}, {}, {}
    for name, (backbone, dtype, compile) in settings.items():  # one model alive at a time
        trainer, data = build(backbone, args.device, dtype, args.batch, (256, 128), compile)
        t = time.perf_counter()
        timed_steps(trainer, data, args.device, args.warmup)
        first_steps[name] = time.perf_counter() - t
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        med[name] = statistics.median(timed_steps(trainer, data, args.device) for _ in range(args.iters))
        if args.device == "cuda":
            peak[name] = torch.cuda.max_memory_allocated() / 2**30
        del trainer, data
        free(compile is not None)
    first = next(iter(med.values()))
    print(f"{'setting':<24}{'s/step':>9}{'img/s':>9}{'vs first':>10}{'eager x':>9}{'warm-up s':>11}"
          + ("  peak GiB" if peak else ""))
    for name, s in med.items():
        eager = med.get(name.removesuffix(" compiled")) if name.endswith(" compiled") else None
        line = (f"{name:<24}{s:>9.3f}{args.batch / s:>9.1f}{first / s:>9.2f}x"
                f"{f'{eager / s:.2f}x' if eager else '-':>9}{first_steps[name]:>11.1f}")
        print(line + (f"{peak[name]:>10.2f}" if peak else ""))


if __name__ == "__main__":
    main()
