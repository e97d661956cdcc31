"""TSD's part decoder (reference ``PartDecoder1`` / ``MaskMultiheadAttention1``, spec section 4.2).

One decoder serves as both the student (plain cross-attention) and the teacher (cross-attention
restricted by a sampled part mask). Masked attention logits are *replaced* by ``MASKED_LOGIT`` before
the softmax, as in the reference: a fully masked row then attends uniformly to every key (no NaN),
which neither an additive mask nor a boolean SDPA mask reproduces — hence the explicit formula.
The decoder is tiny (P + 2 queries), so the explicit formula costs nothing measurable.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MASKED_LOGIT", "MaskedMultiheadAttention", "FFN", "PartDecoder"]

# The reference's fill value (fp16-safe): replaces, not adds to, the logits of masked query/key pairs.
MASKED_LOGIT = -1e4


class MaskedMultiheadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections and a replace-by-constant mask.

    Args:
        dim: model width C (queries, keys and values all have it).
        num_heads: heads; head dim = C // num_heads, scale = head_dim ** -0.5.
        add_identity: add the query input to the output (the reference's ``add_identity``).
    """

    def __init__(self, dim: int, num_heads: int, add_identity: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.add_identity = add_identity
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend.

        Args:
            query: (B, Tq, C).
            key, value: (B, Tk, C).
            attn_mask: optional (B, Tq, Tk); 0 / False = not allowed, anything else = allowed. Shared by
                all heads.

        Returns:
            ``(out (B, Tq, C), attn (B, heads, Tq, Tk))`` with ``attn`` the post-softmax weights.
        """
        q, k, v = (self._heads(proj(t)) for proj, t in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        logits = (q @ k.transpose(-2, -1)) * self.scale
        if attn_mask is not None:
            logits = logits.masked_fill(attn_mask.unsqueeze(1) == 0, MASKED_LOGIT)
        attn = logits.softmax(dim=-1)
        out = self.out_proj((attn @ v).transpose(1, 2).flatten(2))
        return (query + out if self.add_identity else out), attn

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, heads, T, C // heads)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


class FFN(nn.Module):
    """Linear -> ReLU -> Linear (no residual here; key names ``layers.0.0`` / ``layers.1`` as in mmcv)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True)),
                                    nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        return self.layers(x)


class PartDecoder(nn.Module):
    """Self-attention over [cls, P + 1 part queries], then cross-attention to the patch tokens.

    ``s = norm1(q + SelfAttn(q))[:, 1:]`` (cls dropped); ``x = CrossAttn(s, memory, mask)`` without a
    residual; ``out = x + FFN(norm2(x))``.

    Args:
        dim: width C.
        num_heads: heads of both attentions (``MODEL.DECODER_HEADS``).
        ffn_dim: FFN hidden width (``int(MODEL.DECODER_FFN_RATIO * C)``).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.gp_self_attention = MaskedMultiheadAttention(dim, num_heads, add_identity=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attention = MaskedMultiheadAttention(dim, num_heads, add_identity=False)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ffn_dim)
        # Created but never applied by the reference; kept only so that its checkpoints (which hold
        # part_decoder.post_norm.*) load with strict key matching.
        self.post_norm = nn.LayerNorm(dim)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode part features.

        Args:
            query: (B, P + 2, C): token 0 = the (detached) cls token, then the background and P part queries.
            memory: (B, N, C) patch tokens (keys and values).
            attn_mask: optional (B, P + 1, N) cross-attention mask (0 = token hidden from that query).

        Returns:
            ``(out (B, P + 1, C), cross_attn (B, heads, P + 1, N))``; row 0 is the background query.
        """
        s, _ = self.gp_self_attention(query, query, query)
        s = self.norm1(s)[:, 1:]
        x, cross_attn = self.cross_attention(s, memory, memory, attn_mask)
        return x + self.ffn(self.norm2(x)), cross_attn
