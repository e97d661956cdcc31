"""The evaluator: accumulates features batch by batch and evaluates query-vs-gallery retrieval.

Implements the reference evaluators ``w_R1_mAP_eval`` (standard Market-1501 protocol, TSD_REFERENCE
§7.2) and ``w_R1_mAP_eval_new`` (TSD new benchmark, §7.3) with the same numbers, but bounded memory
and no Python loop over queries: the part distance (:mod:`evaluation.distance`), optionally re-ranked
(:mod:`evaluation.rerank`), is ranked once for every split of the protocol (:mod:`evaluation.rank`,
:mod:`evaluation.protocols`). Results are a dict ``{split: result}`` (see
:func:`evaluation.rank.evaluate_rankings`).

Peak memory beyond the stored features (Q queries, G gallery images, N = Q + G, T = 1 + P tokens,
C channels, B = ``chunk_size`` elements): the (Q, G) float32 distance, the normalised queries and
their per-token copies (2·Q·T·C floats), and about 4·B float32 of distance buffers (plus a
gallery buffer of at most B floats) or, while ranking, a sorted int32 copy of B/4 distances.
Re-ranking (evaluation/rerank.py) adds O(N·k1) indices, a sparse N x N matrix with O(k1·k2)
entries per row and row blocks of at least 1,024 x N floats (no normalised copy of the features:
each block normalises what it reads). Per-token metrics (``token_names``) add one more (Q, G) distance at a time,
after the main one is dropped. At MSMT17's size (11,659 x 82,161, 6 x 768) the features are 1.7 GB
and a (Q, G) float32 matrix 3.8 GB.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from yacs.config import CfgNode

from config import get_cfg_defaults, parts
from utils.errors import ConfigError, DataError

from .distance import DEFAULT_CHUNK_SIZE, FeatureBank, pair_distance, part_distance, query_gallery_distance
from .protocols import PROTOCOLS, ignored_entries, per_token_results
from .rank import evaluate_rankings
from .rerank import k_reciprocal_rerank


def rerank_params(cfg: CfgNode) -> dict[str, int | float]:
    """The k-reciprocal parameters of ``cfg.TEST`` (RE_RANKING_K1 / K2 / LAMBDA) by the names of
    :func:`evaluation.rerank.k_reciprocal_rerank`."""
    return {"k1": cfg.TEST.RE_RANKING_K1, "k2": cfg.TEST.RE_RANKING_K2, "lambda_value": cfg.TEST.RE_RANKING_LAMBDA}


# The defaults have one owner, config/defaults.py (an evaluator built without a config uses them too).
DEFAULT_RERANK_PARAMS = rerank_params(get_cfg_defaults())

IdLike = torch.Tensor | np.ndarray | Sequence[int]


def _as_long(values: IdLike) -> torch.Tensor:
    """Identities / cameras / labels as a flat int64 CPU tensor."""
    if isinstance(values, torch.Tensor):
        return values.detach().reshape(-1).long().cpu()
    return torch.as_tensor(np.asarray(values), dtype=torch.long).reshape(-1)


class ReidEvaluator:
    """Accumulates features batch by batch and evaluates query-vs-gallery retrieval (fast-reid style).

    The first ``num_query`` images fed through :meth:`update` are the queries, the rest the gallery.
    ``protocol='standard'`` → results key ``'all'``; ``protocol='new'`` (TSD new benchmark, needs
    occlusion labels) → keys ``'all'``, ``'npo'``, ``'ntp'`` (rules in :mod:`evaluation.protocols`).
    ``reranking`` applies k-reciprocal re-ranking (:func:`evaluation.rerank.k_reciprocal_rerank`,
    parameters ``k1``, ``k2``, ``lambda_value``) on the part distance. Features stay on the device
    they arrive on and the distance is computed there; ``chunk_size`` bounds every temporary block
    (elements).

    ``token_names`` (one per token: global, then the parts) turns on per-token metrics: every result
    then also holds ``'per_token': {name: result without 'per_query'}``
    (see :func:`evaluation.protocols.per_token_results`).
    """

    def __init__(
        self,
        num_query: int,
        max_rank: int = 50,
        feat_norm: bool = True,
        protocol: str = "standard",
        reranking: bool = False,
        rerank_params: Mapping[str, int | float] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        token_names: Sequence[str] | None = None,
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
    def from_cfg(cls, cfg: CfgNode, num_query: int) -> ReidEvaluator:
        """Evaluator configured by ``cfg.TEST`` (FEAT_NORM, NEW_METRIC, RE_RANKING, RE_RANKING_K1/K2/LAMBDA,
        PER_PART). With PER_PART the per-token rows are named after the model's tokens
        (:func:`config.parts.token_names` of ``MODEL.ARCH`` and ``INPUT.MASK_PREPROCESS``: ``global``,
        then the parts)."""
        return cls(
            num_query,
            feat_norm=cfg.TEST.FEAT_NORM == "yes",
            protocol="new" if cfg.TEST.NEW_METRIC else "standard",
            reranking=cfg.TEST.RE_RANKING,
            rerank_params=rerank_params(cfg),
            token_names=parts.token_names(cfg.MODEL.ARCH, cfg.INPUT.MASK_PREPROCESS) if cfg.TEST.PER_PART else None,
        )

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self._feats: list[torch.Tensor] = []
        self._vis: list[torch.Tensor] = []
        self._pids: list[torch.Tensor] = []
        self._camids: list[torch.Tensor] = []
        self._occ: list[torch.Tensor | None] = []

    def update(
        self,
        feats: torch.Tensor,
        vis: torch.Tensor | None,
        pids: IdLike,
        camids: IdLike,
        occ_labels: IdLike | None = None,
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
                f"batch shapes do not fit: features {tuple(feats.shape)} (B, T, C), "
                f"visibility {tuple(vis.shape)} (B, T), "
                f"ids {[None if v is None else len(v) for v in ids]} (B each)"
            )
        self._feats.append(feats)
        self._vis.append(vis)
        self._pids.append(ids[0])
        self._camids.append(ids[1])
        self._occ.append(ids[2])

    def compute(self, return_distmat: bool = False) -> dict | tuple[dict, torch.Tensor]:
        """Evaluate → ``{name: result}`` (see :func:`evaluate_rankings`), plus the (Q, G) distance
        (re-ranked if enabled) when ``return_distmat``."""
        num_all = sum(f.shape[0] for f in self._feats)
        if not 0 < self.num_query < num_all:
            raise DataError(f"evaluation got {num_all} images for {self.num_query} queries: "
                            "the query or gallery set is empty")
        pids, camids = torch.cat(self._pids), torch.cat(self._camids)
        q, g = slice(None, self.num_query), slice(self.num_query, None)
        g_labels = None if any(o is None for o in self._occ) else torch.cat(self._occ)[g]
        ignored = ignored_entries(self.protocol, g_labels, num_all - self.num_query)
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
        results = evaluate_rankings(distmat, pids[q], pids[g], camids[q], camids[g], ignored, self.max_rank,
                                    self.chunk_size)
        if not return_distmat:
            del distmat  # per-token metrics need a (Q, G) matrix of their own
        if self.token_names is not None:
            per_token = per_token_results(self._feats, self._vis, pids, camids, self.num_query, ignored,
                                          self.token_names, self.max_rank, self.feat_norm, self.chunk_size)
            for name, rows in per_token.items():
                results[name]["per_token"] = rows
        return (results, distmat) if return_distmat else results
