"""The TSD model and the ViT baseline (reference ``build_transformer_tsd``, spec sections 4.2-4.5).

Module names, shapes and registration order are the reference's, so its checkpoints load with strict
key matching (``TSD.load_param``). Modules the reference keeps but never runs — the backbone's last
block and ``norm`` (superseded by their ``b1`` copy), ``base.fc`` and ``part_decoder.post_norm`` —
exist for that reason only.

Train-mode outputs of :class:`TSD` (what the losses consume)::

    {'cls_score': {'global', 'cat', 'cat_m', 'aux'[, 'fg']}   (B, num_classes) logits
     'feat': {'global': (B, C), 'part', 'part_m', 'part_md', 'aux': (B, P, C)}   pre-BN
     'visb_logits': (B, P), 'visb_targets': (B, P) float,
     'pixel_logits': (B, N, P+1), 'mask_targets': (B, N) int64}

Eval mode returns ``(features (B, 1+P, C), visibility (B, 1+P))`` (+ the student cross-attention
(B, heads, P+1, N) with ``return_attn=True``); the ViT baseline returns the same with P = 0.

To reproduce a recorded training step, pass the recorded uniform draws as ``teacher_noise``.
"""
from __future__ import annotations

import copy
import logging

import torch
from timm.layers import trunc_normal_
from torch import nn

from utils.errors import ConfigError

from .backbones.vit_pytorch import TransReID, read_checkpoint
from .checkpoint_check import check_checkpoint
from .decoder import PartDecoder
from .heads import TokenClassifier, bnneck, global_weighted_pooling, id_classifier
from .targets import mask_targets

__all__ = ["ViTReID", "TSD"]

logger = logging.getLogger("tsd")


