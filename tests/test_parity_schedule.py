"""Parity of the optimizer groups and the per-epoch LR schedule with the reference (schedule*.json)."""
from __future__ import annotations

import json

import pytest

from model import make_model
from solver import create_scheduler, groups_by_param_name, make_optimizer
from tests.parity import cfg_from_parity, parity_files


def cfg_with_solver(fixture: dict):
    """Our cfg for the fixture's model ``config`` with its ``solver`` settings."""
    cfg = cfg_from_parity(fixture["config"])
    sol, s = fixture["solver"], cfg.SOLVER
    s.OPTIMIZER_NAME = sol["optimizer"]
    s.BASE_LR = sol["base_lr"]
    s.BIAS_LR_FACTOR = sol["bias_lr_factor"]
    s.WEIGHT_DECAY = sol["weight_decay"]
    s.WEIGHT_DECAY_BIAS = sol["weight_decay_bias"]
    s.MOMENTUM = sol["momentum"]
    s.WARMUP_EPOCHS = sol["warmup_epochs"]
    s.MAX_EPOCHS = sol["max_epochs"]
    s.LARGE_FC_LR = sol["large_fc_lr"]
    s.WARMUP_FACTOR = sol["warmup_lr_init"] / sol["base_lr"]
    s.MIN_LR_FACTOR = sol["lr_min"] / sol["base_lr"]
    return cfg


@pytest.mark.parametrize("path", parity_files("schedule*.json"))
@pytest.mark.parametrize("per_tensor", [False, True], ids=["merged-groups", "reference-layout"])
def test_schedule_matches_reference(path, per_tensor):
    """Every parameter's lr and weight decay at construction and after each epoch's ``scheduler.step``
    equal the reference's (its weight / bias rows by name), in our groups of equal (lr, weight decay) and
    in the reference's one-group-per-tensor layout (whose group count the fixture records)."""
    with open(path) as f:
        fx = json.load(f)
    c, sol = fx["config"], fx["solver"]
    cfg = cfg_with_solver(fx)
    model = make_model(cfg, c["num_classes"], c["camera_num"], c["view_num"])
    optimizer = make_optimizer(cfg, model, per_tensor=per_tensor)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if per_tensor:
        assert len(optimizer.param_groups) == fx["param_groups"]["count"]
    else:
        assert len(optimizer.param_groups) < fx["param_groups"]["count"]
    groups = groups_by_param_name(optimizer.param_groups)
    assert sorted(groups) == sorted(trainable)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    assert fx["param_groups"]["weight_group_param"] in groups and fx["param_groups"]["bias_group_param"] in groups
    # the reference's rules: 'bias' in the name -> the bias row (no LARGE_FC_LR in the fixture)
    assert not sol["large_fc_lr"]
    kind = {n: "bias" if "bias" in n else "weight" for n in trainable}
    decay = {"weight": sol["weight_decay"], "bias": sol["weight_decay_bias"]}

    def check(row, what):
        for n, g in groups.items():
            assert g["lr"] == pytest.approx(row[kind[n]], abs=1e-12), (n, what)
            assert g["weight_decay"] == decay[kind[n]], (n, what)

    scheduler = create_scheduler(cfg, optimizer)
    check(fx["lr_after_construction"], "after construction")
    for row in fx["epochs"]:
        scheduler.step(row["epoch"])
        check(row, row["epoch"])
