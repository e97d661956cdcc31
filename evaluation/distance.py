"""Visibility-weighted part distance between query and gallery images (TSD_REFERENCE §7.2).

For every token p (global + P parts) the Euclidean distance ``sqrt(clamp(|q|² + |g|² - 2 q.g, 1e-12))``
of the (L2-normalised) token features, averaged with weights ``sqrt(v_q,p * v_g,p)`` (``W = Σ w``
replaced by 1 where 0). The gallery streams through chunk-sized buffers (normalised there), one GEMM
per block and token over the queries that see the token (planned by :func:`_plan_tokens`), so neither
the reference's (1+P) x Q x G tensor nor a normalised copy of the features ever exists. float32 with
the reference's operation order: the result is the reference's bit for bit (see :func:`part_distance`
for the one exception).

:class:`PartFeatures` holds token features with their visibilities and squared norms;
:class:`FeatureBank` keeps an evaluation set as the batches it arrived in and hands out normalised row
ranges. Memory of a distance (Q queries, T = 1 + P tokens, C channels, B = ``chunk_size`` elements):
the (Q, G) float32 result, the normalised queries and their per-token copies (2·Q·T·C floats), and
about 4·B float32 of distance buffers plus a gallery buffer of at most B floats.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from utils.progress import Progress

# Elements of one temporary block (rows x columns): 8 Mi elements = 32 MiB of float32. Few large
# blocks keep the number of (thread-synchronising) tensor operations low.
DEFAULT_CHUNK_SIZE = 1 << 23


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
    def build(cls, feats: torch.Tensor, vis: torch.Tensor, normalize: bool, binary: bool | None = None) -> PartFeatures:
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

    def rows(self, start: int, stop: int, out: torch.Tensor | None = None) -> PartFeatures:
        """Rows ``[start, stop)`` as views (``out`` is ignored: nothing needs copying)."""
        return PartFeatures(self.feats[start:stop], self.vis[start:stop], self.sq_norms[start:stop], self.binary)

    def take(self, index: torch.Tensor) -> PartFeatures:
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

    def subset(self, start: int, stop: int) -> FeatureBank:
        """Rows ``[start, stop)`` as a bank sharing this one's data."""
        view = copy.copy(self)
        view._start, view._stop = self._start + start, self._start + stop
        return view

    def rows(self, start: int, stop: int, out: torch.Tensor | None = None) -> PartFeatures:
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


RowSource = PartFeatures | FeatureBank


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
    vis: torch.Tensor | None
    runs: list[tuple[int, int, int]] | None


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
    feats: torch.Tensor | Sequence[torch.Tensor],
    vis: torch.Tensor | Sequence[torch.Tensor],
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


def pair_distance(
    feats: RowSource, a: torch.Tensor, b: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
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
