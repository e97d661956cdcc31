"""Small heads shared by the TSD model and the ViT baseline (reference spec section 4.2)."""
from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["bnneck", "id_classifier", "TokenClassifier", "global_weighted_pooling"]


def bnneck(dim: int) -> nn.BatchNorm1d:
    """BNNeck: ``BatchNorm1d(dim)`` with weight 1, bias 0 and the bias frozen (BoT / TransReID)."""
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)
    return bn


def id_classifier(in_dim: int, num_classes: int) -> nn.Linear:
    """Bias-free linear identity classifier, weights ~ N(0, 0.001^2). ``num_classes`` 0 (evaluation-only
    data sets such as occ_reid) gives an empty classifier that evaluation never uses."""
    with warnings.catch_warnings():  # nn.Linear's own init warns about the empty weight; it is re-drawn below
        warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
        fc = nn.Linear(in_dim, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


class TokenClassifier(nn.Module):
    """BatchNorm over tokens, then a bias-free linear classifier applied to every token.

    The reference's ``PixelToPartClassifier`` (P + 1 outputs per patch token, the mask generator) and
    ``VisibilityPredictor`` (1 output per part feature) are both this module. The BatchNorm normalises
    each channel with statistics over all B x T tokens.
    """

    def __init__(self, dim: int, num_outputs: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.classifier = nn.Linear(dim, num_outputs, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) tokens -> (B, T, num_outputs) logits."""
        return self.classifier(self.bn(x.transpose(1, 2)).transpose(1, 2))


def global_weighted_pooling(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted average of tokens per map: ``f_k = sum_n w_nk x_n / max(sum_n w_nk, 1e-6)``, in float32.

    The reference pools with an elementwise product and a sum, which autocast leaves in float32 (its
    inputs, a LayerNorm output and a softmax, are float32 there); a matmul would run in float16 under
    autocast. So autocast is off here: float32 like the reference, through one matmul instead of a
    (B, K, N, C) product (126 MB at batch 64 for ViT-B); only the summation order differs.

    Args:
        features: (B, N, C) tokens.
        weights: (B, N, K) non-negative weights (e.g. part probabilities).

    Returns:
        (B, K, C) float32 pooled features.
    """
    with torch.autocast(features.device.type, enabled=False):
        weights = weights.float()
        pooled = weights.transpose(1, 2) @ features.float()
        return pooled / weights.sum(dim=1).clamp(min=1e-6).unsqueeze(-1)
