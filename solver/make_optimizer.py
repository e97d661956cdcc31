"""Optimizer over parameter groups of equal (lr, weight decay) with the reference's per-parameter rules (§6.1)."""
from __future__ import annotations

import inspect

import torch
from torch import nn
from yacs.config import CfgNode

from utils.errors import CheckpointError, ConfigError

__all__ = ["make_param_groups", "make_optimizer", "groups_by_param_name", "init_momentum_buffers", "regroup_state"]


def _param_rules(cfg: CfgNode, model: nn.Module) -> list[tuple[str, nn.Parameter, float, float]]:
    """``(name, parameter, lr, weight decay)`` of every trainable tensor (TransReID's rules).

    * default: lr SOLVER.BASE_LR, weight decay SOLVER.WEIGHT_DECAY (no exemption for norms,
      position embeddings, tokens or queries);
    * names containing 'bias': lr BASE_LR x BIAS_LR_FACTOR, weight decay WEIGHT_DECAY_BIAS;
    * SOLVER.LARGE_FC_LR and names containing 'classifier'/'arcface': lr 2 x BASE_LR;
    * tensors with ``requires_grad`` False (the frozen BNNeck biases) are left out.
    """
    s = cfg.SOLVER
    rules = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr, weight_decay = s.BASE_LR, s.WEIGHT_DECAY
        if "bias" in name:
            lr, weight_decay = s.BASE_LR * s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS
        if s.LARGE_FC_LR and ("classifier" in name or "arcface" in name):
            lr = s.BASE_LR * 2
        rules.append((name, param, lr, weight_decay))
    return rules


def make_param_groups(cfg: CfgNode, model: nn.Module, per_tensor: bool = False) -> list[dict]:
    """Parameter groups with each trainable tensor's lr and weight decay (:func:`_param_rules`).

    Tensors with the same (lr, weight decay) share one group, in order of first appearance (a few
    groups: weights, biases, and with SOLVER.LARGE_FC_LR the classifiers), each listing its
    parameters' names under ``'names'``. The scheduler sets every group from its own base lr, so each
    parameter follows exactly the schedule of the reference's layout, at a few optimizer kernels per
    step instead of one per tensor.

    ``per_tensor``: the reference's layout, one group per tensor with its name under ``'name'``
    (written by earlier versions into ``last.pth``; kept as the baseline of ``tools/bench_train.py``).
    """
    rules = _param_rules(cfg, model)
    if per_tensor:
        return [{"params": [p], "lr": lr, "weight_decay": wd, "name": n} for n, p, lr, wd in rules]
    groups: dict[tuple[float, float], dict] = {}
    for name, param, lr, wd in rules:
        g = groups.setdefault((lr, wd), {"params": [], "lr": lr, "weight_decay": wd, "names": []})
        g["params"].append(param)
        g["names"].append(name)
    return list(groups.values())


def _names(group: dict) -> list:
    """The parameter names of a group of either layout (``'names'``, or the per-tensor ``'name'``)."""
    return group["names"] if "names" in group else [group.get("name")]


def groups_by_param_name(param_groups: list[dict]) -> dict[str, dict]:
    """Parameter name -> the (optimizer or ``state_dict``) param group holding it, for either layout."""
    return {name: g for g in param_groups for name in _names(g)}


def make_optimizer(cfg: CfgNode, model: nn.Module, per_tensor: bool = False) -> torch.optim.Optimizer:
    """Build ``torch.optim.<SOLVER.OPTIMIZER_NAME>`` over :func:`make_param_groups`.

    SGD gets SOLVER.MOMENTUM (no Nesterov, no dampening); any other ``torch.optim`` class (Adam,
    AdamW, ...) is built with its defaults apart from the per-group lr and weight decay. The update
    runs fused (or multi-tensor) where torch has such an implementation for the model's device.

    SGD's momentum buffers exist, zero, from the start (:func:`init_momentum_buffers`): the first step
    ``buf = 0.9 * 0 + g = g`` equals torch's lazy ``buf = g``, and a fused step that a GradScaler
    skips (overflowing gradients) leaves them as they were.

    Raises:
        ConfigError: SOLVER.OPTIMIZER_NAME is not a ``torch.optim`` optimizer.
    """
    name = cfg.SOLVER.OPTIMIZER_NAME
    opt_cls = getattr(torch.optim, name, None)
    if not (isinstance(opt_cls, type) and issubclass(opt_cls, torch.optim.Optimizer)):
        raise ConfigError(f"SOLVER.OPTIMIZER_NAME '{name}' is not a torch.optim optimizer; use e.g. SGD, Adam or AdamW")
    groups = make_param_groups(cfg, model, per_tensor)
    kwargs = {"momentum": cfg.SOLVER.MOMENTUM} if opt_cls is torch.optim.SGD else {}
    optimizer = opt_cls(groups, lr=cfg.SOLVER.BASE_LR, **kwargs, **_fast_update(opt_cls, groups))
    init_momentum_buffers(optimizer)
    return optimizer


