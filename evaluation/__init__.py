"""Retrieval evaluation (fast-reid's layout): part distance, ranking, re-ranking, protocols, evaluator.

Main entry point::

    evaluator = ReidEvaluator(num_query)            # or ReidEvaluator.from_cfg(cfg, num_query)
    evaluator.update(feats, vis, pids, camids)      # batch by batch: queries first, then the gallery
    results = evaluator.compute()                   # {'all': {'cmc', 'mAP', 'mINP', 'num_valid', ...}}

* :mod:`evaluation.distance`: visibility-weighted part distance (features, GEMM planning, blocks);
* :mod:`evaluation.rank`: CMC / mAP / mINP from a distance;
* :mod:`evaluation.rerank`: k-reciprocal re-ranking in bounded memory;
* :mod:`evaluation.protocols`: standard / new-benchmark (ALL, NPO, NTP) splits and per-token rows;
* :mod:`evaluation.reid_evaluation`: :class:`ReidEvaluator`.
"""
from .distance import DEFAULT_CHUNK_SIZE, query_gallery_distance
from .rank import evaluate_rankings
from .reid_evaluation import ReidEvaluator
from .rerank import k_reciprocal_rerank

__all__ = ["DEFAULT_CHUNK_SIZE", "ReidEvaluator", "evaluate_rankings", "k_reciprocal_rerank", "query_gallery_distance"]
