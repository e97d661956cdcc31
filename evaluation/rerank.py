"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on any distance, in bounded memory.

The algorithm of the reference's ``utils/reranking.py`` (TSD_REFERENCE §7.4): distances normalised
by their row maximum; k-reciprocal neighbour sets R(i, k1) expanded by the R(c, round(k1/2)) of their
members c that share more than 2/3 of their elements with R(i, k1); Gaussian weights exp(-d) over the
expanded set, normalised to sum 1 (the sparse matrix V); query expansion averages the V rows of the
k2 nearest neighbours; Jaccard distance 1 - s/(2 - s) with s = Σ_k min(V[i,k], V[j,k]); final
distance (1 - λ)·Jaccard + λ·original.

Differences from the reference, none of which changes the algorithm:

* The (N, N) distance (N = queries + gallery) is never materialised. Its upper triangle is read
  through callables in row blocks, once (each distance serves its row and, by symmetry, its column:
  half the GEMMs): the 4 (k1 + 1) nearest images of every row (``torch.topk``, merged across
  blocks) with their distances, the row maxima and the query-to-gallery block are kept. The
  expanded sets take their weights from those neighbour lists; the rare member outside them is
  asked of ``pair_distance``.
  Memory: O(N·k1) neighbours, a sparse V with O(k1·k2) entries per row, the (Q, G) result and
  temporaries of about ``chunk_size`` elements (row blocks: at least MIN_BLOCK_ROWS x N). Every
  pass logs its progress with an ETA when it runs for long (utils/progress.py).
* V and the Jaccard distance are float32 / float64 instead of float16 (the reference's float16 only
  saved memory, at about 1e-3 relative error).
* The reference normalises each *column* by its maximum and transposes; for a symmetric distance
  this is the row normalisation used here.
* Order among exactly equal distances (``np.argsort`` there, ``torch.topk`` here) is unspecified in
  both.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from utils.progress import Progress

from .distance import DEFAULT_CHUNK_SIZE

