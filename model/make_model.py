"""Model factory with TransReID's signature: ``make_model(cfg, num_class, camera_num, view_num)``."""
from __future__ import annotations

from yacs.config import CfgNode

from .backbones.vit_pytorch import build_transreid
from .tsd import TSD, ViTReID

__all__ = ["make_model"]


def make_model(cfg: CfgNode, num_class: int, camera_num: int = 0, view_num: int = 0) -> ViTReID:
    """Build ``MODEL.ARCH`` ('tsd' or the 'vit' baseline) and load ``MODEL.PRETRAIN_CHOICE`` weights.

    'imagenet' loads ``MODEL.PRETRAIN_PATH`` into the backbone *before* the global branch ``b1`` copies
    its last block; 'self' loads a full TSD / baseline checkpoint from ``MODEL.PRETRAIN_PATH``
    (fine-tuning: identity classifiers of another class count are skipped); 'none' keeps the random
    initialisation.

    Args:
        cfg: the configuration (``MODEL.*``, ``INPUT.SIZE_TRAIN``).
        num_class: training identities.
        camera_num, view_num: numbers of cameras / views; only used when ``MODEL.SIE_CAMERA`` /
            ``MODEL.SIE_VIEW`` is on.

    Raises:
        CheckpointError: a weight file is missing or does not fit (see ``TransReID.load_param`` and
            ``ViTReID.load_param``).
    """
    m = cfg.MODEL
    backbone = build_transreid(
        m.TRANSFORMER_TYPE,
        img_size=cfg.INPUT.SIZE_TRAIN,
        stride=m.STRIDE_SIZE,
        drop_path_rate=m.DROP_PATH,
        drop_rate=m.DROP_OUT,
        attn_drop_rate=m.ATT_DROP_RATE,
        camera=camera_num if m.SIE_CAMERA else 0,
        view=view_num if m.SIE_VIEW else 0,
        sie_coe=m.SIE_COE,
    )
    if m.PRETRAIN_CHOICE == "imagenet":
        backbone.load_param(m.PRETRAIN_PATH)
    if m.ARCH == "vit":
        model = ViTReID(backbone, num_class)
    else:
        ffn_dim = int(m.DECODER_FFN_RATIO * backbone.embed_dim)
        model = TSD(backbone, num_class, m.NUM_PARTS, m.WITH_FORE_HEAD, m.DECODER_HEADS, ffn_dim)
    if m.PRETRAIN_CHOICE == "self":
        model.load_param(m.PRETRAIN_PATH)
    return model
