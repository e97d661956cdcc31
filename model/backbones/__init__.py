"""ViT backbones (TransReID's ViT built from timm parts)."""
from .vit_pytorch import BACKBONES, TransReID, build_transreid, fused_attention

__all__ = ["BACKBONES", "TransReID", "build_transreid", "fused_attention"]
