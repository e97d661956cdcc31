"""Unit tests of the TSD losses (loss/) with hand-checkable values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from config import get_cfg_defaults
from loss import (
    PartTripletLoss,
    TripletLoss,
    accuracy,
    diverse_loss,
    euclidean_dist,
    hard_example_mining,
    make_loss,
    mimic_loss,
    parsing_loss,
    part_euclidean_dist,
)

TSD_TERMS = [
    "cls_global", "cls_cat", "cls_cat_m", "cls_aux", "cls_fg",
    "tri_global", "tri_part", "tri_part_m", "tri_aux",
    "visibility_focal", "mimic", "mask_parsing_ce", "div_aux", "div_part_md",
]  # fmt: skip


def tsd_cfg(**model):
    """The reference TSD loss settings (plain CE, soft margin, diversity on), with MODEL overrides."""
    cfg = get_cfg_defaults()
    cfg.MODEL.IF_LABELSMOOTH = "off"
    cfg.MODEL.NO_MARGIN = True
    cfg.MODEL.WITH_DIVERSE_LOSS = True
    cfg.MODEL.WITH_FORE_HEAD = True
    for k, v in model.items():
        cfg.MODEL[k] = v
    return cfg


def fake_outputs(b: int = 8, p: int = 5, c: int = 16, n: int = 12, classes: int = 4, fg: bool = True, seed: int = 0):
    """Random train-mode TSD model outputs (leaf tensors with gradients) and P x K labels."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).requires_grad_()

    heads = ["global", "cat", "cat_m", "aux"] + (["fg"] if fg else [])
    outputs = {
        "cls_score": {h: r(b, classes) for h in heads},
        "feat": {"global": r(b, c), **{k: r(b, p, c) for k in ("part", "part_m", "part_md", "aux")}},
        "visb_logits": r(b, p),
        "visb_targets": (torch.rand(b, p, generator=g) > 0.3).float(),
        "pixel_logits": r(b, n, p + 1),
        "mask_targets": torch.randint(0, p + 1, (b, n), generator=g),
    }
    labels = torch.arange(b) // 4
    return outputs, labels


# ---------------------------------------------------------------------------------------------- triplet
def test_euclidean_dist_formula_and_clamp():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = euclidean_dist(x, x)
    assert torch.allclose(d, torch.tensor([[1e-6, 5.0], [5.0, 1e-6]]))  # diagonal = sqrt(1e-12)


def test_soft_margin_triplet_hand_value():
    # 1-d features; anchors (d_ap, d_an): 0 -> (1, 3), 1 -> (1, 2), 3 -> (2, 2), 5 -> (2, 4)
    feats = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    soft = lambda gap: math.log1p(math.exp(-gap))  # noqa: E731
    expected = (soft(2) + soft(1) + soft(0) + soft(2)) / 4
    assert TripletLoss(None)(feats, labels).item() == pytest.approx(expected, rel=1e-6)
    assert TripletLoss(0.3)(feats, labels).item() == pytest.approx(0.3 / 4, rel=1e-6)


def test_mining_matches_reference_view_under_pk_sampling():
    torch.manual_seed(0)
    dist = torch.rand(12, 12)
    labels = torch.arange(12) // 4
    is_pos = labels[None] == labels[:, None]
    d_ap, d_an = hard_example_mining(dist, labels)
    assert torch.equal(d_ap, dist[is_pos].view(12, -1).max(1).values)
    assert torch.equal(d_an, dist[~is_pos].view(12, -1).min(1).values)


