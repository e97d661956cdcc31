"""Image decoding and the training (image + part mask) and evaluation transforms (reference §3.5, §3.6).

Both pipelines are torchvision transforms v2 on ``tv_tensors``: an ``Image`` (uint8, resized
bilinearly) and, for training, a ``Mask`` (resized nearest-neighbour, i.e. OpenCV ``INTER_NEAREST``:
source index ``floor(dst * h / H)``) go through the same random flip / pad / crop / erasing.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from utils.errors import DataError

from .masks import add_background, flip_permutation, group_parts

__all__ = ["read_image", "make_resize", "PairedHorizontalFlip", "PairedRandomErasing", "TrainTransform",
           "build_eval_transform"]


def read_image(path: str) -> Tensor:
    """Decode an image file to a (3, h, w) uint8 RGB tensor.

    Raises:
        DataError: the file is missing, truncated or not an image.
    """
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot read image {path} (missing, truncated or not an image); "
                        f"replace the file or delete it from its split folder")
    return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)


class PairedHorizontalFlip(v2.RandomHorizontalFlip):
    """Horizontal flip of image and mask together, optionally reordering the mask's channels.

    The reference flips the masks without swapping left/right parts (bug 9.10); pass
    ``mask_permutation`` (see :func:`datasets.masks.flip_permutation`) to swap them.
    """

    def __init__(self, p: float = 0.5, mask_permutation: Sequence[int] | None = None):
        super().__init__(p)
        self.mask_permutation = list(mask_permutation) if mask_permutation is not None else None

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, params)
        if self.mask_permutation is not None and isinstance(inpt, tv_tensors.Mask):
            out = tv_tensors.wrap(out[..., self.mask_permutation, :, :], like=inpt)
        return out


class PairedRandomErasing(v2.RandomErasing):
    """The reference's ``DualRE``: one rectangle of the image becomes N(0, 1) noise, the mask gets 0 there.

    Rectangle as in timm / Zhong et al.: area ~ U(0.02, 1/3) of the image, aspect ratio log-uniform
    in (0.3, 1/0.3), up to 10 attempts to fit strictly inside, uniform position. Apply it after
    normalisation (the noise lives in normalised space). A zeroed mask pixel becomes background.
    """

    def __init__(self, p: float = 0.5):
        super().__init__(p=p, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), value="random")

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Mask):
            return super().transform(inpt, params)
        if params["v"] is None:  # no rectangle fitted in 10 attempts
            return inpt
        erased = TF.erase_image(inpt.as_subclass(Tensor), params["i"], params["j"], params["h"], params["w"],
                                v=torch.zeros((), dtype=inpt.dtype))
        return tv_tensors.wrap(erased, like=inpt)


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def make_resize(size: Sequence[int]) -> v2.Resize:
    """Resize to ``size`` (H, W): images bilinear, masks nearest-neighbour (``floor(dst * h / H)``).

    No antialiasing: the reference resizes with cv2 INTER_LINEAR, which this matches up to uint8
    rounding (at most 1 grey level); v2 resizes ``Mask`` inputs with ``F.interpolate(mode='nearest')``,
    which is OpenCV's INTER_NEAREST.
    """
    return v2.Resize(list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=False)


class TrainTransform:
    """The reference's joint training augmentation of an image and its PifPaf mask (§3.5).

    resize -> horizontal flip (p ``INPUT.PROB``) -> pad ``INPUT.PADDING`` with 0 + random crop back
    to ``INPUT.SIZE_TRAIN`` -> normalise -> paired random erasing (p ``INPUT.RE_PROB``) -> part
    grouping -> background + softmax.

    The 36 channels are grouped to P parts first, at the mask's own resolution: the max over a
    group commutes with the nearest-neighbour resize, the flip, the crop and the zeroing, so the
    result is bitwise the reference's, for P instead of 36 channels. The background and softmax
    need the final resolution and come last.

    Args:
        size: (H, W) output size; mean, std: normalisation; flip_p, erase_p: probabilities;
        padding: pixels added on each side before the crop; grouping: ``INPUT.MASK_PREPROCESS`` or
        None when no masks are used; swap_lr: swap left/right parts on flip; bg_threshold,
        softmax_weight: :func:`datasets.masks.add_background`.
    """

    def __init__(self, size: Sequence[int], mean: Sequence[float], std: Sequence[float], flip_p: float = 0.5,
                 padding: int = 10, erase_p: float = 0.5, grouping: str | None = None, swap_lr: bool = False,
                 bg_threshold: float = 0.3, softmax_weight: float = 15.0):
        self.grouping = grouping
        self.bg_threshold = bg_threshold
        self.softmax_weight = softmax_weight
        permutation = flip_permutation(grouping) if grouping is not None and swap_lr else None
        self.pipeline = v2.Compose([
            make_resize(size),
            PairedHorizontalFlip(flip_p, permutation),
            v2.RandomCrop(list(size), padding=padding or None, fill=0),
            *_normalise(mean, std),
            PairedRandomErasing(erase_p),
            v2.ToPureTensor(),
        ])

    @classmethod
    def from_cfg(cls, cfg, with_masks: bool) -> "TrainTransform":
        """The transform configured by ``cfg.INPUT`` (masks only if ``with_masks``)."""
        i = cfg.INPUT
        return cls(i.SIZE_TRAIN, i.PIXEL_MEAN, i.PIXEL_STD, i.PROB, i.PADDING, i.RE_PROB,
                   i.MASK_PREPROCESS if with_masks else None, i.FLIP_SWAP_LR, i.MASK_BG_THRESHOLD,
                   i.MASK_SOFTMAX_WEIGHT)

    def __call__(self, image: Tensor, raw_mask: np.ndarray | Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Augment one sample.

        Args:
            image: (3, h, w) uint8 RGB.
            raw_mask: (36, h', w') PifPaf confidence fields (any resolution) or None.

        Returns:
            image (3, H, W) float32 normalised; soft masks (P+1, H, W) float32 (background first)
            summing to 1 per pixel, or None without ``raw_mask``.
        """
        if raw_mask is None or self.grouping is None:
            return self.augment(image, None)
        return self.augment(image, group_parts(torch.as_tensor(raw_mask, dtype=torch.float32), self.grouping))

    def augment(self, image: Tensor, parts: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Augment one sample whose mask is already grouped (the cached path, ``DATALOADER.CACHE``).

        Args:
            image: (3, h, w) uint8 RGB (already at ``size``: the resize is then the identity).
            parts: (P, h', w') grouped part maps (float16 or float32, any resolution) or None.

        Returns:
            as :meth:`__call__`.
        """
        if parts is None or self.grouping is None:
            return self.pipeline(tv_tensors.Image(image)), None
        img, mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(parts.to(torch.float32)))
        return img, add_background(mask, self.bg_threshold, self.softmax_weight)


def build_eval_transform(cfg) -> v2.Compose:
    """Evaluation transform: bilinear resize to ``INPUT.SIZE_TEST`` and normalisation (§3.6).

    Input (3, h, w) uint8 RGB, output (3, H, W) float32. Uses the training resizer, i.e. the
    reference's in-training evaluation; its stand-alone ``test_tsd.py`` resizes with PIL instead
    (bug 9.12), which differs slightly on downscaled images.
    """
    return v2.Compose([make_resize(cfg.INPUT.SIZE_TEST), *_normalise(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD),
                       v2.ToPureTensor()])
