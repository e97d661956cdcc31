"""Parity of the retrieval evaluator with the reference's ``w_R1_mAP_eval`` / ``w_R1_mAP_eval_new``.

Every ``metrics_*.pt`` fixture (../shared/parity/README.md) is fed in uneven batches and evaluated with
a small and with the default block size; tolerances are the README's (distmat / mAP 1e-6, CMC exact).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation import DEFAULT_CHUNK_SIZE, ReidEvaluator
from tests.parity import load_fixture, parity_files

NEW_KEYS = {"ALL": "all", "NPO": "npo", "NTP": "ntp"}


def _evaluate(fx: dict, protocol: str, chunk_size: int):
    """Run the evaluator on a fixture's inputs, in batches of uneven sizes."""
    inp = fx["inputs"]
    evaluator = ReidEvaluator(
        inp["num_query"],
        max_rank=fx["max_rank"],
        feat_norm=bool(fx["feat_norm"]),  # the reference tests the 'yes'/'no' string for truthiness (§9.3)
        protocol=protocol,
        chunk_size=chunk_size,
    )
    num = len(inp["pids"])
    cuts = sorted({0, num, *torch.randint(1, num, (6,), generator=torch.Generator().manual_seed(num)).tolist()})
    for a, b in zip(cuts[:-1], cuts[1:]):
        evaluator.update(inp["feats"][a:b], inp["vis"][a:b], inp["pids"][a:b], inp["camids"][a:b],
                         inp["occ_labels"][a:b])
    return evaluator.compute(return_distmat=True)


def _check(result: dict, expected: dict) -> None:
    """Compare one protocol's result with the fixture's."""
    assert result["num_valid"] == expected["num_valid"]
    np.testing.assert_array_equal(result["cmc"], expected["cmc"].numpy())
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    per_query, ref = result["per_query"], expected["per_query"]
    np.testing.assert_array_equal(per_query["valid"], ref["valid"].numpy())
    np.testing.assert_allclose(per_query["ap"], ref["ap"].numpy(), rtol=0, atol=1e-12)  # NaN where skipped
    np.testing.assert_array_equal(per_query["cmc"], ref["cmc"].numpy())


def _expected(fx: dict, protocol: str) -> dict[str, dict]:
    """The fixture's results by our split names: the standard protocol's one, or the new benchmark's three."""
    if protocol == "standard":
        return {"all": fx["expected"]}
    return {key: fx["expected"]["new"][ref_key] for ref_key, key in NEW_KEYS.items()}


@pytest.mark.parametrize("chunk_size", [997, DEFAULT_CHUNK_SIZE])
@pytest.mark.parametrize("protocol", ["standard", "new"])
@pytest.mark.parametrize("path", parity_files("metrics_*.pt"))
def test_protocol(path: str, protocol: str, chunk_size: int) -> None:
    fx = load_fixture(path)
    results, distmat = _evaluate(fx, protocol, chunk_size)
    torch.testing.assert_close(distmat, fx["expected"]["distmat"], rtol=0, atol=1e-6)
    expected = _expected(fx, protocol)
    assert set(results) == set(expected)
    for key, ref in expected.items():
        _check(results[key], ref)
