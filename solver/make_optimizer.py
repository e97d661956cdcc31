"""Optimizer with one parameter group per trainable tensor (reference §6.1)."""
from __future__ import annotations

import torch
from torch import nn
from yacs.config import CfgNode

from utils.errors import ConfigError

__all__ = ["make_param_groups", "make_optimizer"]


def make_param_groups(cfg: CfgNode, model: nn.Module) -> list[dict]:
    """One group per trainable tensor with its lr and weight decay (TransReID's rules).

    * default: lr SOLVER.BASE_LR, weight decay SOLVER.WEIGHT_DECAY (no exemption for norms,
      position embeddings, tokens or queries);
    * names containing 'bias': lr BASE_LR x BIAS_LR_FACTOR, weight decay WEIGHT_DECAY_BIAS;
    * SOLVER.LARGE_FC_LR and names containing 'classifier'/'arcface': lr 2 x BASE_LR;
    * tensors with ``requires_grad`` False (the frozen BNNeck biases) are left out.

    Each group also keeps the parameter's name under ``'name'`` (for logging and tests).
    """
    s = cfg.SOLVER
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, weight_decay = s.BASE_LR, s.WEIGHT_DECAY
        if "bias" in name:
            lr, weight_decay = s.BASE_LR * s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS
        if s.LARGE_FC_LR and ("classifier" in name or "arcface" in name):
            lr = s.BASE_LR * 2
        groups.append({"params": [param], "lr": lr, "weight_decay": weight_decay, "name": name})
    return groups


def make_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """Build ``torch.optim.<SOLVER.OPTIMIZER_NAME>`` over :func:`make_param_groups`.

    SGD gets SOLVER.MOMENTUM (no Nesterov, no dampening); any other ``torch.optim`` class (Adam,
    AdamW, ...) is built with its defaults apart from the per-group lr and weight decay.

    Raises:
        ConfigError: SOLVER.OPTIMIZER_NAME is not a ``torch.optim`` optimizer.
    """
    name = cfg.SOLVER.OPTIMIZER_NAME
    opt_cls = getattr(torch.optim, name, None)
    if not (isinstance(opt_cls, type) and issubclass(opt_cls, torch.optim.Optimizer)):
        raise ConfigError(f"SOLVER.OPTIMIZER_NAME '{name}' is not a torch.optim optimizer; use e.g. SGD, Adam or AdamW")
    groups = make_param_groups(cfg, model)
    if opt_cls is torch.optim.SGD:
        return opt_cls(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
    return opt_cls(groups, lr=cfg.SOLVER.BASE_LR)