# rows [i0, i1) and columns [j0, N) of the symmetric (N, N) distance -> (i1 - i0, N - j0) float tensor
BlockDistance = Callable[[int, int, int], torch.Tensor]
# distance of the pairs (a[m], b[m]) -> (M,) float tensor
PairDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def k_reciprocal_rerank(
    block_distance: BlockDistance,
    pair_distance: PairDistance,
    num_query: int,
    num_all: int,
    k1: int,
    k2: int,
    lambda_value: float,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Re-ranked query-to-gallery distance (Q, G) float32.

    Images 0..num_query-1 are the queries, the rest (up to ``num_all``) the gallery; ``block_distance``
    (rows i0:i1, columns j0:N; only j0 = i0 is asked for) and ``pair_distance`` give the original,
    symmetric distance between any two of them. ``k1``, ``k2``, ``lambda_value``: config keys
    TEST.RE_RANKING_K1 / K2 / LAMBDA (defaults 20 / 6 / 0.3, Zhong et al.'s; k1, k2 >= 1 and
    0 <= lambda_value <= 1, checked by the config validator).
    """
    # Each row's expanded set lies almost always among its nearest 4 (k1 + 1) images: keeping their
    # distances from the row pass leaves few pairs for ``pair_distance``.
    num_near = min(max(4 * (k1 + 1), k2), num_all)
    near = _nearest(block_distance, num_query, num_all, num_near, chunk_size)
    weights = _expansion_weights(near, pair_distance, k1, chunk_size)
    if k2 != 1:
        weights = _query_expansion(weights, near.index[:, :k2])
    _blend_jaccard(near.original, weights, num_query, lambda_value, chunk_size)
    return near.original


@dataclass
class _Nearest:
    """Result of the row pass: ``index`` (N, M) the M nearest images of every image by ascending
    distance, ``dist`` (N, M) their distances and ``row_max`` (N,) the row maxima (distances here are
    divided by the row maximum, as in the reference), ``original`` (Q, G) the query-to-gallery block."""

    index: torch.Tensor
    dist: torch.Tensor
    row_max: torch.Tensor
    original: torch.Tensor


# Row blocks of the (N, N) pass have at least this many rows (or all N): the distance GEMMs of a
# block then have enough rows for BLAS's full rate, and the merges of the later rows' neighbour lists
# (once per block) stay a small part of the work. 1,024 x N float32 is 367 MiB at MSMT17's N = 93,820
# (measured at N = 18,764, 768-d: 1.7x the GEMM floor with 1,024 rows, 2.4x with 447).
MIN_BLOCK_ROWS = 1024


def _nearest(block_distance: BlockDistance, num_query: int, num_all: int, num_near: int, chunk_size: int) -> _Nearest:
    """One pass over the upper triangle of the symmetric (N, N) distance, in row blocks I of
    ``max(chunk_size // N, MIN_BLOCK_ROWS)`` rows: block I x [i0, N) is computed once and gives the
    rows of I their nearest images among the columns >= i0 and, read by columns, every later row j
    its nearest images among I. Running lists per row are merged with ``torch.topk``; a row is
    complete once its own block is done. Half the GEMMs and elementwise work of a full row pass."""
    step = max(1, chunk_size // num_all, min(MIN_BLOCK_ROWS, num_all))
    best: tuple[torch.Tensor, torch.Tensor] | None = None
    row_max = original = None
    # work of a block ~ its pairs: the first blocks of the triangle are the widest
    pairs = sum((min(i0 + step, num_all) - i0) * (num_all - i0) for i0 in range(0, num_all, step)) / 1e6
    with Progress(pairs, "re-ranking: distances and nearest neighbours", "M pairs") as progress:
        for i0 in range(0, num_all, step):
            i1 = min(i0 + step, num_all)
            block = block_distance(i0, i1, i0).float()  # (i1 - i0, N - i0), raw distances
            if best is None:
                device = block.device
                best = (torch.full((num_all, num_near), torch.inf, device=device),
                        torch.zeros(num_all, num_near, dtype=torch.long, device=device))
                row_max = torch.zeros(num_all, device=device)  # distances are >= 0
                original = torch.empty(num_query, num_all - num_query, device=device)
            row_max[i0:i1] = torch.maximum(row_max[i0:i1], block.max(1).values)
            top = torch.topk(block, min(num_near, block.shape[1]), dim=1, largest=False)
            _merge(best, i0, top.values, top.indices + i0, chunk_size)
            later = block[:, i1 - i0 :]  # column c: image i1 + c's distances to the rows of I
            if later.shape[1]:
                row_max[i1:] = torch.maximum(row_max[i1:], later.max(0).values)
                top = torch.topk(later, min(num_near, i1 - i0), dim=0, largest=False)
                _merge(best, i1, top.values.T, top.indices.T + i0, chunk_size)
            if i0 < num_query:
                q1 = min(i1, num_query)
                original[i0:q1] = block[: q1 - i0, num_query - i0 :]
            progress.update((i1 - i0) * (num_all - i0) / 1e6)
    # as the reference, every distance of row i divided by the row's maximum (after the selection:
    # a positive per-row factor does not change the order, and the quotients are the same floats)
    dist = best[0].div_(row_max[:, None])
    original.div_(row_max[:num_query, None])
    return _Nearest(best[1].cpu(), dist.cpu(), row_max.cpu(), original)


def _merge(best: tuple[torch.Tensor, torch.Tensor], start: int, values: torch.Tensor, index: torch.Tensor,
           chunk_size: int) -> None:
    """Merge candidates ``values`` / ``index`` (R, k) of rows ``start:start + R`` into the running
    sorted lists ``best = (values, index)`` (N, M), in row chunks of about ``chunk_size`` elements."""
    best_val, best_idx = best
    num_near = best_val.shape[1]
    step = max(1, chunk_size // (2 * (num_near + values.shape[1])))
    for r0 in range(0, values.shape[0], step):
        rows = slice(start + r0, start + min(r0 + step, values.shape[0]))
        cand_val = torch.cat([best_val[rows], values[r0 : r0 + step]], 1)
        cand_idx = torch.cat([best_idx[rows], index[r0 : r0 + step]], 1)
        top = torch.topk(cand_val, num_near, dim=1, largest=False)
        best_val[rows], best_idx[rows] = top.values, cand_idx.gather(1, top.indices)


def _reciprocal(neighbours: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(N, k) bool: ``i`` is itself among the k neighbours of its neighbour ``neighbours[i, a]``."""
    num, k = neighbours.shape
    out = torch.empty(num, k, dtype=torch.bool)
    step = max(1, chunk_size // (k * k))
    for i0 in range(0, num, step):
        block = neighbours[i0 : i0 + step]
        own = torch.arange(i0, i0 + len(block))[:, None, None]
        out[i0 : i0 + step] = (neighbours[block] == own).any(2)
    return out


def _expansion_weights(near: _Nearest, pair_distance: PairDistance, k1: int, chunk_size: int) -> sp.csr_matrix:
    """Sparse V (N, N): Gaussian weights of each image's expanded k-reciprocal set, rows summing to 1."""
    num_all = near.index.shape[0]
    top = near.index[:, : k1 + 1]
    half = near.index[:, : round(k1 / 2) + 1]  # round() is numpy.around's half-to-even, as the reference
    top_ok, half_ok = _reciprocal(top, chunk_size), _reciprocal(half, chunk_size)
    by_index, order = near.index.sort(1)  # for looking distances up by column
    dist_by_index = near.dist.gather(1, order)
    k, h = top.shape[1], half.shape[1]
    rows, cols, dists = [], [], []
    step = max(1, chunk_size // (k * h * k))
    progress = Progress(num_all, "re-ranking: k-reciprocal sets", "rows")
    for i0 in range(0, num_all, step):
        members, ok = top[i0 : i0 + step], top_ok[i0 : i0 + step]  # R(i, k1) = members[ok]
        cand, cand_ok = half[members], half_ok[members]  # (n, k, h): R(c, k1/2) of every member c
        shared = ((cand[..., None] == members[:, None, None, :]) & ok[:, None, None, :]).any(3) & cand_ok
        # python-float threshold as the reference: |R(c) ∩ R(i)| > 2/3 |R(c)|
        take = ok & (shared.sum(2).double() > 2 / 3 * cand_ok.sum(2).double())
        expanded = torch.cat([members, cand.flatten(1)], 1)
        expanded_ok = torch.cat([ok, (cand_ok & take[..., None]).flatten(1)], 1)
        expanded = expanded.masked_fill(~expanded_ok, num_all).sort(1).values
        keep = expanded < num_all
        keep[:, 1:] &= expanded[:, 1:] != expanded[:, :-1]  # unique members
        pos = torch.searchsorted(by_index[i0 : i0 + step], expanded).clamp_max_(by_index.shape[1] - 1)
        found = by_index[i0 : i0 + step].gather(1, pos) == expanded
        r, c = keep.nonzero(as_tuple=True)
        rows.append(r + i0)
        cols.append(expanded[r, c])
        dists.append(torch.where(found, dist_by_index[i0 : i0 + step].gather(1, pos), torch.nan)[r, c])
        progress.update(len(members))
    progress.close()
    row, col, dist = torch.cat(rows), torch.cat(cols), torch.cat(dists)
    missing = dist.isnan()
    if missing.any():
        dist[missing] = pair_distance(row[missing], col[missing]).float().cpu() / near.row_max[row[missing]]
    weight = torch.exp(-dist)
    weight /= torch.zeros(num_all).index_add_(0, row, weight)[row]
    return sp.csr_matrix((weight.numpy(), (row.numpy(), col.numpy())), shape=(num_all, num_all))


def _query_expansion(weights: sp.csr_matrix, neighbours: torch.Tensor) -> sp.csr_matrix:
    """Replace every row of V by the mean of the rows of its k2 nearest neighbours (itself first)."""
    num, k2 = neighbours.shape
    select = sp.csr_matrix(
        (np.ones(num * k2, np.float32), (np.repeat(np.arange(num), k2), neighbours.reshape(-1).numpy())),
        shape=(num, num),
    )
    out = (select @ weights).tocsr()
    out.data /= np.float32(k2)
    return out


def _blend_jaccard(
    original: torch.Tensor, weights: sp.csr_matrix, num_query: int, lambda_value: float, chunk_size: int
) -> None:
    """``original ← (1 - λ)·Jaccard + λ·original`` in place, in query blocks.

    s(i, g) = Σ_k min(V[i,k], V[g,k]) only has terms where both rows have an entry at k, so it is
    accumulated from the (query entry, gallery entry) pairs sharing a column, found through the
    gallery rows of V in column-major form. Blocks hold about ``chunk_size`` pairs + dense elements.
    """
    num_g = original.shape[1]
    probe = weights[:num_query].tocsr()
    gallery = weights[num_query:].tocsc()
    starts, lengths = gallery.indptr[:-1], np.diff(gallery.indptr)
    pairs_before = np.concatenate([[0], np.cumsum(lengths[probe.indices])])
    row_cost = pairs_before[probe.indptr[1:]] - pairs_before[probe.indptr[:-1]] + num_g
    cost_before = np.concatenate([[0], np.cumsum(row_cost)])
    i0 = 0
    progress = Progress(num_query, "re-ranking: Jaccard distance", "queries")
    while i0 < num_query:
        i1 = min(num_query, max(i0 + 1, int(np.searchsorted(cost_before, cost_before[i0] + chunk_size, "right")) - 1))
        e0, e1 = probe.indptr[i0], probe.indptr[i1]
        col, val = probe.indices[e0:e1], probe.data[e0:e1]
        row = np.repeat(np.arange(i1 - i0), np.diff(probe.indptr[i0 : i1 + 1]))
        n = lengths[col]
        pos = np.repeat(starts[col] - np.cumsum(n) + n, n) + np.arange(n.sum())
        shared = np.bincount(
            np.repeat(row, n) * num_g + gallery.indices[pos],
            weights=np.minimum(np.repeat(val, n), gallery.data[pos]),
            minlength=(i1 - i0) * num_g,
        ).reshape(i1 - i0, num_g)
        jaccard = torch.from_numpy((1 - shared / (2 - shared)).astype(np.float32)).to(original.device)
        original[i0:i1] = jaccard * (1 - lambda_value) + original[i0:i1] * lambda_value
        progress.update(i1 - i0)
        i0 = i1
    progress.close()
