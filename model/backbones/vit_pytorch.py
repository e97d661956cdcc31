"""TransReID's ViT backbone, assembled from timm parts.

Key names, shapes, initialisation and ImageNet-weight loading follow TransReID's
``model/backbones/vit_pytorch.py`` as used by TSD (reference spec section 4.1), so both the ImageNet
files TransReID loads and the checkpoints TSD saves fit this module unchanged.

The transformer blocks are timm's :class:`~timm.models.vision_transformer.Block` (same parameter names
as TransReID's block: ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``);
their attention runs through ``F.scaled_dot_product_attention`` (``fused_attn``). :func:`fused_attention`
switches the explicit ``softmax(QK^T)V`` formula back on, e.g. to benchmark or to debug.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block
from torch import nn

from utils.errors import CheckpointError, ConfigError

__all__ = [
    "BACKBONES",
    "ViTSpec",
    "TransReID",
    "PatchEmbedOverlap",
    "build_transreid",
    "fused_attention",
    "read_checkpoint",
]

logger = logging.getLogger("tsd")

# Where the ImageNet weights TSD starts from are published (TransReID's README).
JX_VIT_B16_URL = (
    "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth"
)


@dataclass(frozen=True)
class ViTSpec:
    """Dimensions of a registered TransReID ViT variant."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    # TransReID's vit_small overrides the attention scale with embed_dim ** -0.5; None = head_dim ** -0.5.
    qk_scale: float | None = None


# The TransReID factory names (``MODEL.TRANSFORMER_TYPE``). ``deit_base`` is the same network as
# ``vit_base`` in TransReID (only the ImageNet file differs). ``vit_tiny`` is the parity fixtures'
# small backbone (see ../shared/parity/README.md), handy for tests.
BACKBONES: dict[str, ViTSpec] = {
    "vit_base_patch16_224_TransReID": ViTSpec(768, 12, 12, 4.0, True),
    "deit_base_patch16_224_TransReID": ViTSpec(768, 12, 12, 4.0, True),
    "vit_small_patch16_224_TransReID": ViTSpec(768, 8, 8, 3.0, False, qk_scale=768**-0.5),
    "deit_small_patch16_224_TransReID": ViTSpec(384, 12, 6, 4.0, True),
    "vit_tiny_patch16_TransReID": ViTSpec(64, 3, 4, 4.0, True),
}

PATCH_SIZE = 16
_layer_norm_1e6 = functools.partial(nn.LayerNorm, eps=1e-6)


