"""Optimizer (one param group per tensor) and the per-epoch warmup + cosine LR schedule."""
from .make_optimizer import make_optimizer, make_param_groups
from .scheduler import create_scheduler

__all__ = ["make_optimizer", "make_param_groups", "create_scheduler"]