class ViTReID(nn.Module):
    """ViT baseline: TransReID backbone + ``b1`` global branch + BNNeck + identity classifier.

    Also the trunk TSD builds on (same module names, registered first).

    Args:
        backbone: a :class:`TransReID` in ``local_feature`` mode, ImageNet weights already loaded:
            ``b1`` copies its last block and final norm at construction.
        num_classes: training identities.
    """

    def __init__(self, backbone: TransReID, num_classes: int) -> None:
        super().__init__()
        if not backbone.local_feature:
            raise ValueError("the re-ID models need the backbone in local_feature mode")
        self.base = backbone
        self.embed_dim = dim = backbone.embed_dim
        self.b1 = nn.Sequential(copy.deepcopy(backbone.blocks[-1]), copy.deepcopy(backbone.norm))
        self.classifier = id_classifier(dim, num_classes)
        self.bottleneck = bnneck(dim)

    def encode(
        self, x: torch.Tensor, cam_label: torch.Tensor | None = None, view_label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone tokens and global-branch tokens.

        Args:
            x: (B, 3, H, W) images; cam_label / view_label: (B,) int64 (SIE only).

        Returns:
            ``(tokens, global_tokens)``, both (B, 1 + N, C): the backbone output (all blocks but the
            last, no norm) and ``b1`` applied to it (last block + norm).
        """
        tokens = self.base(x, cam_label, view_label)
        return tokens, self.b1(tokens)

    def forward(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        cam_label: torch.Tensor | None = None,
        view_label: torch.Tensor | None = None,
        return_attn: bool = False,
        teacher_noise: torch.Tensor | None = None,
    ) -> dict | tuple[torch.Tensor, ...]:
        """Global branch only (``label``, ``masks`` and ``teacher_noise`` are accepted and ignored).

        Args:
            x: (B, 3, H, W) images; cam_label / view_label: (B,) int64 (SIE only).

        Returns:
            train: ``{'cls_score': {'global': (B, num_classes)}, 'feat': {'global': (B, C) pre-BN}}``;
            eval: ``(features (B, 1, C) after the BNNeck, visibility ones (B, 1))``.
        """
        if return_attn:
            raise ConfigError("MODEL.ARCH vit has no part decoder, so there is no attention to return; "
                              "use MODEL.ARCH tsd")
        feat = self.encode(x, cam_label, view_label)[1][:, 0]
        feat_bn = self.bottleneck(feat)
        if self.training:
            return {"cls_score": {"global": self.classifier(feat_bn)}, "feat": {"global": feat}}
        return feat_bn.unsqueeze(1), feat_bn.new_ones(feat_bn.shape[0], 1)

    def load_param(self, path: str) -> None:
        """Load a checkpoint of this model (TransReID's API name).

        Accepts the reference's flat ``state_dict`` (optionally ``module.``-prefixed) and our trainer's
        checkpoint dict (``'model'`` holds the state dict). Everything that fits is loaded — the
        reference skips every ``*classifier*`` tensor except ``visb_pred.classifier`` (which leaves the
        mask generator ``pixel_classifier`` at init, bug 9.4); here only identity classifiers whose
        number of classes differs are skipped (logged), since they do not affect evaluation.

        Raises:
            CheckpointError: unreadable file, not a checkpoint of this model family, or missing /
                unexpected / mis-shaped tensors (all named, with the config change that fixes them).
        """
        state = {k.removeprefix("module."): v for k, v in read_checkpoint(path).items()}
        own = self.state_dict()
        other_classes = check_checkpoint(path, state, own, self.embed_dim)
        self.load_state_dict({k: v for k, v in state.items() if k not in other_classes}, strict=not other_classes)
        if other_classes:
            logger.info(
                "checkpoint %s: loaded %d tensors; skipped the identity classifiers %s (%d classes in the file, "
                "%d in the model; they do not affect evaluation and are retrained when fine-tuning)",
                path, len(state) - len(other_classes), ", ".join(other_classes),
                state[other_classes[0]].shape[0], own[other_classes[0]].shape[0],
            )
        else:
            logger.info("checkpoint %s: loaded all %d tensors", path, len(state))


class TSD(ViTReID):
    """Teacher-Student Decoder model (ICASSP 2024).

    Args:
        backbone: see :class:`ViTReID`.
        num_classes: training identities.
        num_parts: P (``MODEL.NUM_PARTS``).
        with_fore_head: add the foreground-pooled ID head (``MODEL.WITH_FORE_HEAD``).
        decoder_heads: part-decoder attention heads (``MODEL.DECODER_HEADS``).
        decoder_ffn_dim: part-decoder FFN width (``int(MODEL.DECODER_FFN_RATIO * C)``).
    """

    def __init__(
        self,
        backbone: TransReID,
        num_classes: int,
        num_parts: int,
        with_fore_head: bool = False,
        decoder_heads: int = 8,
        decoder_ffn_dim: int | None = None,
    ) -> None:
        super().__init__(backbone, num_classes)
        dim = self.embed_dim
        self.num_parts = num_parts
        self.with_fore_head = with_fore_head
        self.memory_post_norm = nn.LayerNorm(dim)
        self.part_decoder = PartDecoder(dim, decoder_heads, decoder_ffn_dim or 4 * dim)
        # Row 0 queries the background, rows 1..P the parts.
        self.query_embedding = nn.Embedding(num_parts + 1, dim)
        trunc_normal_(self.query_embedding.weight, std=dim**-0.5)
        self.bottleneck_part = bnneck(dim * num_parts)
        self.classifier_part = id_classifier(dim * num_parts, num_classes)
        self.visb_pred = TokenClassifier(dim, 1)
        self.pixel_classifier = TokenClassifier(dim, num_parts + 1)  # the mask generator
        if with_fore_head:
            self.bottleneck_fg = bnneck(dim)
            self.classifier_fg = id_classifier(dim, num_classes)
        self.bottleneck_partm = bnneck(dim * num_parts)
        self.classifier_partm = id_classifier(dim * num_parts, num_classes)

    def decoder_inputs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder queries and memory from the backbone tokens.

        Args:
            tokens: (B, 1 + N, C) backbone output (before ``b1``).

        Returns:
            ``(query (B, P + 2, C), memory (B, N, C))``: query = [detached cls, background and part
            embeddings], both from ``memory_post_norm(tokens)``.
        """
        normed = self.memory_post_norm(tokens)
        queries = self.query_embedding.weight.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return torch.cat((normed[:, :1].detach(), queries), dim=1), normed[:, 1:]

    @staticmethod
    def teacher_mask(pixel_probs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample the teacher's cross-attention mask from the predicted part probabilities.

        Args:
            pixel_probs: (B, N, P + 1) softmax of the pixel logits (channel 0 = background).
            noise: (B, N, P + 1) uniform draws U; default ``torch.rand_like(pixel_probs)``.

        Returns:
            (B, P + 1, N) float 0/1: query k may attend to token n iff ``U[b, n, k] < pixel_probs[b, n, k]``.
        """
        if noise is None:
            noise = torch.rand_like(pixel_probs)
        return (noise < pixel_probs).to(pixel_probs.dtype).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        label: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        cam_label: torch.Tensor | None = None,
        view_label: torch.Tensor | None = None,
        return_attn: bool = False,
        teacher_noise: torch.Tensor | None = None,
    ) -> dict | tuple[torch.Tensor, ...]:
        """Run TSD.

        Args:
            x: (B, 3, H, W) images.
            label: (B,) identities; unused (the softmax classifiers need none), kept for TransReID's API.
            masks: (B, P + 1, H, W) soft part masks (channel 0 = background); required in train mode.
            cam_label, view_label: (B,) int64, used when the SIE is on.
            return_attn: eval mode: also return the student cross-attention.
            teacher_noise: (B, N, P + 1) uniform draws for the teacher mask (see :meth:`teacher_mask`).

        Returns:
            train: the dict described in the module docstring;
            eval: ``(features (B, 1 + P, C), visibility (B, 1 + P))`` [+ ``cross_attn (B, heads, P + 1, N)``],
            features after the BNNecks, visibility = [1, sigmoid(visb_logit) > 0.5].
        """
        tokens, global_tokens = self.encode(x, cam_label, view_label)
        global_feat, patches = global_tokens[:, 0], global_tokens[:, 1:]
        query, memory = self.decoder_inputs(tokens)
        student, student_attn = self.part_decoder(query, memory)
        part = student[:, 1:]
        # The student pass must reach bottleneck_part before the teacher pass: its running statistics
        # are updated by both, in this order (reference).
        part_bn = self.bottleneck_part(part.flatten(1))
        visb_logits = self.visb_pred(part)[..., 0]
        if not self.training:
            feats = torch.cat((self.bottleneck(global_feat).unsqueeze(1), part_bn.view_as(part)), dim=1)
            visible = (visb_logits.sigmoid() > 0.5).to(feats.dtype)
            vis = torch.cat((visible.new_ones(visible.shape[0], 1), visible), dim=1)
            return (feats, vis, student_attn) if return_attn else (feats, vis)
        if masks is None:
            raise ValueError("TSD training needs the part masks (B, P + 1, H, W)")

        pixel_logits = self.pixel_classifier(patches)
        pixel_probs = pixel_logits.softmax(dim=-1)
        part_probs = pixel_probs[..., 1:]
        teacher, _ = self.part_decoder(query, memory, self.teacher_mask(pixel_probs, teacher_noise))
        aux = teacher[:, 1:]
        part_m = global_weighted_pooling(patches, part_probs)
        targets, visible = mask_targets(masks, self.base.num_y, self.base.num_x)
        cls_score = {
            "global": self.classifier(self.bottleneck(global_feat)),
            "cat": self.classifier_part(part_bn),
            "cat_m": self.classifier_partm(self.bottleneck_partm(part_m.flatten(1))),
            "aux": self.classifier_part(self.bottleneck_part(aux.flatten(1))),
        }
        if self.with_fore_head:
            fg = global_weighted_pooling(patches, part_probs.sum(dim=-1, keepdim=True))[:, 0]
            cls_score["fg"] = self.classifier_fg(self.bottleneck_fg(fg))
        feat = {
            "global": global_feat,
            "part": part,
            "part_m": part_m,
            "part_md": global_weighted_pooling(patches, part_probs.detach()),  # diversity loss only
            "aux": aux,
        }
        return {
            "cls_score": cls_score,
            "feat": feat,
            "visb_logits": visb_logits,
            "visb_targets": visible[:, 1:].to(visb_logits.dtype),
            "pixel_logits": pixel_logits,
            "mask_targets": targets,
        }
