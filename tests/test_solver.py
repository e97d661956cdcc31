"""Unit tests of the optimizer parameter groups and the warmup + cosine LR schedule (solver/)."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from config import get_cfg_defaults, validate_cfg
from solver import create_scheduler, groups_by_param_name, make_optimizer
from utils.errors import ConfigError


class Toy(nn.Module):
    """Names as in TSD: a backbone, a BNNeck with frozen bias and bias-free classifiers."""

    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(4, 4)
        self.bottleneck = nn.BatchNorm1d(4)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(4, 3, bias=False)
        self.visb_pred = nn.ModuleDict({"classifier": nn.Linear(4, 1)})


def solver_cfg(**solver):
    """The reference TSD solver (SGD, lr 0.004, bias x2, wd 1e-4, 5 warmup / 120 epochs)."""
    cfg = get_cfg_defaults()
    s = cfg.SOLVER
    s.OPTIMIZER_NAME, s.BASE_LR, s.BIAS_LR_FACTOR, s.MAX_EPOCHS = "SGD", 0.004, 2, 120
    s.WEIGHT_DECAY, s.WEIGHT_DECAY_BIAS = 1e-4, 2e-4
    for k, v in solver.items():
        s[k] = v
    return cfg


def groups_by_name(opt: torch.optim.Optimizer) -> dict:
    """Parameter name -> its param group."""
    return groups_by_param_name(opt.param_groups)


@pytest.mark.parametrize("per_tensor", [False, True], ids=["merged", "reference-layout"])
def test_each_trainable_tensor_gets_the_bias_rules_in_groups_of_equal_lr_and_decay(per_tensor):
    model = Toy()
    opt = make_optimizer(solver_cfg(), model, per_tensor=per_tensor)
    groups = groups_by_name(opt)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(groups) == sorted(trainable) and "bottleneck.bias" not in groups
    for name, g in groups.items():
        index = g["names"].index(name) if "names" in g else 0
        assert g["params"][index] is model.get_parameter(name)
        is_bias = "bias" in name
        assert g["lr"] == (0.008 if is_bias else 0.004)
        assert g["weight_decay"] == (2e-4 if is_bias else 1e-4)
        assert g["momentum"] == 0.9 and g["nesterov"] is False and g["dampening"] == 0
    # weights and biases: two groups (a few fused kernel launches per step, not one per tensor)
    assert len(opt.param_groups) == (len(trainable) if per_tensor else 2)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)


def test_large_fc_lr_doubles_classifier_lr():
    groups = groups_by_name(make_optimizer(solver_cfg(LARGE_FC_LR=True), Toy()))
    assert groups["classifier.weight"]["lr"] == 0.008
    assert groups["visb_pred.classifier.weight"]["lr"] == 0.008
    assert groups["visb_pred.classifier.bias"]["lr"] == 0.008  # 2 x BASE_LR replaces the bias factor
    assert groups["base.weight"]["lr"] == 0.004
    # (lr, weight decay): (0.004, 1e-4), (0.008, 2e-4) for biases, (0.008, 1e-4) for classifier weights
    assert [g["names"] for g in make_optimizer(solver_cfg(LARGE_FC_LR=True), Toy()).param_groups] == [
        ["base.weight", "bottleneck.weight"], ["base.bias", "visb_pred.classifier.bias"],
        ["classifier.weight", "visb_pred.classifier.weight"]]


def test_adamw_and_unknown_optimizer():
    opt = make_optimizer(solver_cfg(OPTIMIZER_NAME="AdamW"), Toy())
    assert isinstance(opt, torch.optim.AdamW)
    assert groups_by_name(opt)["base.bias"]["weight_decay"] == 2e-4
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER_NAME"):
        make_optimizer(solver_cfg(OPTIMIZER_NAME="Sgd"), Toy())


def test_sgd_first_step_is_plain_weight_decayed_gradient_step():
    model = Toy()
    opt = make_optimizer(solver_cfg(), model)
    before = model.base.weight.detach().clone()
    model.classifier(model.base(torch.randn(2, 4))).sum().backward()
    grad = model.base.weight.grad.clone()
    opt.step()
    torch.testing.assert_close(model.base.weight.detach(), before - 0.004 * (grad + 1e-4 * before))


def reference_lr(t: int, base: float) -> float:
    """§6.2 written out: warmup from 0.01 x 0.004, cosine on the raw epoch down to 0.002 x 0.004."""
    w, m = 0.01 * 0.004, 0.002 * 0.004
    if t < 5:
        return w + t * (base - w) / 5
    if t >= 120:
        return m
    return m + 0.5 * (base - m) * (1 + math.cos(math.pi * t / 120))


def test_schedule_warmup_and_cosine_values():
    opt = make_optimizer(solver_cfg(), Toy())
    sched = create_scheduler(solver_cfg(), opt)
    assert all(g["lr"] == pytest.approx(4e-5, abs=1e-15) for g in opt.param_groups)
    groups = groups_by_name(opt)
    for t in (1, 2, 4, 5, 30, 60, 90, 119, 120, 130):
        sched.step(t)
        assert groups["base.weight"]["lr"] == pytest.approx(reference_lr(t, 0.004), abs=1e-15)
        assert groups["base.bias"]["lr"] == pytest.approx(reference_lr(t, 0.008), abs=1e-15)
    sched.step(60)
    assert groups["base.weight"]["lr"] == pytest.approx(2.004e-3, abs=1e-15)


def test_scheduler_state_dict_round_trip():
    cfg = solver_cfg()
    opt = make_optimizer(cfg, Toy())
    sched = create_scheduler(cfg, opt)
    for t in range(1, 8):
        sched.step(t)
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    # resume as a checkpointer does: build both fresh (here from another BASE_LR), then load both
    opt2 = make_optimizer(solver_cfg(BASE_LR=0.1), Toy())
    sched2 = create_scheduler(solver_cfg(BASE_LR=0.1), opt2)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    for t in range(8, 122, 7):
        sched.step(t)
        sched2.step(t)
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_scheduler_config_errors():
    """Checked once, by the config validator (the scheduler trusts a loaded config)."""
    with pytest.raises(ConfigError, match="SOLVER.MAX_EPOCHS must be >= 1, got 0"):
        validate_cfg(solver_cfg(MAX_EPOCHS=0))
    with pytest.raises(ConfigError, match="SOLVER.WARMUP_EPOCHS must be >= 0, got -1"):
        validate_cfg(solver_cfg(WARMUP_EPOCHS=-1))
