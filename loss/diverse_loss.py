"""Part diversity loss (reference §5.6, ``diverse_loss_w``): penalise positive cosine similarity
between the features of different parts of the same image."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from config.parts import limb_groups

__all__ = ["diverse_loss"]


def _off_diagonal(x: Tensor) -> Tensor:
    """The P(P-1) off-diagonal entries of (..., P, P) matrices as the reference's (..., P-1, P) view.

    Dropping the last of the P^2 row-major entries and reshaping to (P-1, P+1) puts every diagonal
    entry in column 0; row r then holds (r, r+1..P-1) followed by (r+1, 0..r).
    """
    p = x.shape[-1]
    return x.flatten(-2)[..., :-1].unflatten(-1, (p - 1, p + 1))[..., 1:]


def _pair_weights(part_type: str | None, num_parts: int, device: torch.device) -> Tensor:
    """(P, P) weights: 0 for two parts of the same limb (the left and right arm, leg, feet of 'eight',
    :func:`config.parts.limb_groups`: they are not pushed apart), 1 otherwise."""
    groups = limb_groups(part_type) if part_type is not None else None
    if groups is None or len(set(groups)) == len(groups):  # no two parts of one limb
        return torch.ones(num_parts, num_parts, device=device)
    if len(groups) != num_parts:
        raise ValueError(f"part_type '{part_type}' has {len(groups)} parts, the features have {num_parts}")
    g = torch.tensor(groups, device=device)
    return (g.unsqueeze(0) != g.unsqueeze(1)).float()


def diverse_loss(feats: Tensor, part_type: str | None = None, exact_mean: bool = False) -> Tensor:
    """Mean ReLU cosine similarity between different parts.

    For groupings with limb groups ('eight') same-limb pairs get weight 0. The reference averages the
    weighted mean of each row of its (P-1, P) off-diagonal view (rows hold 6 or 8 allowed pairs for
    'eight', bug §9.9), which is reproduced by default; ``exact_mean`` gives the true weighted mean
    over all allowed pairs. Both are the plain off-diagonal mean for the other groupings.

    Args:
        feats: (B, P, C) part features, P >= 2.
        part_type: INPUT.MASK_PREPROCESS grouping name ('eight', 'five', 'three') or None.
        exact_mean: weighted mean over all allowed pairs instead of the mean of row means.

    Returns:
        0-d loss.
    """
    f = F.normalize(feats, dim=-1)
    sim = _off_diagonal(F.relu(f @ f.transpose(1, 2)))
    weights = _off_diagonal(_pair_weights(part_type, feats.shape[1], feats.device))
    if exact_mean:
        return ((sim * weights).sum((1, 2)) / weights.sum()).mean()
    return ((sim * weights).sum(-1) / weights.sum(-1)).mean()
