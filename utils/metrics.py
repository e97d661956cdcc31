"""Retrieval evaluation: visibility-weighted part distance and CMC / mAP / mINP.

Implements the reference evaluators ``w_R1_mAP_eval`` (standard Market-1501 protocol, TSD_REFERENCE
§7.2) and ``w_R1_mAP_eval_new`` (TSD new benchmark, §7.3) with the same numbers, but bounded memory
and no Python loop over queries:

* **Distance.** For every token p (global + P parts) the Euclidean distance
  ``sqrt(clamp(|q|² + |g|² - 2 q.g, 1e-12))`` of the (L2-normalised) token features, averaged with
  weights ``sqrt(v_q,p * v_g,p)`` (``W = Σ w`` replaced by 1 where 0). The gallery streams through
  chunk-sized buffers (normalised there), one GEMM per block and token over the queries that see
  the token, so neither the reference's (1+P) x Q x G tensor nor a normalised copy of the features
  ever exists. float32 with the reference's operation order: the result is the reference's bit for
  bit (see :func:`part_distance` for the one exception).
* **Ranking.** Only same-identity gallery entries can be removed (same camera, or an ignored
  occlusion label) or be matches, so it suffices to know where each of them lands in the sorted row.
  Rows are sorted by value (numpy's vectorised int32 sort of order-preserving keys) and each
  same-identity entry is located by binary search; exact distance ties are ordered by gallery index.
  This equals walking a *stable* argsort of every row (§9.23), for every protocol at once.

Peak memory beyond the stored features (Q queries, G gallery images, N = Q + G, T = 1 + P tokens,
C channels, B = ``chunk_size`` elements): the (Q, G) float32 distance, the normalised queries and
their per-token copies (2·Q·T·C floats), and about 4·B float32 of distance buffers (plus a
gallery buffer of at most B floats) or, while ranking, a sorted int32 copy of B/4 distances.
Re-ranking (utils/reranking.py) adds O(N·k1) indices, a sparse N x N matrix with O(k1·k2)
entries per row and row blocks of at least 1,024 x N floats (no normalised copy of the features:
each block normalises what it reads). Per-token metrics (``token_names``) add one more (Q, G) distance at a time,
after the main one is dropped. At MSMT17's size (11,659 x 82,161, 6 x 768) the features are 1.7 GB
and a (Q, G) float32 matrix 3.8 GB.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from yacs.config import CfgNode

from utils.errors import ConfigError, DataError
from utils.progress import Progress
from utils.reranking import k_reciprocal_rerank

# Elements of one temporary block (rows x columns): 8 Mi elements = 32 MiB of float32. Few large
# blocks keep the number of (thread-synchronising) tensor operations low.
DEFAULT_CHUNK_SIZE = 1 << 23
# New benchmark (§3.8 / §7.3): gallery label 3 (holistic images of the query identities) is never a
# match; each sub-metric additionally ignores the same-identity images with the listed labels.
HOLISTIC_LABEL = 3
NEW_PROTOCOL_IGNORED = {"all": (0,), "npo": (0, 1), "ntp": (0, 2)}
PROTOCOLS = ("standard", "new")
DEFAULT_RERANK_PARAMS = {"k1": 20, "k2": 6, "lambda_value": 0.3}

IdLike = Union[torch.Tensor, np.ndarray, Sequence[int]]


@dataclass
class PartFeatures:
    """Token features of a set of images with their visibilities and squared norms.

    ``feats`` (N, T, C) float32, ``vis`` (N, T) float32 in [0, 1], ``sq_norms`` (N, T) = |feats|².
    ``binary`` records that every visibility is exactly 0 or 1, which lets the distance use
    ``sqrt(v_q v_g) = v_g`` and an exact matmul for the weight sums.
    """

    feats: torch.Tensor
    vis: torch.Tensor
    sq_norms: torch.Tensor
    binary: bool

    @classmethod
    def build(cls, feats: torch.Tensor, vis: torch.Tensor, normalize: bool, binary: Optional[bool] = None) -> "PartFeatures":
        """Wrap (N, T, C) features and (N, T) visibilities. ``normalize`` L2-normalises every token
        **in place** (bitwise ``F.normalize(feats, dim=2)``), so pass a tensor you own."""
        if normalize:
            feats.div_(feats.norm(dim=2, keepdim=True).clamp_min_(1e-12))
        if binary is None:
            binary = bool(((vis == 0) | (vis == 1)).all())
        # row slices bound the temporary of pow()
        sq_norms = torch.cat([(rows * rows).sum(2) for rows in feats.split(1024)])
        return cls(feats, vis, sq_norms, binary)

    def __len__(self) -> int:
        return self.feats.shape[0]

    def rows(self, start: int, stop: int, out: Optional[torch.Tensor] = None) -> "PartFeatures":
        """Rows ``[start, stop)`` as views (``out`` is ignored: nothing needs copying)."""
        return PartFeatures(self.feats[start:stop], self.vis[start:stop], self.sq_norms[start:stop], self.binary)

    def take(self, index: torch.Tensor) -> "PartFeatures":
        """The rows ``index`` (a copy)."""
        return PartFeatures(self.feats[index], self.vis[index], self.sq_norms[index], self.binary)


class FeatureBank:
    """An evaluation set kept as the (B, T, C) batches it arrived in.

    :meth:`rows` copies a row range into a caller-provided buffer and normalises it there, so the
    distance streams the gallery through one chunk-sized buffer and no normalised copy of the whole
    set is ever made.
    """

    def __init__(self, feats: Sequence[torch.Tensor], vis: Sequence[torch.Tensor], normalize: bool) -> None:
        self._batches = list(feats)
        self._bounds = np.cumsum([0, *(len(f) for f in self._batches)]).tolist()
        self._start, self._stop = 0, self._bounds[-1]
        self._vis = torch.cat(list(vis))
        self.binary = bool(((self._vis == 0) | (self._vis == 1)).all())
        self.normalize = normalize

    def __len__(self) -> int:
        return self._stop - self._start

    def subset(self, start: int, stop: int) -> "FeatureBank":
        """Rows ``[start, stop)`` as a bank sharing this one's data."""
        view = copy.copy(self)
        view._start, view._stop = self._start + start, self._start + stop
        return view

    def rows(self, start: int, stop: int, out: Optional[torch.Tensor] = None) -> PartFeatures:
        """Rows ``[start, stop)`` (normalised if configured), written into ``out`` (at least
        ``stop - start`` rows) or a new tensor."""
        start, stop = self._start + start, self._start + stop
        pieces = [
            batch[max(start - lo, 0) : stop - lo]
            for batch, lo, hi in zip(self._batches, self._bounds[:-1], self._bounds[1:])
            if lo < stop and hi > start
        ]
        feats = torch.cat(pieces) if out is None else torch.cat(pieces, out=out[: stop - start])
        return PartFeatures.build(feats, self._vis[start:stop], self.normalize, self.binary)

    def take(self, index: torch.Tensor) -> PartFeatures:
        """The rows ``index`` (any order, repeats allowed), gathered and normalised if configured."""
        index = index.to(self._vis.device) + self._start
        bounds = torch.tensor(self._bounds, device=index.device)
        batch = torch.searchsorted(bounds, index, right=True) - 1
        feats = torch.empty((len(index), *self._batches[0].shape[1:]), dtype=self._batches[0].dtype,
                            device=self._batches[0].device)
        for b in batch.unique().tolist():
            sel = (batch == b).nonzero().squeeze(1)
            feats[sel] = self._batches[b][index[sel] - self._bounds[b]]
        return PartFeatures.build(feats, self._vis[index], self.normalize, self.binary)


