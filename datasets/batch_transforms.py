"""The training augmentation as one batched transform, run after the host->device transfer.

``INPUT.BATCH_AUGMENT``: a loader worker no longer augments. It ships the resized uint8 image, the
grouped part maps at the mask's own resolution and the sample's augmentation parameters, drawn by
:class:`AugmentParams` from the sample seed exactly as :class:`datasets.transforms.TrainTransform`
draws them (same v2 transforms, same RNG calls, same order). :class:`BatchTrainTransform` then applies
flip, pad + crop, ``ToDtype`` + ``Normalize``, random erasing and the mask background + softmax to the
whole batch on the training device. On the CPU the result is bitwise the per-sample pipeline's
(``tests/test_batch_transforms.py``), including the erasing noise, which is drawn in the worker.

Why it is cheap: the full-resolution mask of the per-sample path is a nearest-neighbour resize of the
low-resolution part maps, flipped, cropped and zeroed (padding, erasing). Background + softmax act on
each pixel alone, so they are computed once per low-resolution pixel plus one all-zero vector, and the
full-resolution soft mask is a gather with an index map.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from config.parts import flip_permutation

from .batch import BatchAugment, TrainBatch
from .masks import add_background
from .transforms import PairedRandomErasing

__all__ = ["AugmentParams", "batch_collate", "BatchTrainTransform"]

Params = dict[str, Any]


class _Recorder:
    """Mixin for a v2 transform: ``transform()`` stores its parameters and leaves the input alone.

    ``forward()`` (the RNG calls: whether to apply, ``make_params``) is the transform's own, so the
    draws are those of the per-sample pipeline.
    """

    def transform(self, inpt: Any, params: Params) -> Any:
        self.__dict__["recorded"] = params  # not Module.__setattr__: it costs ~20 us a call
        return inpt


class _FlipParams(_Recorder, v2.RandomHorizontalFlip):
    pass


class _CropParams(_Recorder, v2.RandomCrop):
    pass


class _EraseParams(_Recorder, PairedRandomErasing):
    pass


class AugmentParams:
    """Draws one sample's flip / crop / erasing parameters from torch's global CPU RNG.

    The draws equal those of ``TrainTransform(size, ..., flip_p, padding, erase_p)`` run under the
    same RNG state: the same v2 transform classes run on a zero-size stand-in of the (3, H, W) image
    (v2 reads only the input's size), recording their parameters instead of applying them.

    Args:
        size: (H, W) of the resized image; flip_p, padding, erase_p: ``INPUT.PROB``, ``INPUT.PADDING``,
            ``INPUT.RE_PROB``.
    """

    def __init__(self, size: Sequence[int], flip_p: float, padding: int, erase_p: float):
        self.size = tuple(size)
        self.flip = _FlipParams(flip_p)
        self.crop = _CropParams(list(size), padding=padding or None, fill=0)
        self.erase = _EraseParams(erase_p)
        # Stride-0 view: v2 queries the shape, and nothing is ever read from or written to it.
        self.stand_in = tv_tensors.Image(torch.zeros((), dtype=torch.uint8).expand(3, *self.size))

    def __call__(self) -> Params:
        """``{'flip': bool, 'top', 'left': crop offsets in the padded image, 'erase': (i, j, h, w)
        (all 0 when not erased), 'noise': (3*h*w,) float32 erasing values}``."""
        for t in (self.flip, self.crop, self.erase):
            t.__dict__["recorded"] = None
            t(self.stand_in)
        crop, erase = self.crop.recorded, self.erase.recorded
        if erase is None or erase["v"] is None:  # not applied, or no rectangle fitted in 10 attempts
            rect, noise = (0, 0, 0, 0), torch.empty(0)
        else:
            rect, noise = (erase["i"], erase["j"], erase["h"], erase["w"]), erase["v"].reshape(-1)
        return {"flip": self.flip.recorded is not None, "top": crop["top"], "left": crop["left"], "erase": rect,
                "noise": noise}


def batch_collate(batch) -> TrainBatch:
    """Collate ``(uint8 image (3,H,W), pid, camid, viewid, parts (P,h,w) or None, params)`` samples.

    Returns:
        A :class:`TrainBatch` of uint8 images (B,3,H,W) whose ``augment`` holds the samples' parameters
        (:class:`BatchAugment`; with masks, the part maps zero-padded to the largest ``(h, w)``).
    """
    imgs, pids, camids, viewids, parts, params = zip(*batch)
    aug = BatchAugment(
        flip=torch.tensor([p["flip"] for p in params]),
        crop=torch.tensor([(p["top"], p["left"]) for p in params]),
        erase=torch.tensor([p["erase"] for p in params]),
        noise=torch.cat([p["noise"] for p in params]),
        # The same rectangles as host integers: the CPU's erasing loop slices with them without reading
        # the (by then device) tensor back.
        erase_boxes=[tuple(p["erase"]) for p in params],
    )
    if parts[0] is not None:
        sizes = torch.tensor([m.shape[-2:] for m in parts])
        h_max, w_max = sizes.amax(0).tolist()
        padded = parts[0].new_zeros((len(parts), parts[0].shape[0], h_max, w_max))
        for out, m in zip(padded, parts):
            out[:, :m.shape[1], :m.shape[2]] = m
        aug.parts, aug.part_sizes = padded, sizes
    return TrainBatch(torch.stack(imgs), torch.tensor(pids), torch.tensor(camids), torch.tensor(viewids), augment=aug)


def nearest_source_index(out_index: Tensor, in_size: Tensor, out_size: int) -> Tensor:
    """Source index of a nearest-neighbour resize from ``in_size`` to ``out_size`` (per sample).

    ATen's ``nearest`` mode in float32: ``min(floor(dst * (float(in) / out)), in - 1)``, the index
    ``F.interpolate`` (and thus v2's mask resize) uses, so the gather below is bitwise its result.

    Args:
        out_index: (B, n) int64 destination indices; in_size: (B,) int64.
    """
    scale = in_size.to(torch.float32) / out_size
    src = torch.floor(out_index.to(torch.float32) * scale[:, None]).to(torch.int64)
    return torch.minimum(src, in_size[:, None] - 1)


class BatchTrainTransform:
    """The per-sample training augmentation applied to a whole batch (see the module docstring).

    Args: as :class:`datasets.transforms.TrainTransform` (``flip_p`` / ``erase_p`` are used by
    :class:`AugmentParams` in the workers; ``grouping`` None: no masks).
    """

    # None: vectorised erasing on accelerators, a loop over the rectangles on the CPU (see _Erasing).
    vectorised_erasing: bool | None = None

    def __init__(self, size: Sequence[int], mean: Sequence[float], std: Sequence[float], padding: int = 10,
                 grouping: str | None = None, swap_lr: bool = False, bg_threshold: float = 0.3,
                 softmax_weight: float = 15.0):
        self.size = tuple(size)
        self.mean, self.std = list(mean), list(std)
        self.padding = padding
        self.bg_threshold, self.softmax_weight = bg_threshold, softmax_weight
        self.permutation = flip_permutation(grouping) if grouping is not None and swap_lr else None
        self._constants: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @classmethod
    def from_cfg(cls, cfg, with_masks: bool) -> BatchTrainTransform:
        """The transform configured by ``cfg.INPUT`` (masks only if ``with_masks``)."""
        i = cfg.INPUT
        return cls(i.SIZE_TRAIN, i.PIXEL_MEAN, i.PIXEL_STD, i.PADDING, i.MASK_PREPROCESS if with_masks else None,
                   i.FLIP_SWAP_LR, i.MASK_BG_THRESHOLD, i.MASK_SOFTMAX_WEIGHT)

    def __call__(self, batch: TrainBatch) -> TrainBatch:
        """Augment a :func:`batch_collate` batch (already on the training device).

        Returns:
            The batch with float32 normalised images, soft masks (B,P+1,H,W) float32 (None without masks)
            and no ``augment``: what :func:`datasets.make_dataloader.train_collate` gives for the per-sample path.
        """
        imgs, aug = batch.images, batch.augment
        b, (h, w) = imgs.shape[0], self.size
        dev = imgs.device
        # Output pixel (y, x) shows pixel (row, col) of the flipped, resized image, or padding.
        row = aug.crop[:, :1] + torch.arange(h, device=dev) - self.padding  # (B, H)
        col = aug.crop[:, 1:] + torch.arange(w, device=dev) - self.padding  # (B, W)
        row_in, col_in = (row >= 0) & (row < h), (col >= 0) & (col < w)
        row, col = row.clamp(0, h - 1), col.clamp(0, w - 1)
        col = torch.where(aug.flip[:, None], w - 1 - col, col)  # column in the unflipped image

        # Flip + pad-crop is separable: a column gather, then whole rows (row copies). Padding pixels
        # come from an appended zero row / column (index h / w).
        padded = F.pad(imgs, (0, 1, 0, 1))  # (B, 3, H+1, W+1)
        columns = torch.where(col_in, col, w)[:, None, None, :].expand(b, 3, h + 1, w)
        pixels = _take_rows(padded.gather(3, columns), torch.where(row_in, row, h))
        # v2.ToDtype(scale=True) + v2.Normalize, operation for operation.
        mean, std = self._mean_std(dev)
        out = pixels.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)
        erasing = _Erasing(aug.erase, self.size, self.vectorised_erasing, aug.erase_boxes)
        erasing.fill(out, aug.noise)

        masks = None
        if aug.parts is not None:
            masks = self._soft_masks(aug, row, col, row_in, col_in, erasing)
        return dataclasses.replace(batch, images=out, masks=masks, augment=None)

    def _mean_std(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(1, 3, 1, 1) float32 mean and std on ``device``, copied there once (not every step)."""
        if device not in self._constants:
            self._constants[device] = tuple(torch.tensor(v, device=device).view(1, 3, 1, 1)
                                            for v in (self.mean, self.std))
        return self._constants[device]

    def _soft_masks(self, aug: BatchAugment, row: Tensor, col: Tensor, row_in: Tensor, col_in: Tensor,
                    erasing: _Erasing) -> Tensor:
        """(B, P+1, H, W) soft masks: background + softmax of the low-resolution parts, gathered.

        Args:
            row, col: (B, H), (B, W) pixel of the resized unflipped image each output pixel shows;
            row_in, col_in: False for padding rows / columns; erasing: the rectangles.
            The per-sample mask is zero outside and in the rectangle: the softmax of a zero vector.
        """
        parts = aug.parts.to(torch.float32)  # (B, P, h, w), exact from float16
        if self.permutation is not None:  # swap left/right parts before the softmax, as the per-sample path
            parts = torch.where(aug.flip[:, None, None, None], parts[:, self.permutation], parts)
        mh, mw = parts.shape[-2:]
        # One zero row and column (index mh, mw) for the pixels outside the image.
        soft = add_background(F.pad(parts, (0, 1, 0, 1)), self.bg_threshold, self.softmax_weight)
        b, c = soft.shape[:2]
        h, w = self.size
        sizes = aug.part_sizes
        src_row = torch.where(row_in, nearest_source_index(row, sizes[:, 0], h), mh)  # (B, H)
        src_col = torch.where(col_in, nearest_source_index(col, sizes[:, 1], w), mw)  # (B, W)
        masks = _take_rows(soft.gather(3, src_col[:, None, None, :].expand(b, c, mh + 1, w)), src_row)
        erasing.fill(masks, soft[:, :, mh, mw])
        return masks


class _Erasing:
    """The erasing rectangles of a batch, ``erase`` (B, 4) i/j/h/w (h = 0: none) in a (H, W) image.

    On the GPU one vectorised pass over the batch; on the CPU, where a pass over the whole batch costs
    more than a few small copies, a loop over the erased samples, slicing with ``boxes`` (the same
    rectangles as host integers, from the collate) when given. Both write the same values.
    """

    def __init__(self, erase: Tensor, size: Sequence[int], vectorised: bool | None = None,
                 boxes: Sequence[Sequence[int]] | None = None):
        self.erase, self.size, self.boxes = erase, tuple(size), boxes
        self.loop = erase.device.type == "cpu" if vectorised is None else not vectorised
        if not self.loop:
            i, j, eh, ew = erase.unbind(1)
            ys, xs = (torch.arange(n, device=erase.device) for n in self.size)
            self.inside = (((ys >= i[:, None]) & (ys < (i + eh)[:, None]))[:, :, None]
                           & ((xs >= j[:, None]) & (xs < (j + ew)[:, None]))[:, None, :])[:, None]  # (B, 1, H, W)

    def fill(self, x: Tensor, values: Tensor) -> None:
        """Write ``values`` into the rectangles of ``x`` (B, C, H, W), in place: either (B, C) -- one
        value per sample and channel -- or the concatenated (C, h, w) blocks of the erased samples
        (a flat tensor; the order in which v2's erasing would write them)."""
        b, c = x.shape[:2]
        per_channel = values.dim() == 2
        if not self.loop:
            if per_channel:
                x.copy_(torch.where(self.inside, values[:, :, None, None], x))
            else:  # the True positions of the mask, in memory order, are the blocks' elements in order
                x.masked_scatter_(self.inside.expand(b, c, *self.size), values)
            return
        offset = 0
        for k, (i, j, eh, ew) in enumerate(self.boxes if self.boxes is not None else self.erase.tolist()):
            if eh == 0:
                continue
            if per_channel:
                x[k, :, i:i + eh, j:j + ew] = values[k, :, None, None]
            else:
                x[k, :, i:i + eh, j:j + ew] = values[offset:offset + c * eh * ew].view(c, eh, ew)
                offset += c * eh * ew


def _take_rows(x: Tensor, rows: Tensor) -> Tensor:
    """``out[b, c, y] = x[b, c, rows[b, y]]`` for x (B, C, h, W) and rows (B, H): (B, C, H, W)."""
    b, c, h, w = x.shape
    base = torch.arange(b * c, device=x.device).view(b, c, 1) * h
    return x.reshape(b * c * h, w).index_select(0, (base + rows[:, None, :]).flatten()).view(b, c, -1, w)
