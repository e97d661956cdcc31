"""Behaviour of the retrieval evaluator (evaluation/) and the re-ranking (evaluation/rerank.py).

The oracles are the per-query re-implementations of the reference in tests/oracles.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from config import get_cfg_defaults, validate_cfg
from evaluation import ReidEvaluator, evaluate_rankings, k_reciprocal_rerank, query_gallery_distance
from tests.oracles import reference_distance, reference_eval, reference_rerank
from utils.errors import ConfigError, DataError

NEW = {"all": (0,), "npo": (0, 1), "ntp": (0, 2)}


def _random_set(num_q: int = 40, num_g: int = 300, tokens: int = 6, dim: int = 24, seed: int = 0) -> dict:
    """Identity-structured features; token 4 is seen by 8 queries only (below the GEMM row minimum),
    token 5 by about half of them (its GEMM runs over those queries only)."""
    gen = torch.Generator().manual_seed(seed)
    pids = torch.cat([torch.randint(0, 15, (num_q,), generator=gen), torch.randint(0, 25, (num_g,), generator=gen)])
    camids = torch.randint(0, 4, (num_q + num_g,), generator=gen)
    centres = torch.randn(25, tokens, dim, generator=gen)
    feats = centres[pids] + 1.2 * torch.randn(num_q + num_g, tokens, dim, generator=gen)
    vis = (torch.rand(num_q + num_g, tokens, generator=gen) < 0.8).float()
    vis[:num_q, 4] = 0
    vis[:8, 4] = 1
    vis[:num_q, 5] = (torch.rand(num_q, generator=gen) < 0.5).float()
    vis[:, 0] = 1
    labels = torch.randint(0, 4, (num_q + num_g,), generator=gen)
    return {"feats": feats, "vis": vis, "pids": pids, "camids": camids, "labels": labels, "num_query": num_q}


def _evaluate(data: dict, batch: int = 37, **kwargs):
    """ReidEvaluator over ``data`` fed in batches → (results, distmat)."""
    evaluator = ReidEvaluator(data["num_query"], **kwargs)
    vis = data["vis"]
    for i in range(0, len(data["pids"]), batch):
        sl = slice(i, i + batch)
        evaluator.update(data["feats"][sl], None if vis is None else vis[sl], data["pids"][sl], data["camids"][sl],
                         data["labels"][sl])
    return evaluator.compute(return_distmat=True)


def _oracle(data: dict, distmat: np.ndarray, ignored_labels: tuple | None = None, sort_kind: str = "stable",
            max_rank: int = 50) -> dict:
    """tests/oracles.reference_eval on ``distmat`` with the data's ids."""
    nq = data["num_query"]
    pids, camids, labels = data["pids"].numpy(), data["camids"].numpy(), data["labels"].numpy()
    return reference_eval(
        distmat, pids[:nq], pids[nq:], camids[:nq], camids[nq:], max_rank,
        g_labels=None if ignored_labels is None else labels[nq:], ignored_labels=ignored_labels or (),
        sort_kind=sort_kind,
    )