RowSource = Union[PartFeatures, FeatureBank]


# BLAS picks another kernel (another summation order) for GEMMs with fewer rows: a token seen by fewer
# queries runs on all of them, like the reference's single (Q x C) @ (C x G) product.
MIN_GEMM_ROWS = 16
# A token seen by at most this fraction of the queries gets a GEMM over those queries only; above it,
# the saved GEMM rows do not pay for the extra per-group operations.
COMPACT_FRACTION = 0.75


@dataclass
class _TokenPlan:
    """The queries that enter token ``p``'s GEMM, in grouped order.

    ``feats`` (M, C), ``sq_norms`` / ``vis`` (M, 1). ``runs`` is None when M = Q (invisible queries
    are zeroed by ``vis``, or ``vis`` is None when every query sees the token); otherwise
    ``(start, stop, src)`` triples: grouped rows ``start:stop`` take GEMM rows from ``src`` on.
    """

    p: int
    feats: torch.Tensor
    sq_norms: torch.Tensor
    vis: Optional[torch.Tensor]
    runs: Optional[list[tuple[int, int, int]]]


def _plan_tokens(query: PartFeatures) -> tuple[torch.Tensor, list[_TokenPlan]]:
    """Order the queries by the set of rarely seen tokens they see (the rarest as the most
    significant bit, so that its queries form one run) and plan one GEMM per token."""
    num_q, num_tokens = query.vis.shape
    visible = query.vis > 0
    seen = visible.sum(0).tolist()
    compact = sorted(
        (p for p in range(num_tokens) if MIN_GEMM_ROWS <= seen[p] <= COMPACT_FRACTION * num_q), key=lambda p: -seen[p]
    )
    codes = torch.zeros(num_q, dtype=torch.long, device=visible.device)
    for bit, p in enumerate(compact):
        codes |= visible[:, p].long() << bit
    codes, order = codes.sort(stable=True)
    patterns, counts = torch.unique_consecutive(codes, return_counts=True)
    bounds = np.cumsum([0, *counts.tolist()]).tolist()
    plans = []
    for p in range(num_tokens):
        if seen[p] == 0:
            continue
        if p not in compact:
            vis = None if seen[p] == num_q else query.vis[order, p, None]
            plans.append(_TokenPlan(p, query.feats[order, p], query.sq_norms[order, p, None], vis, None))
            continue
        bit = compact.index(p)
        runs: list[tuple[int, int, int]] = []
        for code, start, stop in zip(patterns.tolist(), bounds[:-1], bounds[1:]):
            if code >> bit & 1:
                if runs and runs[-1][1] == start:  # adjacent groups form one run
                    start = runs.pop()[0]
                runs.append((start, stop, start))
        offsets = np.cumsum([0, *(stop - start for start, stop, _ in runs)]).tolist()
        runs = [(start, stop, src) for (start, stop, _), src in zip(runs, offsets)]
        rows = order[torch.cat([torch.arange(start, stop, device=order.device) for start, stop, _ in runs])]
        plans.append(_TokenPlan(p, query.feats[rows, p], query.sq_norms[rows, p, None], query.vis[rows, p, None], runs))
    return order, plans


