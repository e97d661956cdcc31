"""The pixel classifier's targets: the soft part masks of a batch on the model's patch grid (reference §4.4).

The data pipeline delivers (B, P+1, H, W) soft masks at the input resolution
(:func:`datasets.masks.add_background`); which token belongs to which part depends on the model's
patch grid, so the model derives its targets itself, in its forward pass.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["mask_targets"]


def mask_targets(masks: Tensor, num_y: int, num_x: int) -> tuple[Tensor, Tensor]:
    """Per-token part labels and part visibility for the pixel classifier (reference §4.4, bug 9.11).

    The soft masks are point-sampled to the patch grid (bilinear, ``align_corners=True``), the label
    of a token is the argmax channel (exact ties go to the lower index), and a channel is visible
    when it wins at least one token.

    Args:
        masks: (B, P+1, H, W) soft masks from :func:`datasets.masks.add_background`.
        num_y, num_x: patch grid (rows, cols); N = num_y * num_x.

    Returns:
        targets (B, N) int64 in [0, P] (row-major tokens), visibility (B, P+1) bool.
    """
    small = F.interpolate(masks, size=(num_y, num_x), mode="bilinear", align_corners=True)
    targets = small.argmax(dim=1).flatten(1)
    visibility = F.one_hot(targets, masks.shape[1]).amax(dim=1).bool()
    return targets, visibility
