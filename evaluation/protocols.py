"""Which gallery entries count, per evaluation protocol: the result splits and the per-token rows.

* ``standard`` (Market-1501, Occluded-Duke; TSD_REFERENCE §7.2): per query, the gallery images of its
  identity taken by its camera are removed; one split, ``'all'``.
* ``new`` (TSD new benchmark, §3.8 / §7.3; needs gallery occlusion labels): label 3 (holistic images
  of the query identities) is never a match, and each split additionally ignores the same-identity
  images with the labels of :data:`NEW_PROTOCOL_IGNORED` (ALL / NPO / NTP).
* per token (TEST.PER_PART): each token ranks alone by its own Euclidean distance; queries that do not
  see it are left out and gallery images that do not see it rank last.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from config.parts import GLOBAL_TOKEN
from utils.errors import ConfigError

from .distance import query_gallery_distance
from .rank import evaluate_rankings, summarise

PROTOCOLS = ("standard", "new")
# New benchmark (§3.8 / §7.3): gallery label 3 (holistic images of the query identities) is never a
# match; each sub-metric additionally ignores the same-identity images with the listed labels.
HOLISTIC_LABEL = 3
NEW_PROTOCOL_IGNORED = {"all": (0,), "npo": (0, 1), "ntp": (0, 2)}


def ignored_entries(protocol: str, g_labels: torch.Tensor | None, num_g: int) -> dict[str, torch.Tensor]:
    """Same-identity gallery entries removed besides the same-camera ones: ``{split: (G,) bool}``.

    ``g_labels`` (G,) are the gallery occlusion labels (None when the data set has none)."""
    if protocol == "standard":
        return {"all": torch.zeros(num_g, dtype=torch.bool)}
    if g_labels is None:
        raise ConfigError(
            "TEST.NEW_METRIC needs gallery occlusion labels: use DATASETS.NAMES 'new_occ_duke' "
            "or set TEST.NEW_METRIC False"
        )
    return {
        name: torch.isin(g_labels, torch.tensor((HOLISTIC_LABEL, *labels)))
        for name, labels in NEW_PROTOCOL_IGNORED.items()
    }


def per_token_results(
    feats: Sequence[torch.Tensor],
    vis: Sequence[torch.Tensor],
    pids: torch.Tensor,
    camids: torch.Tensor,
    num_query: int,
    ignored: Mapping[str, torch.Tensor],
    token_names: Sequence[str],
    max_rank: int,
    feat_norm: bool,
    chunk_size: int,
) -> dict[str, dict]:
    """``{split: {token name: result without 'per_query'}}``, each token evaluated alone.

    ``feats`` / ``vis``: the (B, T, C) / (B, T) batches of queries then gallery; ``pids`` / ``camids``
    (N,); ``ignored`` from :func:`ignored_entries`. A token alone ranks by its Euclidean distance (the
    evaluator's formula with that one token, i.e. unweighted where both images see it). Queries that
    do not see the token are left out (``num_valid``); gallery images that do not see it get distance
    +inf, after every visible one (ties by gallery index, as always): a hidden part costs that token its
    matches. ``token_names`` that do not fit the T tokens (a model without these parts, e.g. ViT) give
    way to ``global, token1, ...``.
    """
    num_tokens = feats[0].shape[1]
    names = (token_names if len(token_names) == num_tokens  # else a model without these parts (ViT)
             else [GLOBAL_TOKEN, *(f"token{p}" for p in range(1, num_tokens))])
    q, g = slice(None, num_query), slice(num_query, None)
    all_vis = torch.cat(list(vis))
    out: dict[str, dict] = {split: {} for split in ignored}
    for p, name in enumerate(names):
        seen = all_vis[:, p] > 0
        keep = seen[q].cpu()
        if not keep.any():  # no query sees this part
            none = torch.empty(0, dtype=torch.float64)
            for split in out:
                out[split][name] = summarise([(none, none, torch.zeros(0, min(max_rank, len(seen) - num_query)))])
                out[split][name].pop("per_query")
            continue
        dist = query_gallery_distance([f[:, p : p + 1] for f in feats], [v[:, p : p + 1] for v in vis],
                                      num_query, feat_norm, chunk_size)
        dist = dist[keep.to(dist.device)]
        dist[:, ~seen[g].to(dist.device)] = float("inf")
        res = evaluate_rankings(dist, pids[q][keep], pids[g], camids[q][keep], camids[g], ignored, max_rank,
                                chunk_size)
        for split, r in res.items():
            r.pop("per_query")
            out[split][name] = r
    return out
