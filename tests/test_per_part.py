"""TEST.PER_PART: Rank-1 / mAP of every token alone, checked against the reference evaluation of an
explicitly built single-token distance, for both protocols; table and JSON output; config wiring."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from config import get_cfg_defaults
from evaluation import ReidEvaluator
from processor.inference import format_results, results_to_json
from tests.oracles import reference_eval
from tests.test_metrics import NEW, _evaluate, _random_set

NAMES = ["global", "head", "arm", "torso", "leg", "feet"]


def _single_token_oracle(data: dict, p: int, ignored_labels: tuple | None) -> dict:
    """Token ``p`` alone, by the definition: Euclidean distance of the normalised token, +inf for
    gallery images that do not see it, queries that do not see it left out."""
    nq = data["num_query"]
    feats = F.normalize(data["feats"][:, p], dim=1)
    dist = torch.cdist(feats[:nq], feats[nq:]).double().numpy()
    seen = data["vis"][:, p].numpy() > 0
    dist[:, ~seen[nq:]] = np.inf
    keep = seen[:nq]
    pids, camids, labels = data["pids"].numpy(), data["camids"].numpy(), data["labels"].numpy()
    return reference_eval(dist[keep], pids[:nq][keep], pids[nq:], camids[:nq][keep], camids[nq:], 50,
                          g_labels=None if ignored_labels is None else labels[nq:],
                          ignored_labels=ignored_labels or (), sort_kind="stable")


@pytest.mark.parametrize("protocol", ["standard", "new"])
def test_each_token_alone_equals_its_definition(protocol: str) -> None:
    data = _random_set(seed=5)
    data["vis"][: data["num_query"], 3] = 0  # no query sees token 3: reported with 0 valid queries
    results, _ = _evaluate(data, protocol=protocol, token_names=NAMES)
    plain, _ = _evaluate(data, protocol=protocol)
    splits = {"all": None} if protocol == "standard" else NEW
    assert results.keys() == splits.keys()
    for split, ignored in splits.items():
        per_token = results[split].pop("per_token")
        assert list(per_token) == NAMES
        np.testing.assert_array_equal(results[split]["cmc"], plain[split]["cmc"])  # the main result is unchanged
        for p, name in enumerate(NAMES):
            ours = per_token[name]
            if name == "torso":
                assert ours["num_valid"] == 0 and np.isnan(ours["mAP"]) and len(ours["cmc"]) == 50
                continue
            ref = _single_token_oracle(data, p, ignored)
            assert ours["num_valid"] == ref["num_valid"], name
            # cdist's distances differ from the evaluator's formula by rounding only: same ranking here
            np.testing.assert_allclose(ours["cmc"], ref["cmc"], atol=1e-6)
            assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)
            assert ours["mINP"] == pytest.approx(ref["mINP"], abs=1e-6)


def test_table_and_json_list_every_token() -> None:
    data = _random_set(seed=2)
    results, _ = _evaluate(data, protocol="new", token_names=NAMES)
    table = format_results(results, "title")
    lines = table.splitlines()
    for split in ("ALL", "NPO", "NTP"):
        i = next(k for k, line in enumerate(lines) if line.startswith(split))
        assert [line.split()[0] for line in lines[i + 1 : i + 7]] == NAMES
    js = results_to_json(results)
    for split in ("ALL", "NPO", "NTP"):
        part = js[split]["per_part"]
        assert list(part) == NAMES
        assert part["global"]["mAP"] == pytest.approx(results[split.lower()]["per_token"]["global"]["mAP"])
        assert set(part["leg"]) == {"rank1", "rank5", "rank10", "mAP", "mINP", "num_valid"}
    assert "per_part" not in results_to_json(_evaluate(data)[0])["ALL"]


def test_table_columns_stay_aligned_for_long_part_names() -> None:
    """The eight-part names ('right_feet') and the three-part ones ('upper_body') are longer than the
    label column of the split names: the numbers still stand under their headings."""
    data = _random_set(seed=2)
    names = ["global", "head", "upper_body", "right_feet", "arm", "leg"]
    lines = format_results(_evaluate(data, protocol="new", token_names=names)[0]).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert {line.index("queries") + len("queries") for line in lines[:1]} == {len(lines[1])}


def test_from_cfg_names_the_tokens_of_the_model() -> None:
    """ReidEvaluator.from_cfg names the per-token rows after the model's tokens (config.parts.token_names):
    global, then the parts of the grouping; the ViT baseline has the global one only."""
    cfg = get_cfg_defaults()
    assert ReidEvaluator.from_cfg(cfg, 5).token_names is None
    cfg.TEST.PER_PART = True
    assert ReidEvaluator.from_cfg(cfg, 5).token_names == NAMES
    cfg.INPUT.MASK_PREPROCESS = "three"
    assert ReidEvaluator.from_cfg(cfg, 5).token_names == ["global", "head", "upper_body", "lower_body"]
    cfg.MODEL.ARCH = "vit"
    assert ReidEvaluator.from_cfg(cfg, 5).token_names == ["global"]


def test_a_global_only_model_reports_its_one_token() -> None:
    """MODEL.ARCH vit: one token; the part names of the grouping do not apply."""
    data = _random_set(seed=3)
    data["feats"], data["vis"] = data["feats"][:, :1], data["vis"][:, :1]
    results, _ = _evaluate(data, token_names=NAMES)
    assert list(results["all"]["per_token"]) == ["global"]
    assert results["all"]["per_token"]["global"]["mAP"] == pytest.approx(results["all"]["mAP"], abs=1e-6)