def test_mining_with_unequal_positives_per_anchor():
    torch.manual_seed(1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    dist = torch.rand(10, 10)
    d_ap, d_an = hard_example_mining(dist, labels)
    for i in range(10):
        same = labels == labels[i]
        assert d_ap[i] == dist[i][same].max()
        assert d_an[i] == dist[i][~same].min()
    feats = torch.randn(10, 5, 8, requires_grad=True)
    loss = PartTripletLoss()(feats, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


def test_part_distance_is_mean_of_per_part_distances():
    torch.manual_seed(2)
    x = torch.randn(6, 3, 8)
    expected = torch.stack([torch.cdist(x[:, k], x[:, k]) for k in range(3)]).mean(0)
    torch.testing.assert_close(part_euclidean_dist(x, x), expected, atol=1e-5, rtol=1e-5)


def test_part_triplet_inf_fallback_to_hinge():
    # every anchor: d_ap = 200, d_an = 0.5 -> exp(199.5) overflows float32 -> hinge 200 - 0.5 + 0.3
    feats = torch.tensor([[0.0], [200.0], [0.5], [200.5]]).unsqueeze(1)
    labels = torch.tensor([0, 0, 1, 1])
    assert math.isinf(F.soft_margin_loss(torch.tensor([-199.5]), torch.ones(1)).item())
    assert PartTripletLoss(0.3)(feats, labels).item() == pytest.approx(199.8, rel=1e-6)


# ---------------------------------------------------------------------------------------------- other terms
def test_focal_loss_hand_value_and_torchvision():
    outputs, labels = fake_outputs()
    outputs["visb_logits"] = torch.zeros(8, 5)
    outputs["visb_targets"] = torch.ones(8, 5)
    terms = make_loss(tsd_cfg(), 4)(outputs, labels)
    # p = 0.5: alpha_t 0.25 * ce log 2 * (1 - p_t)^2 0.25
    assert terms["visibility_focal"].item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    outputs, labels = fake_outputs(seed=3)
    expected = sigmoid_focal_loss(outputs["visb_logits"], outputs["visb_targets"], alpha=0.25, gamma=2,
                                  reduction="mean")
    assert torch.equal(make_loss(tsd_cfg(), 4)(outputs, labels)["visibility_focal"], expected)


def test_mimic_zero_for_identical_and_stops_teacher_gradient():
    student = torch.randn(4, 5, 16, requires_grad=True)
    teacher = student.detach().clone().requires_grad_()
    loss = mimic_loss(student, 3 * teacher)  # the cosine ignores the scale
    assert loss.abs().item() < 1e-6
    orthogonal = torch.zeros(1, 2, 2)
    orthogonal[0, 0, 0] = 1.0
    assert mimic_loss(orthogonal, orthogonal.flip(1)).item() == pytest.approx(1.0)
    mimic_loss(student, torch.randn(4, 5, 16) + teacher).backward()
    assert teacher.grad is None and student.grad is not None


def _reference_rows(p: int) -> list[list[tuple[int, int]]]:
    """Rows of the reference's (P-1, P) off-diagonal view: (r, r+1..P-1) then (r+1, 0..r)."""
    return [[(r, c) for c in range(r + 1, p)] + [(r + 1, c) for c in range(r + 1)] for r in range(p - 1)]


def test_diversity_eight_row_weighting_vs_direct_computation():
    torch.manual_seed(4)
    feats = torch.randn(3, 8, 16)
    groups = [0, 1, 1, 2, 3, 3, 4, 4]
    f = F.normalize(feats, dim=-1)
    sim = (f @ f.transpose(1, 2)).relu()
    rows = _reference_rows(8)
    allowed = [[(i, j) for i, j in row if groups[i] != groups[j]] for row in rows]
    assert [len(row) for row in allowed] == [8, 6, 8, 8, 6, 8, 6]
    row_means = torch.stack([torch.stack([sim[:, i, j] for i, j in row]).mean(0) for row in allowed])
    torch.testing.assert_close(diverse_loss(feats, "eight"), row_means.mean())
    pairs = [(i, j) for i in range(8) for j in range(8) if i != j and groups[i] != groups[j]]
    exact = torch.stack([sim[:, i, j] for i, j in pairs]).mean()
    torch.testing.assert_close(diverse_loss(feats, "eight", exact_mean=True), exact)
    assert not torch.allclose(row_means.mean(), exact)


@pytest.mark.parametrize("part_type", ["five", "three", None])
def test_diversity_plain_mean_of_off_diagonal(part_type):
    p = 3 if part_type == "three" else 5
    feats = torch.randn(2, p, 8)
    f = F.normalize(feats, dim=-1)
    sim = (f @ f.transpose(1, 2)).relu()
    off = sim[:, ~torch.eye(p, dtype=torch.bool)]
    torch.testing.assert_close(diverse_loss(feats, part_type), off.mean())
    torch.testing.assert_close(diverse_loss(feats, part_type, exact_mean=True), off.mean())
    ones = torch.ones(2, p, 8)
    assert diverse_loss(ones, part_type).item() == pytest.approx(1.0)


def test_parsing_ce_is_label_smoothed_ce_with_rescaled_epsilon():
    torch.manual_seed(5)
    logits = torch.randn(4, 10, 6)
    targets = torch.randint(0, 6, (4, 10))
    dist = torch.full((4, 10, 6), 0.1 / 5).scatter(-1, targets.unsqueeze(-1), 0.9)  # 0.9 / 0.02 each
    manual = -(dist * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(parsing_loss(logits, targets, 0.1), manual)
    torch_ls = F.cross_entropy(logits.reshape(-1, 6), targets.reshape(-1), label_smoothing=0.1 * 6 / 5)
    torch.testing.assert_close(parsing_loss(logits, targets, 0.1), torch_ls)


# ---------------------------------------------------------------------------------------------- make_loss
def test_full_tsd_terms_sum_and_backward():
    outputs, labels = fake_outputs()
    terms = make_loss(tsd_cfg(), 4)(outputs, labels)
    assert list(terms) == TSD_TERMS
    assert all(v.dim() == 0 and v.dtype == torch.float32 for v in terms.values())
    sum(terms.values()).backward()
    assert all(torch.isfinite(t.grad).all() for t in outputs["cls_score"].values())
    assert outputs["feat"]["part_md"].grad is not None  # through the diversity loss only


def test_id_terms_plain_or_label_smoothed():
    outputs, labels = fake_outputs()
    plain = make_loss(tsd_cfg(), 4)(outputs, labels)
    smooth = make_loss(tsd_cfg(IF_LABELSMOOTH="on"), 4)(outputs, labels)
    for head, logits in outputs["cls_score"].items():
        torch.testing.assert_close(plain[f"cls_{head}"], F.cross_entropy(logits, labels))
        torch.testing.assert_close(smooth[f"cls_{head}"], F.cross_entropy(logits, labels, label_smoothing=0.1))


def test_no_fore_head_no_diversity():
    outputs, labels = fake_outputs(fg=False)
    terms = make_loss(tsd_cfg(WITH_DIVERSE_LOSS=False), 4)(outputs, labels)
    assert list(terms) == [t for t in TSD_TERMS if t not in ("cls_fg", "div_aux", "div_part_md")]


def test_vit_baseline_outputs():
    outputs, labels = fake_outputs()
    vit = {"cls_score": {"global": outputs["cls_score"]["global"]}, "feat": {"global": outputs["feat"]["global"]}}
    terms = make_loss(tsd_cfg(ARCH="vit"), 4)(vit, labels)
    assert list(terms) == ["cls_global", "tri_global"]


def test_global_triplet_margin_when_no_margin_off():
    outputs, labels = fake_outputs()
    cfg = tsd_cfg(NO_MARGIN=False)
    cfg.SOLVER.MARGIN = 0.7
    terms = make_loss(cfg, 4)(outputs, labels)
    torch.testing.assert_close(terms["tri_global"], TripletLoss(0.7)(outputs["feat"]["global"], labels))


def test_weights_scale_their_terms():
    outputs, labels = fake_outputs()
    base = make_loss(tsd_cfg(), 4)(outputs, labels)
    weights = dict(
        ID_LOSS_WEIGHT=2.0, TRIPLET_LOSS_WEIGHT=3.0, VISIBILITY_LOSS_WEIGHT=4.0,
        DISTILL_LOSS_WEIGHT=5.0, MASK_LOSS_WEIGHT=6.0, DIVERSE_LOSS_WEIGHT=7.0,
    )  # fmt: skip
    scaled = make_loss(tsd_cfg(**weights), 4)(outputs, labels)
    factor = {"cls": 2.0, "tri": 3.0, "visibility_focal": 4.0, "mimic": 5.0, "mask_parsing_ce": 6.0, "div": 7.0}
    for name, value in base.items():
        f = factor.get(name, factor.get(name.split("_")[0]))
        torch.testing.assert_close(scaled[name], f * value)


@pytest.mark.parametrize("fp32", [False, True])
def test_bf16_autocast_gives_finite_losses(fp32):
    """Both settings of SOLVER.AMP_LOSSES_FP32 under autocast: finite terms close to the fp32 ones, in
    float32 when the losses run with autocast off."""
    outputs, labels = fake_outputs(c=64)
    cfg = tsd_cfg()
    cfg.SOLVER.AMP_LOSSES_FP32 = fp32
    ref = make_loss(cfg, 4)(outputs, labels)
    low = {
        "cls_score": {k: v.bfloat16() for k, v in outputs["cls_score"].items()},
        "feat": {k: v.bfloat16() for k, v in outputs["feat"].items()},
        **{k: outputs[k].bfloat16() for k in ("visb_logits", "visb_targets", "pixel_logits")},
        "mask_targets": outputs["mask_targets"],
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = make_loss(cfg, 4)(low, labels)
        sum(terms.values()).backward()
    for name, value in terms.items():
        assert torch.isfinite(value) and (value.dtype == torch.float32 or not fp32), name
        torch.testing.assert_close(value.float(), ref[name], rtol=0.05, atol=0.02, msg=name)
    assert torch.isfinite(outputs["feat"]["part"].grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_losses_run_inside_autocast_as_the_reference_unless_amp_losses_fp32(dtype):
    """Default: the terms are computed under the caller's autocast, as the reference computes every loss
    (its triplet distance product lands in low precision); SOLVER.AMP_LOSSES_FP32 True: float32 with
    autocast off, bitwise the terms of a float32 run. Near pairs show the difference."""
    outputs, labels = fake_outputs(c=256)
    with torch.no_grad():  # near pairs: every feature close to one large vector (the precision-sensitive case)
        base = torch.randn(256) * 8
        outputs["feat"]["global"].copy_(base + 0.05 * outputs["feat"]["global"])
    fp32_cfg = tsd_cfg()
    fp32_cfg.SOLVER.AMP_LOSSES_FP32 = True
    plain = make_loss(fp32_cfg, 4)(outputs, labels)
    with torch.autocast("cpu", dtype=dtype):
        reference_like = make_loss(tsd_cfg(), 4)(outputs, labels)
        in_fp32 = make_loss(fp32_cfg, 4)(outputs, labels)
        by_hand = TripletLoss(None)(outputs["feat"]["global"], labels)  # the loss code under autocast
    assert all(torch.equal(in_fp32[k], plain[k]) for k in plain)
    assert torch.equal(reference_like["tri_global"], by_hand)
    assert not torch.equal(reference_like["tri_global"], plain["tri_global"])


def test_accuracy_of_global_head():
    scores = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0], [0.0, 5.0]])
    outputs = {"cls_score": {"global": scores, "cat": -scores}}
    assert accuracy(outputs, torch.tensor([0, 1, 1, 1])).item() == pytest.approx(0.75)


def test_part_triplet_gradients_stay_finite_for_fp16_features_under_autocast():
    """fp16 part features (the decoder's linear outputs under fp16 autocast) give finite gradients: the
    squared norms are float32, as CUDA's autocast computes pow / sum, so the 1e-12 clamp does not round
    to 0 and sqrt's backward does not turn the unselected pairs' zero gradients into 0 / 0 = NaN."""
    torch.manual_seed(0)
    feats = torch.randn(8, 5, 16).half().requires_grad_()
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    with torch.autocast("cpu", dtype=torch.float16):
        loss = PartTripletLoss()(feats, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
