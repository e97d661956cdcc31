"""Parity of the optimizer groups and the per-epoch LR schedule with the reference (schedule*.json)."""
from __future__ import annotations

import json

import pytest

from model import make_model
from solver import create_scheduler, make_optimizer
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
def test_schedule_matches_reference(path):
    with open(path) as f:
        fx = json.load(f)
    c = fx["config"]
    cfg = cfg_with_solver(fx)
    model = make_model(cfg, c["num_classes"], c["camera_num"], c["view_num"])
    optimizer = make_optimizer(cfg, model)
    assert len(optimizer.param_groups) == fx["param_groups"]["count"]
    groups = {g["name"]: g for g in optimizer.param_groups}
    weight = groups[fx["param_groups"]["weight_group_param"]]
    bias = groups[fx["param_groups"]["bias_group_param"]]

    scheduler = create_scheduler(cfg, optimizer)
    after = fx["lr_after_construction"]
    assert weight["lr"] == pytest.approx(after["weight"], abs=1e-12)
    assert bias["lr"] == pytest.approx(after["bias"], abs=1e-12)
    assert all(g["lr"] == pytest.approx(after["weight"], abs=1e-12) for g in optimizer.param_groups)
    for row in fx["epochs"]:
        scheduler.step(row["epoch"])
        assert weight["lr"] == pytest.approx(row["weight"], abs=1e-12), row
        assert bias["lr"] == pytest.approx(row["bias"], abs=1e-12), row
        if not fx["solver"]["large_fc_lr"]:  # then every group is a weight or a bias group
            for name, g in groups.items():
                assert g["lr"] == (bias if "bias" in name else weight)["lr"], (name, row)
