"""Reference oracles of the evaluator: the original algorithms, written the original way.

Per-query / per-image re-implementations of the reference's evaluation (TSD_REFERENCE §7.2 - §7.4):
the full-tensor part distance, the per-query ``eval_func`` and Zhong et al.'s ``re_ranking`` loops.
tests/test_metrics.py and tests/test_per_part.py check :mod:`evaluation` against them, and
tools/bench_eval.py times them as its ``reference`` method (``from tests.oracles import ...``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def reference_distance(qf: torch.Tensor, qv: torch.Tensor, gf: torch.Tensor, gv: torch.Tensor) -> np.ndarray:
    """The reference's ``euclidean_dist_3d`` with visibility weights, as written: (Q, T, C) / (G, T, C)
    features (already normalised), (Q, T) / (G, T) visibilities → (Q, G), via the full (T, Q, G) tensor."""
    x, y = qf.permute(1, 0, 2), gf.permute(1, 0, 2)
    num_tokens, m, n = x.shape[0], x.shape[1], y.shape[1]
    xx = torch.pow(x, 2).sum(2, keepdim=True).expand(num_tokens, m, n)
    yy = torch.pow(y, 2).sum(2, keepdim=True).expand(num_tokens, n, m).permute(0, 2, 1)
    dist = xx + yy
    dist = dist - 2 * torch.bmm(x, y.permute(0, 2, 1))
    dist = dist.clamp(min=1e-12).sqrt()
    weight = torch.sqrt(qv.t().unsqueeze(2) * gv.t().unsqueeze(1))
    weight_sum = weight.sum(0)
    weight_sum[weight_sum == 0] = 1
    return ((dist * weight).sum(0) / weight_sum).numpy()


def reference_eval(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    g_labels: np.ndarray | None = None,
    ignored_labels: Sequence[int] = (),
    sort_kind: str = "quicksort",
) -> dict:
    """The reference ``eval_func`` (per-query loop; §7.2, new protocol §7.3 when ``g_labels`` is given,
    removing same-identity entries with label 3 or in ``ignored_labels``) plus fast-reid's INP.

    Returns the same dict layout as :func:`evaluation.rank.evaluate_rankings` for one protocol. Queries
    with fewer kept entries than ``max_rank`` repeat their last CMC value.
    """
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1, kind=sort_kind)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    ap = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    per_cmc = np.zeros((num_q, max_rank), np.float32)
    for q_idx in range(num_q):
        order = indices[q_idx]
        same = g_pids[order] == q_pids[q_idx]
        remove = same & (g_camids[order] == q_camids[q_idx])
        if g_labels is not None:
            remove |= same & np.isin(g_labels[order], (3, *ignored_labels))
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        cmc = cmc[:max_rank]
        per_cmc[q_idx] = np.pad(cmc, (0, max_rank - len(cmc)), mode="edge")
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0) * raw_cmc
        ap[q_idx] = tmp_cmc.sum() / num_rel
        last = np.nonzero(raw_cmc)[0].max()
        inp[q_idx] = raw_cmc.cumsum()[last] / (last + 1.0)
    valid = ~np.isnan(ap)
    return {
        "cmc": per_cmc[valid].sum(0) / float(valid.sum()),
        "mAP": float(np.mean(ap[valid])),
        "mINP": float(np.mean(inp[valid])),
        "num_valid": int(valid.sum()),
        "per_query": {"valid": valid, "ap": ap, "inp": inp, "cmc": per_cmc},
    }


def reference_rerank(original_dist: np.ndarray, num_query: int, k1: int = 20, k2: int = 6,
                     lambda_value: float = 0.3) -> np.ndarray:
    """Zhong et al.'s ``re_ranking`` as in the reference, on a dense (N, N) distance → (Q, G).

    Line by line the original loops, except that V and the Jaccard accumulation are float32 instead
    of float16 (see evaluation/rerank.py).
    """
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    num_all = original_dist.shape[0]
    V = np.zeros_like(original_dist, dtype=np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    for i in range(num_all):
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for candidate in k_reciprocal_index:
            candidate_forward = initial_rank[candidate, : int(np.around(k1 / 2)) + 1]
            candidate_backward = initial_rank[candidate_forward, : int(np.around(k1 / 2)) + 1]
            candidate_k_reciprocal_index = candidate_forward[np.where(candidate_backward == candidate)[0]]
            if (len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index))
                    > 2 / 3 * len(candidate_k_reciprocal_index)):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:num_query,]
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(num_all):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = [np.where(V[:, i] != 0)[0] for i in range(num_all)]
    jaccard_dist = np.zeros_like(original_dist)
    for i in range(num_query):
        temp_min = np.zeros(shape=[1, num_all], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(V[i, indNonZero[j]],
                                                                               V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:num_query, num_query:]
