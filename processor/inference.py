"""Feature extraction and evaluation of a model on a query + gallery loader."""
from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from evaluation import ReidEvaluator
from utils import comm
from utils.logger import get_logger
from utils.progress import Progress

from .checkpointer import unwrap


def _features(model: nn.Module, imgs: torch.Tensor, camids: torch.Tensor, flip: bool):
    # Camera ids feed the SIE embedding (ignored by models without SIE); views are not annotated.
    out = model(imgs, cam_label=camids)
    if not flip:
        return out
    # Copies before the next call: a model compiled with CUDA graphs (SOLVER.COMPILE_MODE
    # 'reduce-overhead' / 'max-autotune') returns its outputs in memory that the next call overwrites.
    out = tuple(o.clone() for o in out)
    feats_f, vis_f = model(torch.flip(imgs, dims=[3]), cam_label=camids)[:2]
    # Average the flipped view; visibility becomes the mean vote, which the evaluator's
    # sqrt(v_q * v_g) weighting accepts as a soft value.
    return ((out[0] + feats_f) / 2, (out[1] + vis_f) / 2, *out[2:])


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: str, flip: bool = False,
                     amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Run ``model`` in eval mode over ``loader`` (:class:`datasets.batch.EvalBatch` batches).

    Returns ``feats`` (M,1+P,C) float32, ``vis`` (M,1+P), ``pids``, ``camids``, ``occ`` (M,) int64
    and ``paths`` (list), all on the CPU except ``feats``/``vis`` which stay on ``device``.

    ``amp_dtype``: autocast the forward to this dtype (``TEST.AMP``, see :func:`eval_amp_dtype`).
    The model's outputs are copied before the next call (CUDA graphs reuse their output memory).
    """
    model.eval()
    feats, vis, pids, camids, occ, paths = [], [], [], [], [], []
    autocast = (torch.autocast(device_type=device, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    with Progress(len(loader), "feature extraction", "batches") as progress:
        for batch in loader:
            with autocast:
                f, v = _features(model, batch.images.to(device, non_blocking=True), batch.camids.to(device), flip)[:2]
            feats.append(f.to(torch.float32, copy=True))
            vis.append(v.to(torch.float32, copy=True))
            pids.append(batch.pids)
            camids.append(batch.camids)
            occ.append(batch.occ_labels)
            paths.extend(batch.paths)
            progress.update()
    return {"feats": torch.cat(feats), "vis": torch.cat(vis), "pids": torch.cat(pids),
            "camids": torch.cat(camids), "occ": torch.cat(occ), "paths": paths}


def eval_amp_dtype(cfg, device: str) -> torch.dtype | None:
    """The autocast dtype of feature extraction: None (float32, the reference) unless ``TEST.AMP``,
    then ``SOLVER.AMP_DTYPE`` under the rules of training (:func:`processor.trainer.amp_settings`:
    on a CPU bfloat16 only where it is native, else float32 with a log line)."""
    from .trainer import amp_settings

    return amp_settings(cfg.TEST.AMP, cfg.SOLVER.AMP_DTYPE, device)[0]


def _gather_features(data: dict[str, Any], device: str) -> dict[str, Any] | None:
    """Every rank's :func:`extract_features` output, concatenated in rank order on rank 0 (None elsewhere).

    Shards travel through the CPU (pickled); on rank 0 ``feats``/``vis`` go back to ``device``.
    """
    shards = comm.gather_object({k: v.cpu() if torch.is_tensor(v) else v for k, v in data.items()})
    if shards is None:
        return None
    merged: dict[str, Any] = {k: torch.cat([s[k] for s in shards]) for k in data if k != "paths"}
    merged["paths"] = [p for s in shards for p in s["paths"]]
    merged["feats"], merged["vis"] = merged["feats"].to(device), merged["vis"].to(device)
    return merged


def evaluate(cfg, model: nn.Module, val_loader, num_query: int, device: str) -> dict[str, dict] | None:
    """Extract features for query + gallery and compute CMC / mAP / mINP per protocol split.

    Under torch.distributed, ``val_loader`` holds this rank's contiguous shard of query + gallery
    (:func:`datasets.make_val_loader`): every rank extracts its shard, rank 0 gathers them and computes
    the metrics, and all ranks return together (None on ranks other than 0). Spreading the extraction
    keeps the other ranks' wait short; TransReID's rank-0-only evaluation could exceed the NCCL timeout.
    """
    t0 = time.time()
    distributed = comm.get_world_size() > 1
    if distributed:
        # DDP copies rank 0's buffers to the other ranks at the start of each training forward only, so
        # after the last step every rank holds its own BatchNorm statistics: evaluate with rank 0's.
        comm.broadcast_buffers(unwrap(model))
    data = extract_features(unwrap(model), val_loader, device, flip=cfg.TEST.FLIP_FEATS,
                            amp_dtype=eval_amp_dtype(cfg, device))
    if distributed:
        data = _gather_features(data, device)
    t1 = time.time()
    results = None
    if data is not None:
        evaluator = ReidEvaluator.from_cfg(cfg, num_query)
        evaluator.update(data["feats"], data["vis"], data["pids"], data["camids"],
                         data["occ"] if cfg.TEST.NEW_METRIC else None)
        results = evaluator.compute()
        get_logger().info(f"features {t1 - t0:.1f}s ({len(data['paths'])} images), metrics {time.time() - t1:.1f}s")
    comm.synchronize("the end of the evaluation (rank 0 computes the metrics)")
    return results


SPLIT_NAMES = {"all": "ALL", "npo": "NPO", "ntp": "NTP"}


def _rank(r: dict, k: int) -> float:
    """Rank-``k`` accuracy (a fraction) of result row ``r``; NaN, not 0, where no query counts (a part
    that no query sees)."""
    cmc = np.asarray(r["cmc"])
    return float(cmc[min(k, len(cmc)) - 1]) if len(cmc) and r["num_valid"] else float("nan")


def _row(label: str, r: dict, width: int) -> str:
    return (f"{label:<{width}}{100 * _rank(r, 1):>8.1f}{100 * _rank(r, 5):>8.1f}{100 * _rank(r, 10):>9.1f}"
            f"{100 * r['mAP']:>8.1f}{100 * r['mINP']:>8.1f}{r['num_valid']:>9d}")


def format_results(results: dict[str, dict], title: str = "") -> str:
    """A table: one row per protocol split with Rank-1/5/10, mAP, mINP (percent) and valid queries,
    followed by one indented row per token when the results hold per-token metrics (TEST.PER_PART)."""
    rows = []
    for key, r in results.items():
        rows.append((SPLIT_NAMES.get(key, key), r))
        rows += [(f"  {name}", t) for name, t in r.get("per_token", {}).items()]
    width = max([10, *(len(label) + 1 for label, _ in rows)])  # 'right_feet', 'upper_body' keep the columns
    lines = [title] if title else []
    lines.append(f"{'split':<{width}}{'Rank-1':>8}{'Rank-5':>8}{'Rank-10':>9}{'mAP':>8}{'mINP':>8}{'queries':>9}")
    lines += [_row(label, r, width) for label, r in rows]
    return "\n".join(lines)


def _json_row(r: dict) -> dict:
    return {"rank1": _rank(r, 1), "rank5": _rank(r, 5), "rank10": _rank(r, 10), "mAP": float(r["mAP"]),
            "mINP": float(r["mINP"]), "num_valid": int(r["num_valid"]),
            "cmc": [float(x) for x in np.asarray(r["cmc"])]}


def results_to_json(results: dict[str, dict]) -> dict[str, dict]:
    """JSON-serialisable copy of ``results`` (Rank-1/5/10 and the full CMC as fractions in [0, 1]);
    per-token metrics (TEST.PER_PART) go to ``'per_part': {token name: the same fields but 'cmc'}``."""
    out = {}
    for key, r in results.items():
        out[SPLIT_NAMES.get(key, key)] = row = _json_row(r)
        if "per_token" in r:
            row["per_part"] = {name: {k: v for k, v in _json_row(t).items() if k != "cmc"}
                               for name, t in r["per_token"].items()}
    return out
