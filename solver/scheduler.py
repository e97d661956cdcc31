"""Per-epoch cosine learning-rate schedule with linear warmup (reference §6.2)."""
from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler
from yacs.config import CfgNode

__all__ = ["create_scheduler"]


def create_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> CosineLRScheduler:
    """timm's cosine schedule configured as the reference (call ``step(epoch)`` at each epoch start).

    * warmup ``t < SOLVER.WARMUP_EPOCHS``: ``lr_g(t) = w + t (base_g - w) / WARMUP_EPOCHS`` with the
      scalar ``w = WARMUP_FACTOR x BASE_LR`` for every group (bias groups too, bug §9.14);
    * then ``lr_g(t) = m + (base_g - m)(1 + cos(pi t / MAX_EPOCHS)) / 2`` with the raw epoch t
      (no warmup offset) and the scalar ``m = MIN_LR_FACTOR x BASE_LR``; ``m`` from MAX_EPOCHS on.

    Every group is set to ``w`` at construction. ``base_g`` is each group's lr when this is called.
    The scheduler's ``state_dict()``/``load_state_dict()`` restore it exactly on resume.
    ``SOLVER.MAX_EPOCHS`` >= 1 and ``SOLVER.WARMUP_EPOCHS`` >= 0 (checked by the config validator).
    """
    s = cfg.SOLVER
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