def _assert_same_results(ours: dict, ref: dict) -> None:
    """Result dicts equal: counts and CMC exactly, AP / INP / means to float64 rounding."""
    assert ours["num_valid"] == ref["num_valid"]
    np.testing.assert_array_equal(ours["cmc"], ref["cmc"])
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert ours["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)
    np.testing.assert_array_equal(ours["per_query"]["valid"], ref["per_query"]["valid"])
    np.testing.assert_array_equal(ours["per_query"]["cmc"], ref["per_query"]["cmc"])
    for key in ("ap", "inp"):
        np.testing.assert_allclose(ours["per_query"][key], ref["per_query"][key], rtol=0, atol=1e-12)


def test_distance_is_the_reference_bit_for_bit() -> None:
    data = _random_set()
    nq = data["num_query"]
    _, distmat = _evaluate(data)
    feats = F.normalize(data["feats"], dim=2)
    ref = reference_distance(feats[:nq], data["vis"][:nq], feats[nq:], data["vis"][nq:])
    # torch's own sum switches to a scalar loop (another order) for its last (Q*G mod 16) outputs
    np.testing.assert_array_equal(distmat.numpy().ravel()[:-15], ref.ravel()[:-15])
    np.testing.assert_allclose(distmat.numpy(), ref, rtol=0, atol=1e-6)
    assert torch.equal(query_gallery_distance(data["feats"], data["vis"], nq), distmat)


def test_soft_visibility_weights() -> None:
    data = _random_set(seed=1)
    data["vis"] = data["vis"] * torch.rand(data["vis"].shape, generator=torch.Generator().manual_seed(2))
    data["vis"][:5] = 0  # queries seeing nothing: weight sum 0 -> 1, distance 0
    nq = data["num_query"]
    _, distmat = _evaluate(data)
    feats = F.normalize(data["feats"], dim=2)
    ref = reference_distance(feats[:nq], data["vis"][:nq], feats[nq:], data["vis"][nq:])
    np.testing.assert_allclose(distmat.numpy(), ref, rtol=0, atol=1e-6)
    assert (distmat[:5] == 0).all()


@pytest.mark.parametrize("protocol", ["standard", "new"])
def test_matches_the_per_query_reference(protocol: str) -> None:
    data = _random_set(seed=3)
    results, distmat = _evaluate(data, protocol=protocol, max_rank=20)
    rules = {"all": None} if protocol == "standard" else NEW
    assert set(results) == set(rules)
    for name, ignored in rules.items():
        _assert_same_results(results[name], _oracle(data, distmat.numpy(), ignored, max_rank=20))


def test_exact_ties_follow_a_stable_sort() -> None:
    gen = torch.Generator().manual_seed(4)
    q_pids, g_pids = torch.randint(0, 5, (30,), generator=gen), torch.randint(0, 5, (200,), generator=gen)
    q_cams, g_cams = torch.randint(0, 3, (30,), generator=gen), torch.randint(0, 3, (200,), generator=gen)
    distmat = torch.randint(0, 6, (30, 200), generator=gen).float() / 4  # many exact ties, also 0.0
    distmat[0, :50] = -0.0  # -0.0 ties with +0.0
    results = evaluate_rankings(distmat, q_pids, g_pids, q_cams, g_cams,
                                {"all": torch.zeros(200, dtype=torch.bool)}, 10)
    ref = reference_eval(distmat.numpy(), q_pids.numpy(), g_pids.numpy(), q_cams.numpy(), g_cams.numpy(), 10,
                         sort_kind="stable")
    _assert_same_results(results["all"], ref)


def test_negative_distances_rank_like_their_values() -> None:
    gen = torch.Generator().manual_seed(5)
    distmat = torch.randn(20, 80, generator=gen)  # e.g. negated similarities
    pids = torch.randint(0, 6, (100,), generator=gen)
    cams = torch.randint(0, 3, (100,), generator=gen)
    results = evaluate_rankings(distmat, pids[:20], pids[20:], cams[:20], cams[20:],
                                {"all": torch.zeros(80, dtype=torch.bool)})
    ref = reference_eval(distmat.numpy(), pids[:20].numpy(), pids[20:].numpy(), cams[:20].numpy(), cams[20:].numpy(),
                         sort_kind="stable")
    _assert_same_results(results["all"], ref)


def test_hand_example_map_minp_and_same_camera_removal() -> None:
    # gallery sorted by distance: same id & same camera (removed), other, match, other, other, match
    distmat = torch.tensor([[0.05, 0.1, 0.2, 0.3, 0.4, 0.5]])
    g_pids, g_cams = torch.tensor([1, 2, 1, 3, 2, 1]), torch.tensor([0, 1, 1, 1, 1, 1])
    res = evaluate_rankings(distmat, torch.tensor([1]), g_pids, torch.tensor([0]), g_cams,
                            {"all": torch.zeros(6, dtype=torch.bool)}, 4)["all"]
    # matches at kept ranks 2 and 5: AP = (1/2 + 2/5) / 2, INP = 2 / 5; CMC capped at 4 ranks
    assert res["mAP"] == pytest.approx(0.45)
    assert res["mINP"] == pytest.approx(0.4)
    np.testing.assert_array_equal(res["cmc"], [0, 1, 1, 1])
    assert res["num_valid"] == 1


def test_query_without_a_match_is_skipped() -> None:
    distmat = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.1, 0.2], [0.2, 0.3, 0.1]])
    q_pids, g_pids = torch.tensor([1, 7, 2]), torch.tensor([1, 2, 2])
    q_cams, g_cams = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 1])
    res = evaluate_rankings(distmat, q_pids, g_pids, q_cams, g_cams,
                            {"all": torch.zeros(3, dtype=torch.bool)}, 3)["all"]
    # query 0: match at rank 1; query 1: identity absent; query 2: gallery 2 is nearest but same camera
    # (removed), so the match (gallery 1) comes second after gallery 0
    np.testing.assert_array_equal(res["per_query"]["valid"], [True, False, True])
    assert np.isnan(res["per_query"]["ap"][1]) and not res["per_query"]["cmc"][1].any()
    assert res["num_valid"] == 2
    assert res["mAP"] == pytest.approx((1 + 1 / 2) / 2)
    np.testing.assert_array_equal(res["cmc"], [0.5, 1, 1])


