"""Training-step throughput of the TSD model: forward + loss + backward, images per second.

Four settings in one run: fp32 / bf16 autocast, each with the backbone attention through
``F.scaled_dot_product_attention`` (timm's fused path, the default) and through the explicit
``softmax(QK^T)V`` formula (:func:`model.fused_attention`). The part decoder always uses its explicit
masked formula (it has P + 2 queries, a negligible cost). Ratios are against fp32 + SDPA.

    .venv/bin/python tools/bench_model.py                 # ViT-B/16 TSD, 256x128, batch 16, official config
    .venv/bin/python tools/bench_model.py --tiny          # the tiny test backbone
    .venv/bin/python tools/bench_model.py --device cuda --batch 64
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import load_cfg
from loss import make_loss
from model import fused_attention, make_model

OFFICIAL_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "configs", "OCC_Duke", "vit_base.yml")
NUM_CLASSES = 702  # Occluded-Duke training identities
IDS_PER_BATCH_K = 4  # P x K batches as in training (K = 4 images per identity)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="vit_tiny_patch16_TransReID instead of ViT-B/16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=5, help="timed iterations per setting")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--device", default="cpu")
    return p.parse_args()


def train_step(model, loss_fn, batch: tuple, dtype: torch.dtype | None, fused: bool, device: torch.device) -> float:
    """Seconds of one forward + loss + backward step."""
    images, labels, masks = batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    with fused_attention(model, fused), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                       enabled=dtype is not None):
        outputs = model(images, labels, masks)
        loss = sum(loss_fn(outputs, labels).values())
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    opts = ["MODEL.PRETRAIN_CHOICE", "none", "MODEL.DEVICE", "cpu" if args.device == "cpu" else "cuda"]
    if args.tiny:
        opts += ["MODEL.TRANSFORMER_TYPE", "vit_tiny_patch16_TransReID"]
    cfg = load_cfg(OFFICIAL_CONFIG, opts)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model(cfg, NUM_CLASSES, 8, 1).to(device).train()
    loss_fn = make_loss(cfg, NUM_CLASSES)
    h, w = cfg.INPUT.SIZE_TRAIN
    parts = cfg.MODEL.NUM_PARTS
    images = torch.randn(args.batch, 3, h, w, device=device)
    labels = torch.arange(args.batch, device=device) // IDS_PER_BATCH_K
    masks = F.interpolate(torch.randn(args.batch, parts + 1, h // 16, w // 16, device=device) * 15,
                          size=(h, w)).softmax(1)

    print(
        f"{cfg.MODEL.TRANSFORMER_TYPE} TSD, {h}x{w}, batch {args.batch}, {NUM_CLASSES} classes, device {args.device}, "
        f"{args.threads} threads, torch {torch.__version__}; {args.warmup} warm-up + {args.iters} timed steps "
        "per setting, round-robin, median"
    )
    settings = {
        f"{dtype_name} {attn_name}": (dtype, fused)
        for dtype_name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16))
        for attn_name, fused in (("SDPA", True), ("explicit", False))
    }
    batch = (images, labels, masks)
    for dtype, fused in settings.values():
        for _ in range(args.warmup):
            train_step(model, loss_fn, batch, dtype, fused, device)
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.iters):  # round-robin, so load changes on a shared machine hit every setting alike
        for name, (dtype, fused) in settings.items():
            times[name].append(train_step(model, loss_fn, batch, dtype, fused, device))
    baseline = statistics.median(times["fp32 SDPA"])
    # min-max shows how much a shared machine disturbed the run
    print(f"{'setting':<24}{'s/step':>10}{'min-max':>16}{'img/s':>10}{'vs fp32 SDPA':>15}")
    for name, ts in times.items():
        seconds = statistics.median(ts)
        spread = f"{min(ts):.3f}-{max(ts):.3f}"
        print(f"{name:<24}{seconds:>10.3f}{spread:>16}{args.batch / seconds:>10.2f}{baseline / seconds:>14.2f}x")


if __name__ == "__main__":
    main()
