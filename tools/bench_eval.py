"""Benchmark of the retrieval evaluator: against the reference algorithm and against its GEMM floor.

    .venv/bin/python -m tools.bench_eval                 # Occluded-Duke size: 2,210 x 17,661, 1+5 tokens x 768
    .venv/bin/python -m tools.bench_eval --scale 0.1 --reranking
    .venv/bin/python -m tools.bench_eval --scale msmt17 --dims 256 768 --reranking both              # 11,659 x 82,161
    .venv/bin/python -m tools.bench_eval --scale msmt17 --fraction 0.25 --dims 768 --reranking both  # + extrapolation

Synthetic features with identity structure (Occluded-Duke: 1,110 gallery identities, 519 of them
queried, 8 cameras; MSMT17: 3,060 identities, 15 cameras; gallery parts visible with p = 0.8, query
upper parts with p = 0.9 and lower parts with p = 0.4) are evaluated by

* ``reference``: the original code's evaluation algorithm as written: the (1+P) x Q x G distance
  tensor, ``np.argsort`` and a Python loop over queries (re-ranking: the full (N, N) distance and the
  original per-image loops; the oracles of tests/oracles.py); skipped where its tensors exceed 12 GiB;
* ``ours``: :class:`evaluation.ReidEvaluator` (progress lines with an ETA on stderr);
* ``gemm``: the floor, only the matrix products of the distances (one per token; Q x G without
  re-ranking, N x N with it), in the same run; ``/ GEMM`` is each time divided by it.

Each method runs in a fresh subprocess that only builds the features and runs that method; ``peak``
is its peak RSS (``ru_maxrss``, features included: the whole evaluation), ``extra`` that minus the
peak of a subprocess that only builds the features. With ``--fraction`` below 1 the last column
extrapolates the time to the full size as time / fraction² (every large term is O(Q·G) or O(N²)),
clearly an estimate.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evaluation import ReidEvaluator
from evaluation.reid_evaluation import DEFAULT_RERANK_PARAMS
from tests.oracles import reference_distance, reference_eval, reference_rerank

DUKE = {"num_query": 2210, "num_gallery": 17661, "gallery_ids": 1110, "query_ids": 519, "cameras": 8}
# MSMT17's test split: 11,659 queries and 82,161 gallery images of 3,060 identities, 15 cameras.
MSMT17 = {"num_query": 11659, "num_gallery": 82161, "gallery_ids": 3060, "query_ids": 3060, "cameras": 15}
SIZES = {"occ_duke": DUKE, "msmt17": MSMT17}
NUM_PARTS, DIM = 5, 768
REFERENCE_MEMORY_LIMIT = 12 * 2**30  # skip the reference re-ranking when its (1+P) x N x N tensors exceed this


def _sizes(size: dict, fraction: float) -> tuple[int, int, int, int]:
    """Numbers of queries, gallery images, gallery identities and query identities at ``fraction`` of ``size``."""
    return tuple(max(2, round(size[k] * fraction)) for k in ("num_query", "num_gallery", "gallery_ids", "query_ids"))


def make_features(size: dict = DUKE, fraction: float = 1.0, num_parts: int = NUM_PARTS, dim: int = DIM,
                  seed: int = 0) -> dict:
    """Synthetic evaluation set of ``fraction`` of ``size`` (queries first) with identity structure.

    Token feature = 0.3 identity centre + 0.2 camera offset + noise (all N(0, 1) draws; mAP about 0.5);
    built in blocks so that the only large allocation is the (N, 1+P, C) result.
    """
    gen = torch.Generator().manual_seed(seed)
    num_q, num_g, num_ids, num_qids = _sizes(size, fraction)
    pids = torch.cat([torch.randint(0, num_qids, (num_q,), generator=gen),
                      torch.randint(0, num_ids, (num_g,), generator=gen)])
    camids = torch.randint(0, size["cameras"], (num_q + num_g,), generator=gen)
    tokens = 1 + num_parts
    centres = torch.randn(num_ids, tokens, dim, generator=gen)
    cam_offsets = 0.2 * torch.randn(size["cameras"], tokens, dim, generator=gen)
    feats = torch.empty(num_q + num_g, tokens, dim)
    for i0 in range(0, num_q + num_g, 1024):
        sl = slice(i0, i0 + 1024)
        noise = torch.randn(feats[sl].shape, generator=gen)
        feats[sl] = 0.3 * centres[pids[sl]] + cam_offsets[camids[sl]] + noise
    lower = torch.arange(tokens) > (tokens + 1) // 2  # the lower half of the parts (leg, feet for P = 5)
    p_query = torch.where(lower, 0.4, 0.9)
    vis = torch.cat([torch.rand(num_q, tokens, generator=gen) < p_query,
                     torch.rand(num_g, tokens, generator=gen) < 0.8]).float()
    vis[:, 0] = 1
    return {"feats": feats, "vis": vis, "pids": pids, "camids": camids, "num_query": num_q}


def _batches(data: dict, batch_size: int = 256):
    """(feats, vis, pids, camids) batches as a test loader delivers them."""
    for i0 in range(0, len(data["pids"]), batch_size):
        sl = slice(i0, i0 + batch_size)
        yield data["feats"][sl], data["vis"][sl], data["pids"][sl], data["camids"][sl]


def _run_reference(data: dict, reranking: bool) -> tuple[dict, tuple]:
    """The reference evaluator: accumulate, concatenate, normalise, full-tensor distance, per-query
    loop. Also returns the arguments of :func:`reference_eval` for the tie-order check."""
    feats, vis, pids, camids = (torch.cat(t) for t in zip(*_batches(data)))
    feats = F.normalize(feats, dim=2, p=2)
    nq = data["num_query"]
    if reranking:
        distmat = reference_rerank(reference_distance(feats, vis, feats, vis), nq, **DEFAULT_RERANK_PARAMS)
    else:
        distmat = reference_distance(feats[:nq], vis[:nq], feats[nq:], vis[nq:])
    pids, camids = pids.numpy(), camids.numpy()
    args = (distmat, pids[:nq], pids[nq:], camids[:nq], camids[nq:])
    return reference_eval(*args), args


def _run_ours(data: dict, reranking: bool) -> tuple[dict, None]:
    """:class:`evaluation.ReidEvaluator` fed batch by batch."""
    evaluator = ReidEvaluator(data["num_query"], reranking=reranking)
    for batch in _batches(data):
        evaluator.update(*batch)
    return evaluator.compute()["all"], None


# Output tile of the GEMM floor: 2,048 x 16,384 float32 = 128 MiB, large enough for BLAS's best rate.
GEMM_TILE = (2048, 16384)


def _run_gemm(data: dict, reranking: bool) -> tuple[dict, None]:
    """The GEMM floor: only the matrix products of the evaluation's distances, one per token,
    (Q x C) @ (C x G) without re-ranking and (N x C) @ (C x N) with it (re-ranking needs every pair),
    on normalised features, in output tiles of :data:`GEMM_TILE`. Any evaluator does at least this."""
    feats = F.normalize(data["feats"], dim=2)
    nq = data["num_query"]
    rows, cols = (feats, feats) if reranking else (feats[:nq], feats[nq:])
    out = torch.empty(GEMM_TILE)
    start = time.perf_counter()
    for p in range(feats.shape[1]):
        a, b = rows[:, p].contiguous(), cols[:, p].contiguous()
        for i0 in range(0, len(a), GEMM_TILE[0]):
            block = a[i0 : i0 + GEMM_TILE[0]]
            for j0 in range(0, len(b), GEMM_TILE[1]):
                other = b[j0 : j0 + GEMM_TILE[1]]
                torch.mm(block, other.T, out=out[: len(block), : len(other)])
    return {"gemm_time": time.perf_counter() - start}, None


METHODS = {"reference": _run_reference, "ours": _run_ours, "gemm": _run_gemm}


def _summary(res: dict) -> dict:
    """The JSON-able part of a result dict."""
    if "gemm_time" in res:
        return res
    return {"cmc": res["cmc"].tolist(), "mAP": res["mAP"], "mINP": res["mINP"], "num_valid": res["num_valid"]}


def _child(method: str, args: argparse.Namespace) -> dict:
    """Body of one measurement subprocess: build the features, run ``method`` (nothing for
    ``'features'``), report wall time, results and the process's peak RSS. After the timed run the
    reference is evaluated once more with a stable argsort (exact ties in the reference's order)."""
    torch.set_num_threads(args.threads)
    data = make_features(SIZES[args.size], args.fraction, dim=args.dim)
    out: dict = {}
    if method in METHODS:
        start = time.perf_counter()
        res, eval_args = METHODS[method](data, args.reranking == "yes")
        out = {"time": time.perf_counter() - start, **_summary(res)}
        if eval_args is not None:
            out["stable"] = _summary(reference_eval(*eval_args, sort_kind="stable"))
    out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _agreement(a: dict, b: dict) -> str:
    """Largest differences between two result summaries."""
    cmc = np.abs(np.asarray(a["cmc"]) - np.asarray(b["cmc"])).max()
    return (f"max |dCMC| {cmc:.1e}, |dmAP| {abs(a['mAP'] - b['mAP']):.1e}, |dmINP| {abs(a['mINP'] - b['mINP']):.1e}, "
            f"valid queries {a['num_valid']} / {b['num_valid']}")


def _spawn(method: str, args: argparse.Namespace, dim: int, reranking: bool) -> dict:
    """Run :func:`_child` in a fresh interpreter and parse its JSON line (its progress lines go to
    this process's stderr)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "tools.bench_eval", "--child", method, "--scale", args.size, "--fraction",
           str(args.fraction), "--dims", str(dim), "--threads", str(args.threads),
           "--reranking", "yes" if reranking else "no"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {method!r} failed (exit {proc.returncode}; its stderr is above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure(args: argparse.Namespace, dim: int, reranking: bool) -> dict:
    """Every method at one width and re-ranking setting; prints and returns the table rows."""
    num_q, num_g = _sizes(SIZES[args.size], args.fraction)[:2]
    num_all, tokens = num_q + num_g, 1 + NUM_PARTS
    print(f"\n{num_q} queries x {num_g} gallery, {tokens} tokens x {dim}, "
          f"{'re-ranking, ' if reranking else ''}{args.threads} threads", flush=True)
    base = _spawn("features", args, dim, reranking)["maxrss_mib"]
    rows = {}
    for method in METHODS:
        if method == "reference" and args.no_reference:
            continue
        if (method == "reference"
                and 16 * tokens * (num_all**2 if reranking else num_q * num_g) > REFERENCE_MEMORY_LIMIT):
            print(f"reference skipped: its (1+P) x {'N x N' if reranking else 'Q x G'} tensors exceed "
                  f"{REFERENCE_MEMORY_LIMIT / 2**30:.0f} GiB (use --fraction)")
            continue
        rows[method] = _spawn(method, args, dim, reranking)
    floor = rows["gemm"]["gemm_time"]
    extrapolate = args.fraction < 1
    print(f"{'method':<10} {'time [s]':>9} {'/ GEMM':>7} {'peak [GiB]':>11} {'extra [MiB]':>12} "
          f"{'mAP':>8} {'Rank-1':>8} "
          f"{'mINP':>8} {'valid':>6}" + (f" {'full-size time [s], extrapolated':>34}" if extrapolate else ""))
    print(f"{'features':<10} {'':>9} {'':>7} {base / 1024:>11.2f}")
    for method, r in rows.items():
        seconds = r["gemm_time"] if method == "gemm" else r["time"]
        line = (f"{method:<10} {seconds:>9.2f} {seconds / floor:>7.2f} {r['maxrss_mib'] / 1024:>11.2f} "
                f"{r['maxrss_mib'] - base:>12.0f}")
        if "mAP" in r:
            line += f" {r['mAP']:>8.4f} {r['cmc'][0]:>8.4f} {r['mINP']:>8.4f} {r['num_valid']:>6}"
        elif extrapolate:
            line += " " * 33
        if extrapolate:  # every large term is O(Q G) or O(N^2)
            line += f" {seconds / args.fraction**2:>34.0f}"
        print(line, flush=True)
    if "reference" in rows:
        ref, ours = rows["reference"], rows["ours"]
        memory = (ours["maxrss_mib"] - base) / max(ref["maxrss_mib"] - base, 1)
        print(f"ours / reference: {ref['time'] / ours['time']:.1f}x faster, "
              f"{100 * memory:.1f}% of the peak extra memory")
        print(f"vs the reference as written (np.argsort quicksort): {_agreement(ref, ours)}")
        print(f"vs the reference with a stable argsort:            {_agreement(ref['stable'], ours)}")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="occ_duke",
                        help="split sizes: occ_duke (2,210 x 17,661) or msmt17 (11,659 x 82,161); a number is a "
                             "fraction of occ_duke (as before)")
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of the query/gallery/identity counts")
    parser.add_argument("--dims", type=int, nargs="+", default=[DIM], help="feature widths to measure (e.g. 256 768)")
    parser.add_argument("--reranking", nargs="?", const="yes", default="no", choices=["no", "yes", "both"],
                        help="k-reciprocal re-ranking ({}): yes (the bare flag), no, or both".format(
                            ", ".join(f"{k} {v:g}" for k, v in DEFAULT_RERANK_PARAMS.items())))
    parser.add_argument("--threads", type=int, default=2, help="torch / BLAS threads of each measurement")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference algorithm (slow at large sizes)")
    parser.add_argument("--child", choices=["features", *METHODS], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale in SIZES:
        args.size = args.scale
    else:
        try:
            args.size, args.fraction = "occ_duke", float(args.scale) * args.fraction
        except ValueError:
            parser.error(f"--scale {args.scale}: use {' or '.join(SIZES)} or a number")
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction {args.fraction}: use a number in (0, 1]")
    if args.child:
        args.dim = args.dims[0]
        print(json.dumps(_child(args.child, args)))
        return
    for dim in args.dims:
        for reranking in {"no": [False], "yes": [True], "both": [False, True]}[args.reranking]:
            _measure(args, dim, reranking)


if __name__ == "__main__":
    main()
