"""CMC / mAP / mINP of a query-to-gallery distance, for one or several removal rules at once.

Only same-identity gallery entries can be removed (same camera, or an ignored occlusion label) or be
matches, so it suffices to know where each of them lands in the sorted row. Rows are sorted by value
(numpy's vectorised int32 sort of order-preserving keys) and each same-identity entry is located by
binary search; exact distance ties are ordered by gallery index. This equals walking a *stable*
argsort of every row (§9.23), for every protocol at once. Memory: besides the (Q, G) distance, a
sorted int32 copy of ``chunk_size / 4`` distances.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from utils.progress import Progress

from .distance import DEFAULT_CHUNK_SIZE


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
    return {name: summarise(chunks) for name, chunks in parts.items()}


def summarise(chunks: list) -> dict:
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