def init_momentum_buffers(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter of a momentum SGD that has none its momentum buffer, zero (before the first
    step, and after loading a state that lacks some).

    torch creates the buffers in the first step. Its fused kernel allocates them uninitialised
    (``empty_like``) and relies on writing ``buf = g`` in that step; when a GradScaler finds inf/NaN
    gradients the kernel returns before writing, the garbage stays in the state and the next step
    applies ``momentum * garbage + g`` (tests/test_gpu_recipe.py). With zero buffers the
    kernel never takes its first-step path: ``0.9 * 0 + g = g`` is torch's first step bit for bit, and
    a skipped step changes nothing. (A non-fused SGD avoids the bug differently: GradScaler then reads
    the inf flag back to the host every step to decide whether to call ``step()`` at all.)
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return
    for group in optimizer.param_groups:
        if group["momentum"] != 0:
            for p in group["params"]:
                optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p))


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


def regroup_state(optimizer_state: dict, scheduler_state: dict | None, optimizer: torch.optim.Optimizer,
                  path: str) -> tuple[dict, dict | None]:
    """An optimizer ``state_dict`` saved with other parameter groups, and its scheduler state, moved
    onto ``optimizer``'s groups by parameter name; unchanged when the groups already match.

    This reads ``last.pth`` files of earlier versions (one group per tensor, named ``'name'``). Each
    parameter's state (momentum, Adam moments) moves by name; each group takes the hyperparameters
    (lr, initial_lr, weight decay, ...) of its members' saved groups, which must agree; the
    scheduler's per-group lists (timm: ``base_values``, ``warmup_steps``) are reordered the same way.

    Raises:
        CheckpointError: a parameter has no saved group, or the members of one group had different
            hyperparameters in the file.
    """
    old_groups = optimizer_state["param_groups"]
    template = optimizer.state_dict()["param_groups"]
    if [_names(g) for g in old_groups] == [_names(g) for g in template]:
        return optimizer_state, scheduler_state
    located = {name: (i, index) for i, g in enumerate(old_groups)
               for name, index in zip(_names(g), g["params"])}
    groups, state, order = [], {}, []
    for g in template:
        g["names"] = _names(g)
        missing = [n for n in g["names"] if n not in located]
        if missing:
            raise CheckpointError(f"cannot resume from {path}: its optimizer state has no entry for parameter "
                                  f"'{missing[0]}'; start a new OUTPUT_DIR, or fine-tune its weights with "
                                  f"MODEL.PRETRAIN_CHOICE self")
        first = old_groups[located[g["names"][0]][0]]
        hyper = {k: v for k, v in first.items() if k not in ("params", "name", "names")}
        for n in g["names"]:
            member = old_groups[located[n][0]]
            differing = [k for k, v in hyper.items() if member.get(k) != v]
            if differing:
                raise CheckpointError(f"cannot resume from {path}: its optimizer state has another {differing[0]} "
                                      f"for '{n}' than for '{g['names'][0]}', which this config puts in one group; "
                                      f"resume with the config it was trained with")
        groups.append({**hyper, "names": g["names"], "params": g["params"]})
        for n, index in zip(g["names"], g["params"]):
            old = located[n][1]
            if old in optimizer_state["state"]:
                state[index] = optimizer_state["state"][old]
        order.append(located[g["names"][0]][0])
    if scheduler_state is not None:
        scheduler_state = {k: [v[i] for i in order] if isinstance(v, list) and len(v) == len(old_groups) else v
                           for k, v in scheduler_state.items()}
    return {"state": state, "param_groups": groups}, scheduler_state
