"""Batch-hard triplet losses on global and part features (reference §5.2).

The distance is the reference's expanded Euclidean form ``sqrt(clamp(|a|^2 + |b|^2 - 2ab, 1e-12))``
rather than :func:`torch.cdist`: ``cdist`` uses another formula and a zero gradient at zero distance,
which changes the anchor-to-itself entries that batch-hard mining can select.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["euclidean_dist", "part_euclidean_dist", "hard_example_mining", "TripletLoss", "PartTripletLoss"]


def euclidean_dist(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise Euclidean distances, batched over leading dimensions.

    Args:
        x: (..., M, C) features.
        y: (..., N, C) features.

    Returns:
        (..., M, N) distances ``sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, min=1e-12))``.
    """
    # Squared norms in float32 whatever autocast does, as CUDA's autocast computes pow / sum: the sum
    # then promotes the (fp16 under autocast) product, and the clamp at 1e-12 stays non-zero. CPU
    # autocast would keep them in fp16, where 1e-12 rounds to 0 and sqrt's backward gives 0 / 0 = NaN
    # for every pair that batch-hard mining did not select.
    xx = x.float().pow(2).sum(-1, keepdim=True)
    yy = y.float().pow(2).sum(-1, keepdim=True).transpose(-1, -2)
    dist = xx + yy - 2 * x @ y.transpose(-1, -2)
    return dist.clamp(min=1e-12).sqrt()


def part_euclidean_dist(x: Tensor, y: Tensor) -> Tensor:
    """Per-part Euclidean distance matrices averaged over the parts.

    Args:
        x: (M, P, C) part features.
        y: (N, P, C) part features.

    Returns:
        (M, N) mean over the P parts of the per-part distances.
    """
    return euclidean_dist(x.transpose(0, 1), y.transpose(0, 1)).mean(0)


def hard_example_mining(dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Hardest positive and hardest negative distance of every anchor.

    Masked max/min, so anchors may have different numbers of positives (the reference's
    ``dist[is_pos].view(N, -1)`` needs the same count for every anchor, bug §9.16); under P x K
    sampling both select the same entries. The anchor itself counts as a positive. An anchor without
    negatives gets ``d_an = +inf``, i.e. a zero loss.

    Args:
        dist: (N, N) pairwise distances.
        labels: (N,) identity labels.

    Returns:
        ``(d_ap, d_an)``, each (N,).
    """
    is_pos = labels.unsqueeze(0) == labels.unsqueeze(1)
    d_ap = dist.masked_fill(~is_pos, float("-inf")).amax(1)
    d_an = dist.masked_fill(is_pos, float("inf")).amin(1)
    return d_ap, d_an


def _ranking_loss(d_ap: Tensor, d_an: Tensor, margin: float | None) -> Tensor:
    """Soft margin ``mean log(1 + exp(d_ap - d_an))`` if ``margin`` is None, else the hinge."""
    y = torch.ones_like(d_an)
    if margin is None:
        return F.soft_margin_loss(d_an - d_ap, y)
    return F.margin_ranking_loss(d_an, d_ap, y, margin=margin)


class TripletLoss(nn.Module):
    """Batch-hard triplet loss on one feature vector per sample (TransReID's ``TripletLoss``).

    Args:
        margin: hinge margin; None selects the soft margin ``log(1 + exp(d_ap - d_an))``.
    """

    def __init__(self, margin: float | None = None) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, feats: Tensor, labels: Tensor) -> Tensor:
        """Loss of a batch.

        Args:
            feats: (B, C) features (not normalised).
            labels: (B,) identity labels.

        Returns:
            0-d loss.
        """
        d_ap, d_an = hard_example_mining(euclidean_dist(feats, feats), labels)
        return _ranking_loss(d_ap, d_an, self.margin)


class PartTripletLoss(nn.Module):
    """Batch-hard soft-margin triplet loss on part features (the reference's part triplet).

    The distance of two samples is the mean of their per-part Euclidean distances. When the
    soft-margin value overflows to +inf (``exp`` of a large gap in float32) the loss falls back to
    the hinge with ``fallback_margin``, as the reference does.

    Args:
        fallback_margin: hinge margin used when the soft margin is +inf (reference: 0.3).
    """

    def __init__(self, fallback_margin: float = 0.3) -> None:
        super().__init__()
        self.fallback_margin = fallback_margin

    def forward(self, feats: Tensor, labels: Tensor) -> Tensor:
        """Loss of a batch.

        Args:
            feats: (B, P, C) part features (not normalised).
            labels: (B,) identity labels.

        Returns:
            0-d loss.
        """
        d_ap, d_an = hard_example_mining(part_euclidean_dist(feats, feats), labels)
        # The reference's ``if torch.isinf(loss)``, decided on the device: a host read of the loss would
        # stall a GPU every step. Same values and gradients: where the hinge is taken, the soft branch
        # is recomputed at a zero gap (finite, zero gradient) instead of back-propagating 0 x NaN
        # through the overflowed exp.
        with torch.no_grad():
            overflow = torch.isinf(_ranking_loss(d_ap, d_an, None))
        zero = torch.zeros((), dtype=d_ap.dtype, device=d_ap.device)
        soft = _ranking_loss(torch.where(overflow, zero, d_ap), torch.where(overflow, zero, d_an), None)
        return torch.where(overflow, _ranking_loss(d_ap, d_an, self.fallback_margin), soft)