class PatchEmbedOverlap(nn.Module):
    """Overlapping patch embedding: ``Conv2d(3, C, 16, stride)`` over the whole image.

    Tokens come out in row-major ``(y, x)`` order; ``num_y = (H - 16) // sh + 1`` and
    ``num_x = (W - 16) // sw + 1``.
    """

    def __init__(self, img_size: Sequence[int], stride: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.img_size = (int(img_size[0]), int(img_size[1]))
        sh, sw = int(stride[0]), int(stride[1])
        self.num_y = (self.img_size[0] - PATCH_SIZE) // sh + 1
        self.num_x = (self.img_size[1] - PATCH_SIZE) // sw + 1
        self.num_patches = self.num_y * self.num_x
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=PATCH_SIZE, stride=(sh, sw))
        # TransReID's He-style init (fan-out); overwritten when ImageNet weights are loaded.
        nn.init.normal_(self.proj.weight, 0.0, math.sqrt(2.0 / (PATCH_SIZE * PATCH_SIZE * embed_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed an image batch.

        Args:
            x: (B, 3, H, W) images, H x W = the size the module was built for.

        Returns:
            (B, num_y * num_x, C) patch tokens.
        """
        if tuple(x.shape[-2:]) != self.img_size:
            raise ConfigError(
                f"input images are {tuple(x.shape[-2:])} but the model was built for INPUT.SIZE_TRAIN "
                f"{list(self.img_size)} (its position embedding has that grid); set INPUT.SIZE_TEST to it"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class _ScaleQuery(nn.Module):
    """Multiplies the queries by a constant: gives timm's attention a custom softmax temperature.

    timm's fused path always uses ``head_dim ** -0.5``; sitting in the parameter-free ``q_norm`` slot,
    this rescales q by ``qk_scale / head_dim ** -0.5`` in both the fused and the explicit path without
    adding state-dict keys.
    """

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """(B, heads, T, head_dim) -> same shape, times ``factor``."""
        return q * self.factor


class TransReID(nn.Module):
    """TransReID's ViT (overlapping patches, optional camera/view side-information embedding).

    Args:
        spec: dimensions (see :data:`BACKBONES`).
        img_size: (H, W) the position embedding is built for.
        stride: patch-embedding stride (sh, sw).
        drop_path_rate: stochastic depth of the last block; block i gets ``linspace(0, rate, depth)[i]``.
        drop_rate: dropout after the position embedding and inside attention projection / MLP.
        attn_drop_rate: dropout on the attention weights.
        camera, view: numbers of cameras / views for SIE; the embedding exists when one of them is > 1.
        sie_coe: SIE scale (``MODEL.SIE_COE``).
        local_feature: True (TSD): forward returns every token after all blocks but the last, without
            the final norm (the last block and ``norm`` only seed the model's ``b1`` copy). False:
            TransReID's global mode, all blocks + norm, cls token only.
    """

    def __init__(
        self,
        spec: ViTSpec,
        img_size: Sequence[int] = (256, 128),
        stride: Sequence[int] = (16, 16),
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        camera: int = 0,
        view: int = 0,
        sie_coe: float = 3.0,
        local_feature: bool = True,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.embed_dim = dim = spec.embed_dim
        self.local_feature = local_feature
        self.patch_embed = PatchEmbedOverlap(img_size, stride, dim)
        self.num_y, self.num_x = self.patch_embed.num_y, self.patch_embed.num_x
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, dim))
        self.cam_num = camera if camera > 1 else 0
        self.view_num = view if view > 1 else 0
        self.sie_coe = sie_coe
        if self.cam_num or self.view_num:
            self.sie_embed = nn.Parameter(torch.zeros(max(self.cam_num, 1) * max(self.view_num, 1), 1, dim))
            trunc_normal_(self.sie_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, spec.depth, device="cpu").tolist()  # cpu: also under a meta device
        self.blocks = nn.ModuleList(
            Block(
                dim,
                spec.num_heads,
                mlp_ratio=spec.mlp_ratio,
                qkv_bias=spec.qkv_bias,
                proj_drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[i],
                norm_layer=_layer_norm_1e6,
            )
            for i in range(spec.depth)
        )
        for blk in self.blocks:
            blk.attn.fused_attn = True
            if spec.qk_scale is not None:
                blk.attn.q_norm = _ScaleQuery(spec.qk_scale / blk.attn.scale)
        self.norm = _layer_norm_1e6(dim)
        # ImageNet classifier of TransReID's ViT: never used by re-ID, kept only so that state dicts
        # (ours and the reference's TSD checkpoints, which contain base.fc.*) keep the same keys.
        self.fc = nn.Linear(dim, 1000)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_vit_weights)

    def forward(
        self, x: torch.Tensor, cam_label: torch.Tensor | None = None, view_label: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run the ViT.

        Args:
            x: (B, 3, H, W) images.
            cam_label: (B,) int64 camera ids in [0, camera), needed when the camera SIE is on.
            view_label: (B,) int64 view ids in [0, view), needed when the view SIE is on.

        Returns:
            ``local_feature``: (B, 1 + N, C) tokens (cls first, N = num_y * num_x) after ``blocks[:-1]``,
            no final norm. Otherwise: (B, C) normed cls token after all blocks.
        """
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((cls, tokens), dim=1) + self.pos_embed
        if self.cam_num or self.view_num:
            tokens = tokens + self.sie_coe * self.sie_embed[self._sie_index(cam_label, view_label)]
        tokens = self.pos_drop(tokens)
        if self.local_feature:
            for blk in self.blocks[:-1]:
                tokens = blk(tokens)
            return tokens
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)[:, 0]

    def _sie_index(self, cam_label: torch.Tensor | None, view_label: torch.Tensor | None) -> torch.Tensor:
        if (self.cam_num and cam_label is None) or (self.view_num and view_label is None):
            raise ValueError("the SIE backbone needs cam_label (MODEL.SIE_CAMERA) / view_label (MODEL.SIE_VIEW)")
        if self.cam_num and self.view_num:
            return cam_label * self.view_num + view_label
        return cam_label if self.cam_num else view_label

    def load_param(self, path: str) -> None:
        """Load ImageNet ViT weights (timm/jx flat files, DeiT ``{'model': ...}`` files, ``state_dict`` wrappers).

        ``head*`` / ``dist*`` entries are skipped, a 2-D patch-embedding weight is reshaped to the conv
        kernel and ``pos_embed`` is resampled (bilinear) to this model's (num_y, num_x) grid; DeiT's
        distillation token is dropped first. Logs a summary on the ``tsd`` logger.

        Raises:
            CheckpointError: missing / unreadable file, not a ViT checkpoint, other embedding width,
                or a tensor whose shape does not fit.
        """
        if not os.path.isfile(path):
            raise CheckpointError(
                f"ImageNet weights MODEL.PRETRAIN_PATH '{path}' not found; download jx_vit_base_p16_224-80ecf9dd.pth "
                f"from {JX_VIT_B16_URL} (ViT-B/16), or set MODEL.PRETRAIN_CHOICE none to start from random weights"
            )
        state = read_checkpoint(path)
        self._check_imagenet_file(path, state)
        own = self.state_dict()
        loaded, resized, skipped, unknown, mismatched = [], [], [], [], []
        for key, value in state.items():
            if key.startswith(("head", "dist")):  # ImageNet classifier(s), DeiT distillation token
                skipped.append(key)
                continue
            if key not in own:
                unknown.append(key)
                continue
            if key == "patch_embed.proj.weight" and value.dim() < 4:  # flattened (jx) conv kernel
                value = value.reshape(own[key].shape)
                resized.append(f"{key} reshaped to {tuple(own[key].shape)}")
            elif key == "pos_embed" and value.shape != own[key].shape:
                value, note = self._resample_pos_embed(value, path)
                resized.append(note)
            if value.shape != own[key].shape:
                mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
                continue
            with torch.no_grad():
                own[key].copy_(value)
            loaded.append(key)
        if mismatched:
            raise CheckpointError(
                f"ImageNet weights {path} do not fit MODEL.TRANSFORMER_TYPE's dimensions: {', '.join(mismatched)}; "
                f"pick the TRANSFORMER_TYPE the file was trained with ({_names_with_width(self.embed_dim)})"
            )
        kept = [k for k in own if k not in loaded]
        logger.info(
            "ImageNet weights %s: loaded %d tensors; %s; skipped %s%s; kept at init: %s",
            path,
            len(loaded),
            "; ".join(resized) or "nothing resized",
            ", ".join(skipped) or "none",
            f" and unknown {', '.join(unknown)}" if unknown else "",
            ", ".join(kept) or "none",
        )

    def _check_imagenet_file(self, path: str, state: Mapping[str, torch.Tensor]) -> None:
        if any(k.startswith(("base.", "module.base.")) for k in state):
            raise CheckpointError(
                f"{path} is a TSD checkpoint, not ImageNet ViT weights; load it with MODEL.PRETRAIN_CHOICE self "
                f"(fine-tuning) or TEST.WEIGHT (evaluation)"
            )
        if not any(k.startswith(("blocks.", "patch_embed.")) for k in state):
            raise CheckpointError(
                f"{path} is not a ViT checkpoint (no blocks.* / patch_embed.* tensors); set MODEL.PRETRAIN_PATH to "
                f"ImageNet ViT weights such as jx_vit_base_p16_224-80ecf9dd.pth ({JX_VIT_B16_URL})"
            )
        width_keys = ("cls_token", "pos_embed", "norm.weight", "patch_embed.proj.bias", "blocks.0.norm1.weight")
        width = next((int(state[k].shape[-1]) for k in width_keys if k in state), self.embed_dim)
        if width != self.embed_dim:
            raise CheckpointError(
                f"ImageNet weights {path} have embedding width {width} but the backbone has {self.embed_dim}; "
                f"set MODEL.TRANSFORMER_TYPE to {_names_with_width(width)}"
            )

    def _resample_pos_embed(self, posemb: torch.Tensor, path: str) -> tuple[torch.Tensor, str]:
        """(1, prefix + L, C) ImageNet position embedding -> (1, 1 + num_y * num_x, C)."""
        grid_len = posemb.shape[1]
        # Like the reference, a file whose path says 'distilled' carries DeiT's distillation token at
        # index 1; the token count overrides the path when only one reading gives a square grid.
        one_square, two_square = _is_square(grid_len - 1), _is_square(grid_len - 2)
        distilled = two_square if one_square != two_square else "distilled" in path
        if distilled:
            posemb = torch.cat((posemb[:, :1], posemb[:, 2:]), dim=1)
        side = math.isqrt(posemb.shape[1] - 1)
        if side * side != posemb.shape[1] - 1:
            raise CheckpointError(
                f"{path}: pos_embed has {grid_len} tokens, which is not 1 (or 2) + a square grid; "
                f"it cannot be resampled to {self.num_y}x{self.num_x}"
            )
        # Same numbers as the reference's F.interpolate(bilinear, align_corners=False) of the grid.
        resampled = resample_abs_pos_embed(
            posemb, [self.num_y, self.num_x], num_prefix_tokens=1, interpolation="bilinear", antialias=False
        )
        token_note = ", distillation token dropped" if distilled else ""
        return resampled, f"pos_embed resampled {side}x{side} -> {self.num_y}x{self.num_x}{token_note}"


def _init_vit_weights(m: nn.Module) -> None:
    """TransReID's init: trunc-normal(0.02) Linear weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _names_with_width(width: int) -> str:
    names = [name for name, spec in BACKBONES.items() if spec.embed_dim == width]
    return " or ".join(names) if names else f"a backbone of width {width} (none is registered)"


def build_transreid(
    name: str,
    img_size: Sequence[int],
    stride: Sequence[int],
    drop_path_rate: float = 0.1,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    camera: int = 0,
    view: int = 0,
    sie_coe: float = 3.0,
    local_feature: bool = True,
) -> TransReID:
    """Build a registered TransReID ViT by its ``MODEL.TRANSFORMER_TYPE`` name (see :data:`BACKBONES`)."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown MODEL.TRANSFORMER_TYPE '{name}'; choose one of {sorted(BACKBONES)}")
    return TransReID(
        BACKBONES[name], img_size, stride, drop_path_rate, drop_rate, attn_drop_rate, camera, view, sie_coe,
        local_feature
    )


@contextlib.contextmanager
def fused_attention(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Temporarily switch every timm attention in ``model`` to SDPA (True) or the explicit formula (False)."""
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    previous = [a.fused_attn for a in attns]
    for a in attns:
        a.fused_attn = enabled
    try:
        yield
    finally:
        for a, p in zip(attns, previous):
            a.fused_attn = p


def _unreadable_checkpoint(path: str, exc: Exception) -> CheckpointError:
    """The user error for a checkpoint that ``torch.load(weights_only=True)`` raised ``exc`` on."""
    msg = str(exc).strip()
    if isinstance(exc, pickle.UnpicklingError):
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
        if refused:  # torch.save(model), or a training framework's own classes, instead of a dict of tensors
            return CheckpointError(
                f"checkpoint {path} is not a plain state_dict: it pickles Python objects ({refused.group(1)}) that "
                f"torch.load(weights_only=True) refuses; if you trust the file, re-save its tensors: "
                f"model = torch.load(path, weights_only=False); torch.save(model.state_dict(), path)"
            )
        with open(path, "rb") as f:  # neither a zip archive nor a legacy torch pickle
            head = f.read(16)
        return CheckpointError(f"checkpoint {path} is not a torch checkpoint (it starts with {head!r}); "
                               f"re-download it or check the path")
    first = msg.splitlines()[0].split(". ")[0] if msg else ""
    return CheckpointError(f"cannot read checkpoint {path} ({type(exc).__name__}: {first[:200]}); "
                           f"the file is truncated or damaged: re-download or re-save it")


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: ``torch.load(path, weights_only=True)`` onto the CPU.

    A ``'model'`` entry (DeiT files, our trainer's checkpoints), then a ``'state_dict'`` entry (generic
    training checkpoints) is unwrapped when present; non-tensor entries (epoch counters, ...) are dropped.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file, holds Python objects that
            ``weights_only`` refuses, or is not a dict.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found; check the path (TEST.WEIGHT / MODEL.PRETRAIN_PATH)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError / ... depending on the damage
        raise _unreadable_checkpoint(path, e) from e
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    for wrapper in ("model", "state_dict"):
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}
