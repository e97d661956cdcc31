"""TSD model package: ``make_model`` (TransReID's factory signature), the models and the backbone."""
from .backbones import BACKBONES, TransReID, build_transreid, fused_attention
from .make_model import make_model
from .tsd import TSD, ViTReID

__all__ = ["make_model", "TSD", "ViTReID", "TransReID", "BACKBONES", "build_transreid", "fused_attention"]