def test_no_valid_query_gives_nan_means() -> None:
    res = evaluate_rankings(torch.rand(2, 3), torch.tensor([5, 6]), torch.tensor([1, 2, 3]), torch.zeros(2),
                            torch.ones(3), {"all": torch.zeros(3, dtype=torch.bool)})["all"]
    assert res["num_valid"] == 0 and np.isnan(res["mAP"]) and np.isnan(res["mINP"])
    np.testing.assert_array_equal(res["cmc"], np.zeros(3))


def test_new_protocol_removal_rules_by_hand() -> None:
    # one query (id 1, camera 0); gallery by ascending distance:
    #   0: id 1, cam 0, label 1 -> same camera: removed everywhere
    #   1: id 2, cam 1, label 3 -> other identity: a negative everywhere (labels only filter id 1)
    #   2: id 1, cam 1, label 3 -> holistic image of the query id: removed everywhere
    #   3: id 1, cam 2, label 0 -> removed everywhere (ALL ignores 0, NPO/NTP too)
    #   4: id 1, cam 3, label 1 -> match in ALL and NTP, removed in NPO
    #   5: id 3, cam 1, label 0 -> negative
    #   6: id 1, cam 4, label 2 -> match in ALL and NPO, removed in NTP
    g_pids = torch.tensor([1, 2, 1, 1, 1, 3, 1])
    g_cams = torch.tensor([0, 1, 1, 2, 3, 1, 4])
    labels = torch.tensor([1, 3, 3, 0, 1, 0, 2])
    evaluator = ReidEvaluator(1, max_rank=5, feat_norm=False, protocol="new")
    evaluator.update(torch.zeros(1, 2), None, [1], [0], [0])
    evaluator.update(torch.arange(1.0, 8.0)[:, None] * torch.tensor([0.1, 0.0]), None, g_pids, g_cams, labels)
    res = evaluator.compute()
    # ALL keeps 1, 4, 5, 6 -> matches at ranks 2 and 4; NPO keeps 1, 5, 6 -> rank 3; NTP keeps 1, 4, 5 -> rank 2
    assert res["all"]["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert res["npo"]["mAP"] == pytest.approx(1 / 3)
    assert res["ntp"]["mAP"] == pytest.approx(1 / 2)
    np.testing.assert_array_equal(res["all"]["cmc"], [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(res["npo"]["cmc"], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(res["ntp"]["cmc"], [0, 1, 1, 1, 1])


def test_flat_features_without_visibility() -> None:
    data = _random_set(seed=6)
    data["feats"], data["vis"] = data["feats"][:, 0], None  # (N, C), everything visible
    nq = data["num_query"]
    results, distmat = _evaluate(data, max_rank=10)
    feats = F.normalize(data["feats"], dim=1)
    expected = (feats[:nq, None] - feats[None, nq:]).pow(2).sum(2).sqrt()
    torch.testing.assert_close(distmat, expected, rtol=0, atol=1e-5)
    _assert_same_results(results["all"], _oracle(data, distmat.numpy(), max_rank=10))


def test_features_without_normalisation() -> None:
    data = _random_set(seed=7)
    nq = data["num_query"]
    _, distmat = _evaluate(data, feat_norm=False)
    ref = reference_distance(data["feats"][:nq], data["vis"][:nq], data["feats"][nq:], data["vis"][nq:])
    np.testing.assert_allclose(distmat.numpy(), ref, rtol=1e-6, atol=1e-5)


def test_chunk_size_and_batching_do_not_change_anything() -> None:
    data = _random_set(seed=8)
    results, distmat = _evaluate(data, protocol="new")
    for batch, chunk_size in [(1, 6000), (300, 50_000), (23, 1 << 20)]:
        other, other_distmat = _evaluate(data, batch=batch, protocol="new", chunk_size=chunk_size)
        assert torch.equal(distmat, other_distmat)
        for name in results:
            _assert_same_results(other[name], results[name])


def test_caller_tensors_are_not_modified() -> None:
    data = _random_set(seed=9)
    before = data["feats"].clone()
    _evaluate(data)
    assert torch.equal(data["feats"], before)


def test_max_rank_is_capped_at_the_gallery_size() -> None:
    data = _random_set(num_q=5, num_g=12, seed=10)
    results, _ = _evaluate(data)
    assert results["all"]["cmc"].shape == (12,)
    assert results["all"]["per_query"]["cmc"].shape == (5, 12)


def test_input_errors() -> None:
    with pytest.raises(ConfigError, match="protocol"):
        ReidEvaluator(3, protocol="market")
    with pytest.raises(ConfigError, match="k3"):
        ReidEvaluator(3, rerank_params={"k3": 1})
    evaluator = ReidEvaluator(4, protocol="new")
    evaluator.update(torch.randn(6, 2, 8), None, range(6), range(6))
    with pytest.raises(ConfigError, match="NEW_METRIC"):
        evaluator.compute()
    evaluator = ReidEvaluator(6)
    evaluator.update(torch.randn(6, 8), None, range(6), range(6))
    with pytest.raises(DataError, match="gallery"):
        evaluator.compute()


def test_from_cfg() -> None:
    cfg = get_cfg_defaults()
    cfg.TEST.NEW_METRIC, cfg.TEST.RE_RANKING, cfg.TEST.RE_RANKING_K1 = True, True, 7
    evaluator = ReidEvaluator.from_cfg(cfg, 10)
    assert (evaluator.protocol, evaluator.reranking, evaluator.feat_norm) == ("new", True, True)
    assert evaluator.rerank_params == {"k1": 7, "k2": cfg.TEST.RE_RANKING_K2,
                                       "lambda_value": cfg.TEST.RE_RANKING_LAMBDA}
    cfg.TEST.FEAT_NORM = "No"  # checked once, by the config validator (the evaluator trusts a loaded config)
    with pytest.raises(ConfigError, match="TEST.FEAT_NORM must be one of"):
        validate_cfg(cfg)


@pytest.mark.parametrize("k1,k2,lambda_value,chunk_size", [(20, 6, 0.3, 1 << 23), (5, 1, 0.5, 700), (7, 3, 0.0, 3000),
                                                           (1, 1, 1.0, 50), (120, 6, 0.3, 9000)])
def test_rerank_equals_the_dense_reference(k1: int, k2: int, lambda_value: float, chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(k1)
    pids = torch.randint(0, 20, (100,), generator=gen)
    x = torch.randn(20, 16, generator=gen)[pids] + 0.8 * torch.randn(100, 16, generator=gen)
    dist = torch.cdist(x, x)
    dist = (dist + dist.T) / 2  # the reference's column normalisation assumes symmetry
    ours = k_reciprocal_rerank(lambda a, b, c: dist[a:b, c:], lambda a, b: dist[a, b], 30, 100, k1, k2, lambda_value,
                               chunk_size)
    np.testing.assert_allclose(ours.numpy(), reference_rerank(dist.numpy(), 30, k1, k2, lambda_value),
                               rtol=0, atol=2e-6)
    assert torch.equal(dist, (dist + dist.T) / 2)  # the callables' tensors are left alone


@pytest.mark.parametrize("block_rows", [7, 64])
def test_rerank_in_many_blocks_equals_the_dense_reference(block_rows: int, monkeypatch) -> None:
    """The upper-triangle pass merges neighbour lists across blocks (rows with fewer block rows than
    neighbours kept included): still the dense result."""
    import evaluation.rerank

    monkeypatch.setattr(evaluation.rerank, "MIN_BLOCK_ROWS", block_rows)
    gen = torch.Generator().manual_seed(block_rows)
    pids = torch.randint(0, 40, (300,), generator=gen)
    x = torch.randn(40, 16, generator=gen)[pids] + 0.8 * torch.randn(300, 16, generator=gen)
    dist = torch.cdist(x, x)
    dist = (dist + dist.T) / 2
    ours = k_reciprocal_rerank(lambda a, b, c: dist[a:b, c:], lambda a, b: dist[a, b], 60, 300, 20, 6, 0.3,
                               chunk_size=1)
    np.testing.assert_allclose(ours.numpy(), reference_rerank(dist.numpy(), 60, 20, 6, 0.3), rtol=0, atol=2e-6)


def test_evaluator_reranking_equals_the_dense_reference() -> None:
    data = _random_set(seed=11)
    results, distmat = _evaluate(data, reranking=True, rerank_params={"k1": 10, "k2": 4}, chunk_size=20_000)
    feats = F.normalize(data["feats"], dim=2)
    ref = reference_rerank(reference_distance(feats, data["vis"], feats, data["vis"]), data["num_query"], 10, 4, 0.3)
    np.testing.assert_allclose(distmat.numpy(), ref, rtol=0, atol=1e-6)
    _assert_same_results(results["all"], _oracle(data, distmat.numpy()))


def test_evaluator_reranking_in_blocks_equals_the_dense_reference(monkeypatch) -> None:
    """The evaluator's block callable (part distance of rows i0:i1 against images j0:N) across 6 blocks."""
    import evaluation.rerank

    monkeypatch.setattr(evaluation.rerank, "MIN_BLOCK_ROWS", 50)
    data = _random_set(seed=12)
    results, distmat = _evaluate(data, reranking=True, chunk_size=20_000)
    feats = F.normalize(data["feats"], dim=2)
    ref = reference_rerank(reference_distance(feats, data["vis"], feats, data["vis"]), data["num_query"])
    np.testing.assert_allclose(distmat.numpy(), ref, rtol=0, atol=1e-6)
    _assert_same_results(results["all"], _oracle(data, distmat.numpy()))


def test_batch_shape_errors() -> None:
    evaluator = ReidEvaluator(2)
    with pytest.raises(ValueError, match="visibility"):
        evaluator.update(torch.randn(4, 3, 8), torch.ones(4, 2), range(4), range(4))
    with pytest.raises(ValueError, match="ids"):
        evaluator.update(torch.randn(4, 3, 8), None, range(3), range(4))
