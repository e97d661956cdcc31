"""The TSD training objective (reference §5.1 / §5.7): named, weighted loss terms of one batch."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss
from yacs.config import CfgNode

from .diverse_loss import diverse_loss
from .parsing_loss import parsing_loss
from .triplet_loss import PartTripletLoss, TripletLoss

__all__ = ["make_loss", "accuracy", "mimic_loss", "LossFn", "ID_HEADS", "PART_TRIPLET_FEATS", "DIVERSE_FEATS"]

LossFn = Callable[[Mapping, Tensor], dict]

# Identity heads, in the reference's summation order; each present one gives a term ``cls_<head>``.
ID_HEADS = ("global", "cat", "cat_m", "aux", "fg")
# Part features with a part triplet term -> term name ('part_md' only feeds the diversity loss).
PART_TRIPLET_FEATS = {"part": "tri_part", "part_m": "tri_part_m", "aux": "tri_aux"}
# Part features with a diversity term: the teacher and the mask-pooled parts with detached masks.
DIVERSE_FEATS = {"aux": "div_aux", "part_md": "div_part_md"}


def mimic_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Distillation ``mean_b(1 - cos(student_b, teacher_b))`` over the concatenated parts (§5.5).

    Args:
        student: (B, P, C) student part features.
        teacher: (B, P, C) teacher part features; detached here (stop-gradient).

    Returns:
        0-d loss.
    """
    return (1 - F.cosine_similarity(student.flatten(1), teacher.detach().flatten(1), dim=1)).mean()


def accuracy(outputs: Mapping, labels: Tensor) -> Tensor:
    """Top-1 training accuracy of the global identity head (what the reference logs).

    Args:
        outputs: model outputs with ``cls_score['global']`` (B, num_classes).
        labels: (B,) identity labels.

    Returns:
        0-d float tensor in [0, 1].
    """
    return (outputs["cls_score"]["global"].argmax(1) == labels).float().mean()


def make_loss(cfg: CfgNode, num_classes: int) -> LossFn:
    """Build the loss closure of a config.

    Every term is already multiplied by its weight (ID: MODEL.ID_LOSS_WEIGHT, triplet:
    MODEL.TRIPLET_LOSS_WEIGHT, visibility: MODEL.VISIBILITY_LOSS_WEIGHT, mimic:
    MODEL.DISTILL_LOSS_WEIGHT, parsing: MODEL.MASK_LOSS_WEIGHT, diversity: MODEL.DIVERSE_LOSS_WEIGHT),
    so the training loss is the sum of the returned values. A term is present only when the model
    produced its inputs (the ViT baseline gives ``cls_global`` and ``tri_global`` only; ``cls_fg``
    needs the fore head) and, for ``div_*``, when MODEL.WITH_DIVERSE_LOSS is on.

    Under mixed precision the closure runs inside the forward's ``torch.autocast`` region, as the
    reference computes every loss (§6.3): autocast's op lists decide each op's precision (the distance
    and similarity products in float16 / bfloat16, cross-entropy, softmax, exp and log in float32).
    ``SOLVER.AMP_LOSSES_FP32 True`` computes every term in float32 with autocast disabled instead: the
    batch-hard distances ``|a|^2 + |b|^2 - 2ab`` lose most of their digits when ``ab`` is rounded to
    float16 for near pairs. Without autocast (fp32 training) both are the same computation.

    Args:
        cfg: the config.
        num_classes: number of training identities (kept for the TransReID call signature; the plain
            and label-smoothed cross-entropies need no class count).

    Returns:
        ``loss_fn(outputs, labels) -> {term name: 0-d tensor}`` in the reference's summation order:
        ``cls_*``, ``tri_*``, ``visibility_focal``, ``mimic``, ``mask_parsing_ce``, ``div_*``.
        ``outputs`` is the train-mode model output dict (keys ``cls_score``, ``feat`` and, for TSD,
        ``visb_logits``, ``visb_targets``, ``pixel_logits``, ``mask_targets``).
    """
    del num_classes
    m = cfg.MODEL
    id_smoothing = 0.1 if m.IF_LABELSMOOTH == "on" else 0.0
    global_triplet = TripletLoss(None if m.NO_MARGIN else cfg.SOLVER.MARGIN)
    part_triplet = PartTripletLoss(cfg.SOLVER.MARGIN)
    part_type = cfg.INPUT.MASK_PREPROCESS
    fp32 = cfg.SOLVER.AMP_LOSSES_FP32
    cast: Callable[[Tensor], Tensor] = (lambda t: t.float()) if fp32 else (lambda t: t)

    def loss_fn(outputs: Mapping, labels: Tensor) -> dict:
        with torch.autocast(labels.device.type, enabled=False) if fp32 else contextlib.nullcontext():
            scores = {k: cast(v) for k, v in outputs["cls_score"].items()}
            feats = {k: cast(v) for k, v in outputs["feat"].items()}
            terms: dict = {}
            for head in ID_HEADS:
                if head in scores:
                    ce = F.cross_entropy(scores[head], labels, label_smoothing=id_smoothing)
                    terms[f"cls_{head}"] = m.ID_LOSS_WEIGHT * ce
            if "global" in feats:
                terms["tri_global"] = m.TRIPLET_LOSS_WEIGHT * global_triplet(feats["global"], labels)
            for key, name in PART_TRIPLET_FEATS.items():
                if key in feats:
                    terms[name] = m.TRIPLET_LOSS_WEIGHT * part_triplet(feats[key], labels)
            if "visb_logits" in outputs:
                focal = sigmoid_focal_loss(
                    cast(outputs["visb_logits"]), cast(outputs["visb_targets"]), alpha=0.25, gamma=2, reduction="mean"
                )
                terms["visibility_focal"] = m.VISIBILITY_LOSS_WEIGHT * focal
            if "part" in feats and "aux" in feats:
                terms["mimic"] = m.DISTILL_LOSS_WEIGHT * mimic_loss(feats["part"], feats["aux"])
            if "pixel_logits" in outputs:
                ce = parsing_loss(cast(outputs["pixel_logits"]), outputs["mask_targets"])
                terms["mask_parsing_ce"] = m.MASK_LOSS_WEIGHT * ce
            if m.WITH_DIVERSE_LOSS:
                for key, name in DIVERSE_FEATS.items():
                    if key in feats:
                        div = diverse_loss(feats[key], part_type, exact_mean=m.DIVERSE_EXACT_MEAN)
                        terms[name] = m.DIVERSE_LOSS_WEIGHT * div
            return terms

    return loss_fn
