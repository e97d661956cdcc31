"""Throughput of the full TSD training step: forward + every loss + backward + SGD update (+ GradScaler).

The step is :meth:`processor.trainer.Trainer.run_step` itself, fed a fixed in-memory batch so data
loading is not measured (see ``tools/bench_data.py`` for that). All settings are built and warmed up
first, then timed one after the other in one process; 'vs first' is against the first setting of the
same run, 'eager x' is a compiled setting (``SOLVER.COMPILE``, inductor) against the same model and
precision in eager mode. The warm-up column holds the untimed first steps (for compiled settings:
the compilation).

    python tools/bench_train.py                           # CPU: ViT-B and tiny, fp32 / bf16, eager + compiled
    python tools/bench_train.py --device cuda --batch 64  # GPU: fp16 AMP (GradScaler), bf16, fp32, each eager +
                                                          # compiled, peak memory
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from config import load_cfg  # noqa: E402
from loss import make_loss  # noqa: E402
from model import make_model  # noqa: E402
from processor.trainer import Trainer, compile_model  # noqa: E402
from solver import create_scheduler, make_optimizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "OCC_Duke", "vit_base.yml")
NUM_CLASSES = 702


def build(backbone: str, device: str, dtype: torch.dtype | None, batch: int, size: tuple[int, int],
          compile: str | None = None, config: str = CONFIG):
    """A Trainer for ``config`` (default the paper's) with ``backbone`` and a fixed P x K batch of random data.

    ``compile``: None (eager), 'inductor' (``SOLVER.COMPILE``: :func:`processor.trainer.compile_model`)
    or 'eager' (dynamo capture without code generation: exercises the compiled path in seconds).
    GradScaler exactly when ``dtype`` is float16.
    """
    cfg = load_cfg(config, ["MODEL.PRETRAIN_CHOICE", "none", "MODEL.DEVICE", device, "MODEL.TRANSFORMER_TYPE", backbone,
                            "INPUT.SIZE_TRAIN", str(list(size))])
    torch.manual_seed(0)
    model = make_model(cfg, NUM_CLASSES, 8, 1).to(device)
    optimizer = make_optimizer(cfg, model)
    scheduler = create_scheduler(cfg, optimizer)
    scheduler.step(10)
    if compile == "inductor":
        compile_model(model, "default")
    elif compile == "eager":
        model.compile(backend="eager", dynamic=False)
    trainer = Trainer(model, make_loss(cfg, NUM_CLASSES), optimizer, scheduler, [None], device, 1,
                      amp_dtype=dtype, use_scaler=dtype == torch.float16)
    h, w = size
    p = cfg.MODEL.NUM_PARTS
    masks = F.interpolate(torch.randn(batch, p + 1, h // 8, w // 8) * 15, size=(h, w)).softmax(1)
    data = (torch.randn(batch, 3, h, w), torch.arange(batch) // 4, torch.zeros(batch, dtype=torch.long),
            torch.zeros(batch, dtype=torch.long), masks)
    data = tuple(t.to(device) for t in data)  # on the device already: the step is timed, not the copy
    model.train()
    return trainer, data


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-vitb", action="store_true", help="skip the ViT-B settings")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base, tiny = "vit_base_patch16_224_TransReID", "vit_tiny_patch16_TransReID"
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
        settings.update({"tiny fp32": (tiny, None, None), "tiny bf16": (tiny, torch.bfloat16, None)})
        if not args.no_compile:
            settings["tiny fp32 compiled"] = (tiny, None, "inductor")
    print(f"TSD training step (5 parts, fore head, diversity), 256x128, batch {args.batch}, {args.device}, "
          f"{args.threads} threads, torch {torch.__version__}; {args.warmup} warm-up + {args.iters} timed steps; "
          f"'eager x' is the speed-up over the same model and precision without torch.compile", flush=True)
    runs, first_steps = {}, {}
    for name, (backbone, dtype, compile) in settings.items():
        runs[name] = build(backbone, args.device, dtype, args.batch, (256, 128), compile)
        t = time.perf_counter()
        for _ in range(args.warmup):
            timed_steps(*runs[name], args.device)
        first_steps[name] = time.perf_counter() - t
    times = {name: [] for name in settings}
    peak = {}
    for name, run in runs.items():
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.iters):
            times[name].append(timed_steps(*run, args.device))
        if args.device == "cuda":
            peak[name] = torch.cuda.max_memory_allocated() / 2**30
    med = {name: statistics.median(ts) for name, ts in times.items()}
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
