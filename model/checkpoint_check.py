"""Why a checkpoint does not fit a TSD / ViT-baseline model: the check behind ``load_param``.

It names every missing, unexpected and mis-shaped tensor and, as far as the tensors tell, the config
change that makes the model match (backbone width and depth, ``MODEL.ARCH``, ``MODEL.NUM_PARTS`` and the
mask grouping, input size, fore head, SIE), all in one ``CheckpointError`` line.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from config.parts import grouping_for_parts
from utils.errors import CheckpointError

from .backbones.vit_pytorch import BACKBONES

__all__ = ["ID_CLASSIFIERS", "check_checkpoint"]

# Identity classifiers: their rows follow the training identities, so a checkpoint trained on another
# data set only differs there; they do not influence evaluation outputs.
ID_CLASSIFIERS = ("classifier.weight", "classifier_part.weight", "classifier_partm.weight", "classifier_fg.weight")


def check_checkpoint(
    path: str, state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], embed_dim: int
) -> list[str]:
    """Check that the checkpoint ``state`` (read from ``path``, ``module.`` prefixes removed) fits a model
    whose state dict is ``own`` and whose backbone is ``embed_dim`` wide.

    Returns:
        the identity classifiers (:data:`ID_CLASSIFIERS`) whose number of classes differs: to be skipped.

    Raises:
        CheckpointError: not a checkpoint of this model family, or missing / unexpected / mis-shaped
            tensors (all named, with the config change that fixes them).
    """
    if not any(k.startswith("base.") for k in state):
        hint = (
            "it holds ImageNet ViT weights: use it as MODEL.PRETRAIN_PATH with MODEL.PRETRAIN_CHOICE imagenet"
            if any(k.startswith(("blocks.", "patch_embed.")) for k in state)
            else "expected the base.* / b1.* tensors of a TSD or ViT-baseline checkpoint"
        )
        raise CheckpointError(f"{path} is not a TSD checkpoint; {hint}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    other_classes = [k for k in mismatched if k in ID_CLASSIFIERS and state[k].shape[1:] == own[k].shape[1:]]
    mismatched = [k for k in mismatched if k not in other_classes]
    if missing or unexpected or mismatched:
        problems = _listing("missing", missing, own) + _listing("unexpected", unexpected, state)
        problems += _listing("shape mismatch", mismatched, state, own)
        hints = _config_hints(own, state, embed_dim)
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: {'; '.join(hints + problems)}"
        )
    return other_classes


def _shape(t: torch.Tensor) -> str:
    return "(" + ",".join(str(s) for s in t.shape) + ")"


def _listing(what: str, keys: list[str], state: Mapping[str, torch.Tensor], other: Mapping | None = None) -> list[str]:
    """'what: k1, k2 (shapes) ... and N more' for a non-empty key list."""
    if not keys:
        return []
    shown = [f"{k} {_shape(state[k])}" + (f" vs {_shape(other[k])}" if other is not None else "") for k in keys[:4]]
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return [f"{what}: {', '.join(shown)}{more}"]


def _config_hints(own: Mapping[str, torch.Tensor], ckpt: Mapping[str, torch.Tensor], embed_dim: int) -> list[str]:
    """The config changes that would make the model match the checkpoint, as far as they can be told."""
    width = ckpt["base.cls_token"].shape[-1] if "base.cls_token" in ckpt else embed_dim
    if width != embed_dim:
        names = [n for n, s in BACKBONES.items() if s.embed_dim == width]
        return [
            f"its backbone is {width}-wide but the model's is {embed_dim}: set MODEL.TRANSFORMER_TYPE "
            + (" or ".join(names) if names else f"to a {width}-wide backbone")
        ]
    hints = []
    depth = {_num_blocks(own), _num_blocks(ckpt)}
    if len(depth) > 1:
        names = [n for n, s in BACKBONES.items() if s.embed_dim == width and s.depth == _num_blocks(ckpt)]
        hints.append(f"it has a {_num_blocks(ckpt)}-block backbone: "
                     f"set MODEL.TRANSFORMER_TYPE {' or '.join(names) or '?'}")
    q = "query_embedding.weight"
    if q in ckpt and q not in own:
        hints.append("it is a TSD checkpoint: set MODEL.ARCH tsd")
    elif q in own and q not in ckpt:
        hints.append("it is a ViT-baseline checkpoint: set MODEL.ARCH vit")
    elif q in own and ckpt[q].shape[0] != own[q].shape[0]:
        parts = ckpt[q].shape[0] - 1
        grouping = grouping_for_parts(parts)
        fix = f"MODEL.NUM_PARTS {parts}" + (f" INPUT.MASK_PREPROCESS {grouping}" if grouping else "")
        hints.append(
            f"it has {parts}-part decoder tensors ({q} {_shape(ckpt[q])}) but the model has NUM_PARTS "
            f"{own[q].shape[0] - 1}: set {fix}"
        )
    if "base.pos_embed" in ckpt and ckpt["base.pos_embed"].shape != own["base.pos_embed"].shape:
        hints.append(
            f"it has {ckpt['base.pos_embed'].shape[1] - 1} patch tokens, "
            f"the model {own['base.pos_embed'].shape[1] - 1}: "
            "set INPUT.SIZE_TRAIN / MODEL.STRIDE_SIZE to the training values"
        )
    fg = "bottleneck_fg.weight"
    if q in own and q in ckpt and (fg in ckpt) != (fg in own):
        hints.append(f"set MODEL.WITH_FORE_HEAD {fg in ckpt}")
    sie = "base.sie_embed"
    if (sie in ckpt) != (sie in own) or (sie in ckpt and ckpt[sie].shape != own[sie].shape):
        trained = f"with SIE (base.sie_embed {_shape(ckpt[sie])})" if sie in ckpt else "without SIE"
        hints.append(f"it was trained {trained}: set MODEL.SIE_CAMERA / MODEL.SIE_VIEW as in training")
    return hints


def _num_blocks(state: Mapping[str, torch.Tensor]) -> int:
    return len({k.split(".")[2] for k in state if k.startswith("base.blocks.")})