def part_distance(
    query: PartFeatures, gallery: RowSource, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool = True
) -> torch.Tensor:
    """Visibility-weighted part distance (§7.2) → (Q, G) float32 on the features' device.

    Streams the gallery in blocks of ``min(chunk_size // Q, chunk_size // (T·C))`` images through
    preallocated buffers. A token invisible in the query contributes ``0 · d = 0`` to the
    reference's sum, so the GEMM of a token that few queries see runs over those queries only (the
    queries are grouped so that their results land in contiguous row runs; a GEMM never has fewer
    than MIN_GEMM_ROWS rows, which keeps BLAS on the reference's kernel). Tokens are accumulated in the
    reference's order and the skipped terms are exact zeros there, so with 0/1 visibilities the
    result is the reference's bit for bit, except where torch's own ``sum`` switches to its scalar
    tail (the last ``Q·G mod 16`` entries), which may differ by one ulp.
    """
    num_q, num_g = len(query), len(gallery)
    num_tokens, channels = query.feats.shape[1:]
    binary = query.binary and gallery.binary
    out = torch.empty(num_q, num_g, dtype=torch.float32, device=query.feats.device)
    order, plans = _plan_tokens(query)
    q_vis = query.vis[order]
    step = max(1, min(chunk_size // max(num_q, 1), chunk_size // (num_tokens * channels), num_g))
    # reused for every block: no allocation (and no page faults) inside the loop
    feats_buf = query.feats.new_empty((step, num_tokens, channels))
    acc_buf, weight_buf, dist_buf, prod_buf = query.feats.new_empty((4, num_q * step))
    report = Progress(num_g, "distance", "gallery images", bar=None if progress else False,
                      delay=10.0 if progress else float("inf"))
    for j0 in range(0, num_g, step):
        block = gallery.rows(j0, min(j0 + step, num_g), feats_buf)
        width = len(block)
        acc = acc_buf[: num_q * width].view(num_q, width).zero_()
        weight_sum = weight_buf[: num_q * width].view(num_q, width)
        if binary:
            torch.mm(q_vis, block.vis.T, out=weight_sum).clamp_min_(1)  # integer counts: 0 -> 1
        else:
            weight_sum.zero_()
        for plan in plans:
            size = len(plan.feats) * width
            dist = dist_buf[:size].view(-1, width)
            prod = torch.mm(plan.feats, block.feats[:, plan.p].T, out=prod_buf[:size].view(-1, width))
            # (|q|² + |g|²) - 2 q.g in the reference's order: addmm(beta=1) would round differently.
            torch.add(plan.sq_norms, block.sq_norms[None, :, plan.p], out=dist).sub_(prod, alpha=2)
            dist.clamp_min_(1e-12).sqrt_()
            g_vis = block.vis[None, :, plan.p]
            if binary:
                weight = g_vis
                if plan.runs is None and plan.vis is not None:
                    dist.mul_(plan.vis)
            else:
                weight = (g_vis if plan.vis is None else plan.vis * g_vis).sqrt()
            for start, stop, src in plan.runs or [(0, num_q, 0)]:
                part = slice(src, src + stop - start)
                acc[start:stop].addcmul_(dist[part], weight if binary else weight[part])
                if not binary:
                    weight_sum[start:stop].add_(weight[part])
        if not binary:
            weight_sum.masked_fill_(weight_sum == 0, 1)
        out[:, j0 : j0 + width].index_copy_(0, order, acc.div_(weight_sum))
        report.update(width)
    report.close()
    return out


def query_gallery_distance(
    feats: Union[torch.Tensor, Sequence[torch.Tensor]],
    vis: Union[torch.Tensor, Sequence[torch.Tensor]],
    num_query: int,
    feat_norm: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """The evaluator's (Q, G) part distance between the first ``num_query`` rows and the rest.

    ``feats`` (N, T, C) and ``vis`` (N, T), or lists of such batches; ``feat_norm`` L2-normalises
    every token first. The inputs are not modified and not copied as a whole.
    """
    bank = FeatureBank([feats] if torch.is_tensor(feats) else feats, [vis] if torch.is_tensor(vis) else vis, feat_norm)
    return part_distance(bank.rows(0, num_query), bank.subset(num_query, len(bank)), chunk_size)


def pair_distance(feats: RowSource, a: torch.Tensor, b: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Part distance of the image pairs ``(a[m], b[m])`` → (M,) float32 (same formula as
    :func:`part_distance`, evaluated per pair; equal to it up to float32 rounding)."""
    first = feats.take(a[:1])
    num_tokens, channels = first.feats.shape[1:]
    out = torch.empty(a.numel(), dtype=torch.float32, device=first.feats.device)
    a, b = a.to(out.device), b.to(out.device)
    step = max(1, chunk_size // (2 * num_tokens * channels))
    for m0 in range(0, a.numel(), step):
        fa, fb = feats.take(a[m0 : m0 + step]), feats.take(b[m0 : m0 + step])
        dot = torch.linalg.vecdot(fa.feats, fb.feats)
        dist = (fa.sq_norms + fb.sq_norms - 2 * dot).clamp_min_(1e-12).sqrt_()
        weight = (fa.vis * fb.vis).sqrt_()
        weight_sum = weight.sum(1)
        out[m0 : m0 + step] = (dist * weight).sum(1) / weight_sum.masked_fill_(weight_sum == 0, 1)
    return out


def _order_keys(dist: torch.Tensor) -> torch.Tensor:
    """int32 keys ordered like the float32 values (``-0.0`` and ``+0.0`` map to the same key).

    Non-negative floats (every distance here) already sort like their bit patterns: a free view.
    """
    bits = dist.view(torch.int32)
    if int(bits.min()) >= 0:
        return bits
    bits = (dist + 0.0).view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _sort_rows(keys: torch.Tensor) -> torch.Tensor:
    """Values of every row sorted ascending."""
    if keys.device.type == "cpu":
        # numpy's AVX-512 int32 sort is ~10x faster than torch.sort on CPU.
        return torch.from_numpy(np.sort(keys.numpy(), axis=1))
    return torch.sort(keys, dim=1).values


def _ties_before(keys: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """For entries ``keys[rows, cols]`` with exact duplicates in their row: how many equal keys sit at a
    lower gallery index (the stable-sort tie order). Rare, so a loop over the affected rows."""
    out = torch.zeros(rows.numel(), dtype=torch.long, device=keys.device)
    positions = torch.arange(keys.shape[1], device=keys.device)
    for r in rows.unique():
        sel = (rows == r).nonzero().squeeze(1)
        equal = keys[r][None, :] == keys[r, cols[sel]][:, None]
        out[sel] = (equal & (positions[None, :] < cols[sel][:, None])).sum(1)
    return out


class _IdentityIndex:
    """Gallery indices grouped by identity, so that each query's same-identity entries are listed
    without a (Q, G) comparison."""

    def __init__(self, g_pids: torch.Tensor) -> None:
        self.members = torch.argsort(g_pids, stable=True)
        self.pids, self.counts = torch.unique_consecutive(g_pids[self.members], return_counts=True)
        self.starts = self.counts.cumsum(0) - self.counts

    def lookup(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cols`` (R, K) gallery indices of each query's identity (padded with 0) and ``valid`` (R, K)."""
        pos = torch.searchsorted(self.pids, q_pids).clamp_max_(len(self.pids) - 1)
        count = torch.where(self.pids[pos] == q_pids, self.counts[pos], 0)
        slot = torch.arange(max(1, int(count.max())), device=q_pids.device)
        valid = slot[None, :] < count[:, None]
        cols = self.members[(self.starts[pos][:, None] + slot[None, :]).clamp_max_(len(self.members) - 1)]
        return cols.masked_fill_(~valid, 0), valid


def _identity_positions(
    dist: torch.Tensor, cols: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the same-identity gallery entries ``cols`` (R, K) (``valid`` (R, K)) land in each row of
    ``dist`` (R, G) when sorted stably; returns the 0-based positions, ascending per row, with
    ``cols`` and ``valid`` in the same order."""
    keys = _order_keys(dist)
    sorted_keys = _sort_rows(keys)
    entry_keys = keys.gather(1, cols)
    pos = torch.searchsorted(sorted_keys, entry_keys)
    tied = valid & (torch.searchsorted(sorted_keys, entry_keys, right=True) - pos > 1)
    if tied.any():
        tie_rows, tie_slots = tied.nonzero(as_tuple=True)
        pos[tie_rows, tie_slots] += _ties_before(keys, tie_rows, cols[tie_rows, tie_slots])
    pos.masked_fill_(~valid, dist.shape[1])
    pos, order = pos.sort(dim=1)
    return pos, cols.gather(1, order), valid.gather(1, order)


def _query_scores(
    pos: torch.Tensor, removed: torch.Tensor, hit: torch.Tensor, max_rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AP, INP (float64, NaN for queries without a match) and CMC rows (float32) of a query block.

    ``pos`` (R, K) ascending positions of the same-identity entries in the full sorted row,
    ``removed`` / ``hit`` (R, K) their fate. The rank among the kept entries is the position minus the
    removed entries before it; AP = mean over hits of (hits so far / rank) (§7.2), INP = #hits / rank
    of the last hit (fast-reid), CMC_r = 1 iff the first hit has rank ≤ r.
    """
    rank = pos - (removed.cumsum(1) - removed.long()) + 1
    num_rel = hit.sum(1).double()
    precision = torch.where(hit, hit.cumsum(1).double() / rank.double(), 0.0)
    ap = precision.sum(1) / num_rel
    inp = num_rel / torch.where(hit, rank, 0).max(1).values.double()
    first = torch.where(hit, rank, torch.iinfo(torch.long).max).min(1).values
    cmc = (torch.arange(1, max_rank + 1, device=pos.device)[None, :] >= first[:, None]).float()
    return ap, inp, cmc


def evaluate_rankings(
    distmat: torch.Tensor,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
    ignored: Mapping[str, torch.Tensor],
    max_rank: int = 50,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, dict]:
    """CMC / mAP / mINP of a (Q, G) distance for one or several removal rules.

    Per query, gallery entries with the same identity and the same camera are removed, and so are the
    same-identity entries flagged in ``ignored[name]`` (G,) bool; the remaining same-identity entries
    are the matches. Queries without a match are skipped (not counted), as in the reference. Returns
    ``{name: {'cmc' (max_rank,) float32, 'mAP', 'mINP', 'num_valid', 'per_query': {'valid', 'ap',
    'inp', 'cmc'}}}`` with ``max_rank`` capped at G; mAP/mINP are NaN when no query is valid.
    """
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    device = distmat.device
    q_pids, g_pids, q_camids, g_camids = (t.to(device) for t in (q_pids, g_pids, q_camids, g_camids))
    ignored = {name: mask.to(device) for name, mask in ignored.items()}
    parts: dict[str, list] = {name: [] for name in ignored}
    identities = _IdentityIndex(g_pids)
    # small blocks: sorting is cache-bound, and a sorted copy (plus key copies for negative distances)
    step = max(1, chunk_size // (4 * num_g))
    progress = Progress(num_q, "ranking", "queries")
    for i0 in range(0, num_q, step):
        i1 = min(i0 + step, num_q)
        pos, cols, valid = _identity_positions(distmat[i0:i1], *identities.lookup(q_pids[i0:i1]))
        same_cam = valid & (g_camids[cols] == q_camids[i0:i1, None])
        for name, mask in ignored.items():
            removed = same_cam | (valid & mask[cols])
            parts[name].append(_query_scores(pos, removed, valid & ~removed, max_rank))
        progress.update(i1 - i0)
    progress.close()
    return {name: _summarise(chunks) for name, chunks in parts.items()}


def _summarise(chunks: list) -> dict:
    """Aggregate per-query (ap, inp, cmc) blocks into the result dict of :func:`evaluate_rankings`."""
    ap, inp, cmc = (torch.cat(t).cpu().numpy() for t in zip(*chunks))
    valid = ~np.isnan(ap)
    num_valid = int(valid.sum())
    # float32 hit counts over a float32 count, i.e. the reference's float32 division (cmc exact).
    curve = cmc[valid].sum(0, dtype=np.float32) / np.float32(max(num_valid, 1))
    return {
        "cmc": curve,
        "mAP": float(np.mean(ap[valid])) if num_valid else float("nan"),
        "mINP": float(np.mean(inp[valid])) if num_valid else float("nan"),
        "num_valid": num_valid,
        "per_query": {"valid": valid, "ap": ap, "inp": inp, "cmc": cmc},
    }


def _as_long(values: IdLike) -> torch.Tensor:
    """Identities / cameras / labels as a flat int64 CPU tensor."""
    if isinstance(values, torch.Tensor):
        return values.detach().reshape(-1).long().cpu()
    return torch.as_tensor(np.asarray(values), dtype=torch.long).reshape(-1)


class ReidEvaluator:
    """Accumulates features batch by batch and evaluates query-vs-gallery retrieval (fast-reid style).

    The first ``num_query`` images fed through :meth:`update` are the queries, the rest the gallery.
    ``protocol='standard'`` → results key ``'all'``; ``protocol='new'`` (TSD new benchmark, needs
    occlusion labels) → keys ``'all'``, ``'npo'``, ``'ntp'``. ``reranking`` applies k-reciprocal
    re-ranking (:func:`utils.reranking.k_reciprocal_rerank`, parameters ``k1``, ``k2``,
    ``lambda_value``) on the part distance. Features stay on the device they arrive on and the
    distance is computed there; ``chunk_size`` bounds every temporary block (elements).

    ``token_names`` (one per token: global, then the parts) turns on per-token metrics: every result
    then also holds ``'per_token': {name: result without 'per_query'}`` (see :meth:`_per_token`).
    """

    def __init__(
        self,
        num_query: int,
        max_rank: int = 50,
        feat_norm: bool = True,
        protocol: str = "standard",
        reranking: bool = False,
        rerank_params: Optional[Mapping[str, Union[int, float]]] = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        token_names: Optional[Sequence[str]] = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown evaluation protocol {protocol!r}: use one of {PROTOCOLS}")
        unknown = set(rerank_params or {}) - set(DEFAULT_RERANK_PARAMS)
        if unknown:
            raise ConfigError(f"unknown re-ranking parameters {sorted(unknown)}: use {sorted(DEFAULT_RERANK_PARAMS)}")
        self.num_query = num_query
        self.max_rank = max_rank
        self.feat_norm = feat_norm
        self.protocol = protocol
        self.reranking = reranking
        self.rerank_params = {**DEFAULT_RERANK_PARAMS, **(rerank_params or {})}
        self.chunk_size = chunk_size
        self.token_names = list(token_names) if token_names is not None else None
        self.reset()

    @classmethod
    def from_cfg(cls, cfg: CfgNode, num_query: int) -> "ReidEvaluator":
        """Evaluator configured by ``cfg.TEST`` (FEAT_NORM, NEW_METRIC, RE_RANKING, RE_RANKING_K1/K2/LAMBDA,
        PER_PART with the part names of ``cfg.INPUT.MASK_PREPROCESS``)."""
        if cfg.TEST.FEAT_NORM not in ("yes", "no"):
            raise ConfigError(f"TEST.FEAT_NORM is {cfg.TEST.FEAT_NORM!r}: set it to 'yes' or 'no'")
        token_names = None
        if cfg.TEST.PER_PART:
            from datasets.masks import part_names  # the part order of the model's tokens

            token_names = ["global"] + [n.removesuffix("_mask") for n in part_names(cfg.INPUT.MASK_PREPROCESS)]
        return cls(
            num_query,
            feat_norm=cfg.TEST.FEAT_NORM == "yes",
            protocol="new" if cfg.TEST.NEW_METRIC else "standard",
            reranking=cfg.TEST.RE_RANKING,
            rerank_params={
                "k1": cfg.TEST.RE_RANKING_K1,
                "k2": cfg.TEST.RE_RANKING_K2,
                "lambda_value": cfg.TEST.RE_RANKING_LAMBDA,
            },
            token_names=token_names,
        )

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self._feats: list[torch.Tensor] = []
        self._vis: list[torch.Tensor] = []
        self._pids: list[torch.Tensor] = []
        self._camids: list[torch.Tensor] = []
        self._occ: list[Optional[torch.Tensor]] = []

    def update(
        self,
        feats: torch.Tensor,
        vis: Optional[torch.Tensor],
        pids: IdLike,
        camids: IdLike,
        occ_labels: Optional[IdLike] = None,
    ) -> None:
        """Add a batch: ``feats`` (B, 1+P, C) or (B, C), ``vis`` (B, 1+P) or None (all visible),
        identities, cameras and (new protocol) gallery occlusion labels, each B values."""
        feats = feats.detach().float()
        if feats.dim() == 2:
            feats = feats[:, None]
        vis = torch.ones(feats.shape[:2], device=feats.device) if vis is None else vis.detach().float().to(feats.device)
        ids = [_as_long(v) for v in (pids, camids)] + [None if occ_labels is None else _as_long(occ_labels)]
        if feats.dim() != 3 or vis.shape != feats.shape[:2] or any(v is not None and len(v) != len(feats) for v in ids):
            raise ValueError(
                f"batch shapes do not fit: features {tuple(feats.shape)} (B, T, C), visibility {tuple(vis.shape)} (B, T), "
                f"ids {[None if v is None else len(v) for v in ids]} (B each)"
            )
        self._feats.append(feats)
        self._vis.append(vis)
        self._pids.append(ids[0])
        self._camids.append(ids[1])
        self._occ.append(ids[2])

    def _ignored(self, g_labels: Optional[torch.Tensor], num_g: int) -> dict[str, torch.Tensor]:
        """Same-identity gallery entries removed besides the same-camera ones, per sub-metric."""
        if self.protocol == "standard":
            return {"all": torch.zeros(num_g, dtype=torch.bool)}
        if g_labels is None:
            raise ConfigError(
                "TEST.NEW_METRIC needs gallery occlusion labels: use DATASETS.NAMES 'new_occ_duke' or set TEST.NEW_METRIC False"
            )
        return {
            name: torch.isin(g_labels, torch.tensor((HOLISTIC_LABEL, *labels)))
            for name, labels in NEW_PROTOCOL_IGNORED.items()
        }

    def compute(self, return_distmat: bool = False) -> Union[dict, tuple[dict, torch.Tensor]]:
        """Evaluate → ``{name: result}`` (see :func:`evaluate_rankings`), plus the (Q, G) distance
        (re-ranked if enabled) when ``return_distmat``."""
        num_all = sum(f.shape[0] for f in self._feats)
        if not 0 < self.num_query < num_all:
            raise DataError(f"evaluation got {num_all} images for {self.num_query} queries: the query or gallery set is empty")
        pids, camids = torch.cat(self._pids), torch.cat(self._camids)
        q, g = slice(None, self.num_query), slice(self.num_query, None)
        g_labels = None if any(o is None for o in self._occ) else torch.cat(self._occ)[g]
        ignored = self._ignored(g_labels, num_all - self.num_query)
        if self.reranking:
            # No normalised copy of all features: every block normalises the rows it reads (for
            # blocks of >= 1,024 rows that repeated work is ~0.1% of the GEMMs).
            bank = FeatureBank(self._feats, self._vis, self.feat_norm)
            distmat = k_reciprocal_rerank(
                lambda i0, i1, j0: part_distance(bank.rows(i0, i1), bank.subset(j0, num_all), self.chunk_size,
                                                 progress=False),
                lambda a, b: pair_distance(bank, a, b, self.chunk_size),
                self.num_query,
                num_all,
                chunk_size=self.chunk_size,
                **self.rerank_params,
            )
        else:
            distmat = query_gallery_distance(self._feats, self._vis, self.num_query, self.feat_norm, self.chunk_size)
        results = evaluate_rankings(distmat, pids[q], pids[g], camids[q], camids[g], ignored, self.max_rank, self.chunk_size)
        if not return_distmat:
            del distmat  # per-token metrics need a (Q, G) matrix of their own
        if self.token_names is not None:
            for name, per_token in self._per_token(pids, camids, ignored).items():
                results[name]["per_token"] = per_token
        return (results, distmat) if return_distmat else results

    def _per_token(self, pids: torch.Tensor, camids: torch.Tensor, ignored: dict[str, torch.Tensor]) -> dict[str, dict]:
        """``{protocol split: {token name: result}}``, each token evaluated alone.

        A token alone ranks by its Euclidean distance (the evaluator's formula with that one token,
        i.e. unweighted where both images see it). Queries that do not see the token are left out
        (``num_valid``); gallery images that do not see it get distance +inf, after every visible one
        (ties by gallery index, as always): a hidden part costs that token its matches.
        """
        num_tokens = self._feats[0].shape[1]
        names = (self.token_names if len(self.token_names) == num_tokens  # else a model without these parts (ViT)
                 else ["global", *(f"token{p}" for p in range(1, num_tokens))])
        q, g = slice(None, self.num_query), slice(self.num_query, None)
        vis = torch.cat(self._vis)
        out: dict[str, dict] = {split: {} for split in ignored}
        for p, name in enumerate(names):
            seen = vis[:, p] > 0
            keep = seen[q].cpu()
            if not keep.any():  # no query sees this part
                none = torch.empty(0, dtype=torch.float64)
                for split in out:
                    out[split][name] = _summarise([(none, none, torch.zeros(0, min(self.max_rank, len(seen) - self.num_query)))])
                    out[split][name].pop("per_query")
                continue
            dist = query_gallery_distance([f[:, p : p + 1] for f in self._feats], [v[:, p : p + 1] for v in self._vis],
                                          self.num_query, self.feat_norm, self.chunk_size)
            dist = dist[keep.to(dist.device)]
            dist[:, ~seen[g].to(dist.device)] = float("inf")
            res = evaluate_rankings(dist, pids[q][keep], pids[g], camids[q][keep], camids[g], ignored, self.max_rank,
                                    self.chunk_size)
            for split, r in res.items():
                r.pop("per_query")
                out[split][name] = r
        return out
