"""Per-epoch cosine learning-rate schedule with linear warmup (reference §6.2)."""
from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from yacs.config import CfgNode

from utils.errors import ConfigError

__all__ = ["create_scheduler"]


def create_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> CosineLRScheduler:
    """timm's cosine schedule configured as the reference (call ``step(epoch)`` at each epoch start).

    * warmup ``t < SOLVER.WARMUP_EPOCHS``: ``lr_g(t) = w + t (base_g - w) / WARMUP_EPOCHS`` with the
      scalar ``w = WARMUP_FACTOR x BASE_LR`` for every group (bias groups too, bug §9.14);
    * then ``lr_g(t) = m + (base_g - m)(1 + cos(pi t / MAX_EPOCHS)) / 2`` with the raw epoch t
      (no warmup offset) and the scalar ``m = MIN_LR_FACTOR x BASE_LR``; ``m`` from MAX_EPOCHS on.

    Every group is set to ``w`` at construction. ``base_g`` is each group's lr when this is called.
    The scheduler's ``state_dict()``/``load_state_dict()`` restore it exactly on resume.

    Raises:
        ConfigError: SOLVER.MAX_EPOCHS < 1 or SOLVER.WARMUP_EPOCHS < 0.
    """
    s = cfg.SOLVER
    if s.MAX_EPOCHS < 1:
        raise ConfigError(f"SOLVER.MAX_EPOCHS must be >= 1, got {s.MAX_EPOCHS}")
    if s.WARMUP_EPOCHS < 0:
        raise ConfigError(f"SOLVER.WARMUP_EPOCHS must be >= 0, got {s.WARMUP_EPOCHS}")
    return CosineLRScheduler(
        optimizer,
        t_initial=s.MAX_EPOCHS,
        lr_min=s.MIN_LR_FACTOR * s.BASE_LR,
        warmup_t=s.WARMUP_EPOCHS,
        warmup_lr_init=s.WARMUP_FACTOR * s.BASE_LR,
        warmup_prefix=False,
        cycle_limit=1,
        t_in_epochs=True,
    )
