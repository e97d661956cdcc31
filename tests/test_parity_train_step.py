"""Parity of one full training step with the reference (train_step_*.pt): model outputs, every loss
term, gradients, BatchNorm statistics and one SGD update through our optimizer and scheduler."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from config import load_cfg
from loss import make_loss
from model import make_model
from solver import create_scheduler, groups_by_param_name, make_optimizer
from tests.parity import REPO, cfg_from_parity, fixture_masks, fixture_state_dict, load_fixture, parity_files

# The official TSD run's solver; the fixtures' epoch-1 learning rates come from it.
OFFICIAL_CONFIG = os.path.join(REPO, "configs", "OCC_Duke", "vit_base.yml")
# Loss terms the reference derives from others (not returned by our loss closure).
DERIVED_TERMS = ("div_total", "total")


def solver_cfg(cfg, sgd: dict):
    """``cfg`` with the official TSD solver and the fixture's momentum / weight decays."""
    cfg.SOLVER = load_cfg(OFFICIAL_CONFIG, freeze=False).SOLVER
    cfg.SOLVER.MOMENTUM = sgd["momentum"]
    cfg.SOLVER.WEIGHT_DECAY = sgd["weight_decay"]
    cfg.SOLVER.WEIGHT_DECAY_BIAS = sgd["weight_decay_bias"]
    return cfg


@pytest.fixture(scope="module", params=parity_files("train_step_*.pt"))
def step(request) -> SimpleNamespace:
    """Run the case once: forward, losses, backward, one SGD step; keep what the tests compare."""
    fx = load_fixture(request.param)
    c = fx["config"]
    cfg = cfg_from_parity(c)
    model = make_model(cfg, c["num_classes"], c["camera_num"], c["view_num"])
    model.load_state_dict(fixture_state_dict(fx))
    model.train()
    labels = fx["labels"]
    outputs = model(
        fx["images"].float(), labels, fixture_masks(fx),
        cam_label=fx["cam_label"], view_label=fx["view_label"], teacher_noise=fx["U"],
    )  # fmt: skip
    terms = make_loss(cfg, c["num_classes"])(outputs, labels)
    sum(terms.values()).backward()
    params = dict(model.named_parameters())
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    optimizer = make_optimizer(solver_cfg(cfg, fx["sgd"]), model)
    scheduler = create_scheduler(cfg, optimizer)
    scheduler.step(1)
    optimizer.step()
    return SimpleNamespace(
        fx=fx, outputs=outputs, terms=terms, params=params, grads=grads, buffers=buffers,
        groups=optimizer.param_groups,
    )  # fmt: skip


def test_outputs(step):
    fx, out = step.fx["outputs"], step.outputs
    assert set(out["cls_score"]) == set(fx["cls_score"])
    assert set(out["feat"]) == set(fx["feat_dict"])
    for k, ref in fx["cls_score"].items():
        torch.testing.assert_close(out["cls_score"][k], ref, rtol=1e-4, atol=1e-4, msg=f"cls_score.{k}")
    for k, ref in fx["feat_dict"].items():
        torch.testing.assert_close(out["feat"][k], ref, rtol=1e-4, atol=1e-4, msg=f"feat.{k}")
    for k in ("visb_logits", "pixel_logits"):
        torch.testing.assert_close(out[k], fx[k], rtol=1e-4, atol=1e-4, msg=k)
    for k in ("visb_targets", "mask_targets"):
        assert torch.equal(out[k], fx[k]), k
    probs = out["pixel_logits"].detach().softmax(-1)
    torch.testing.assert_close(probs, step.fx["pixel_probs"], rtol=0, atol=1e-5)
    # the teacher mask the model derives from U and these probabilities
    assert torch.equal((step.fx["U"] < probs).float().permute(0, 2, 1), step.fx["teacher_attn_mask"])


def assert_terms_match(terms: dict, ref: dict) -> None:
    """Our named terms (and their derived ``div_total`` / ``total``) vs the reference ``losses``."""
    assert list(terms) == [k for k in ref if k not in DERIVED_TERMS]
    ours = {k: v.detach() for k, v in terms.items()}
    ours["total"] = sum(terms.values()).detach()  # what the trainer back-propagates
    if "div_total" in ref:
        ours["div_total"] = ours["div_aux"] + ours["div_part_md"]
    for k, v in ref.items():
        torch.testing.assert_close(ours[k], v, rtol=5e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("path", parity_files("train_step_*.pt"))
def test_loss_terms_on_reference_outputs(path):
    """The loss closure alone, fed the reference model's own outputs."""
    fx = load_fixture(path)
    ref = fx["outputs"]
    outputs = {"cls_score": ref["cls_score"], "feat": ref["feat_dict"]}
    outputs.update({k: ref[k] for k in ("visb_logits", "visb_targets", "pixel_logits", "mask_targets")})
    cfg = cfg_from_parity(fx["config"])
    assert_terms_match(make_loss(cfg, fx["config"]["num_classes"])(outputs, fx["labels"]), fx["losses"])


def test_loss_terms(step):
    assert_terms_match(step.terms, step.fx["losses"])


def test_gradients(step):
    for name, ref in step.fx["grads"].items():
        g = step.grads[name]
        assert g is not None, f"{name} got no gradient"
        rel = ((g - ref).norm() / ref.norm()).item()
        worst = (g - ref).abs().max().item()
        assert rel <= 5e-4, f"{name}: norm-relative error {rel:.2e}"
        assert worst <= 1e-3 * ref.abs().max().item(), f"{name}: max error {worst:.2e}"


def test_params_without_gradient_and_frozen(step):
    frozen = {n for n, p in step.params.items() if not p.requires_grad}
    assert frozen == set(step.fx["frozen_params"])
    no_grad = {n for n, g in step.grads.items() if g is None and n not in frozen}
    assert no_grad == set(step.fx["grad_none"])


def test_bn_buffers_after_step(step):
    for name, ref in step.fx["bn_buffers_after"].items():
        if name.endswith("num_batches_tracked"):
            assert torch.equal(step.buffers[name], ref), name
        else:
            torch.testing.assert_close(step.buffers[name], ref, rtol=0, atol=1e-6, msg=name)


def test_sgd_step(step):
    sgd = step.fx["sgd"]
    groups = groups_by_param_name(step.groups)
    assert sorted(groups) == sorted(n for n, p in step.params.items() if p.requires_grad)
    for name, g in groups.items():  # each parameter's lr and weight decay (in groups of equal values)
        is_bias = "bias" in name
        assert g["lr"] == pytest.approx(sgd["lr_bias_epoch1"] if is_bias else sgd["lr_weight_epoch1"], abs=1e-12), name
        assert g["weight_decay"] == (sgd["weight_decay_bias"] if is_bias else sgd["weight_decay"]), name
        assert (g["momentum"], g["nesterov"], g["dampening"]) == (sgd["momentum"], sgd["nesterov"], sgd["dampening"])
    for name, ref in step.fx["params_after_sgd_step"].items():
        torch.testing.assert_close(step.params[name].detach(), ref, rtol=0, atol=1e-6, msg=name)
