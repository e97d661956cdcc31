"""Optimizer (parameter groups of equal lr and weight decay) and the per-epoch warmup + cosine LR schedule."""
from .make_optimizer import (
    groups_by_param_name,
    init_momentum_buffers,
    make_optimizer,
    make_param_groups,
    regroup_state,
)
from .scheduler import create_scheduler

__all__ = ["make_optimizer", "make_param_groups", "groups_by_param_name", "init_momentum_buffers", "regroup_state",
           "create_scheduler"]
