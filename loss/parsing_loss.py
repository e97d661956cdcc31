"""Pixel-parsing loss of the mask generator (reference §5.3, ``calculate_mask_loss``)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["parsing_loss"]


def parsing_loss(pixel_logits: Tensor, targets: Tensor, epsilon: float = 0.1) -> Tensor:
    """Label-smoothed cross-entropy of the per-token part classifier.

    The target distribution puts ``1 - epsilon`` on the ground-truth class and ``epsilon / (K - 1)``
    on each of the K - 1 other classes (K = P + 1 with the background). ``F.cross_entropy``'s
    ``label_smoothing=s`` spreads ``s / K`` over *all* classes, so ``s = epsilon * K / (K - 1)``
    gives the same distribution. The reduction is the reference's: sum over tokens divided by the
    number of non-zero token losses (at least 1), i.e. practically the mean.

    Args:
        pixel_logits: (B, N, K) logits per patch token.
        targets: (B, N) int64 class per token in ``[0, K)``.
        epsilon: smoothing mass moved off the ground-truth class.

    Returns:
        0-d loss.
    """
    num_classes = pixel_logits.shape[-1]
    smoothing = epsilon * num_classes / (num_classes - 1)
    per_token = F.cross_entropy(
        pixel_logits.reshape(-1, num_classes), targets.reshape(-1), label_smoothing=smoothing, reduction="none"
    )
    return per_token.sum() / per_token.count_nonzero().clamp(min=1)
