"""Optimizer with one parameter group per trainable tensor (reference §6.1)."""
from __future__ import annotations

import inspect

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
    AdamW, ...) is built with its defaults apart from the per-group lr and weight decay. The update
    runs fused (or multi-tensor) where torch has such an implementation for the model's device.

    Raises:
        ConfigError: SOLVER.OPTIMIZER_NAME is not a ``torch.optim`` optimizer.
    """
    name = cfg.SOLVER.OPTIMIZER_NAME
    opt_cls = getattr(torch.optim, name, None)
    if not (isinstance(opt_cls, type) and issubclass(opt_cls, torch.optim.Optimizer)):
        raise ConfigError(f"SOLVER.OPTIMIZER_NAME '{name}' is not a torch.optim optimizer; use e.g. SGD, Adam or AdamW")
    groups = make_param_groups(cfg, model)
    kwargs = {"momentum": cfg.SOLVER.MOMENTUM} if opt_cls is torch.optim.SGD else {}
    return opt_cls(groups, lr=cfg.SOLVER.BASE_LR, **kwargs, **_fast_update(opt_cls, groups))


def _fast_update(opt_cls: type, groups: list[dict]) -> dict:
    """``{'fused': True}`` where ``opt_cls`` has a fused kernel for the parameters' device and dtypes,
    else ``{'foreach': True}`` where it has a multi-tensor one, else nothing (the per-tensor loop).

    Same update rule, fewer kernels: torch's own defaults pick foreach on CUDA only and never fused.
    """
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    params = [p for g in groups for p in g["params"]]
    accepted = inspect.signature(opt_cls.__init__).parameters
    if not params:
        return {}
    devices = {p.device.type for p in params}
    if ("fused" in accepted and devices <= set(_get_fused_kernels_supported_devices())
            and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in params)):
        return {"fused": True}
    if "foreach" in accepted:
        return {"foreach": True}
    return {}
