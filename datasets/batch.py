"""The batches the loaders yield, with named fields instead of positional tuples.

A batch flows loader -> (batch transform) -> trainer -> hooks. Each kind carries its own
:meth:`~_Batch.to` (the trainer moves a batch to its device in one call) and :meth:`~_Batch.pin_memory`
(DataLoader's pin-memory thread calls it on any object that has one: with ``pin_memory=True`` the batch
arrives pinned and ``to(device, non_blocking=True)`` overlaps the copy). Fields that are not tensors
(paths, the erasing rectangles as host integers) are kept as they are.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

__all__ = ["TrainBatch", "EvalBatch", "BatchAugment"]


class _Batch:
    """Mixin of the batch dataclasses: copies with every tensor field (nested batches too) mapped."""

    def _map(self, fn: Callable[[Tensor], Tensor]):
        def apply(value: Any) -> Any:
            if isinstance(value, Tensor):
                return fn(value)
            if isinstance(value, _Batch):
                return value._map(fn)
            return value

        return dataclasses.replace(self, **{f.name: apply(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def to(self, device, non_blocking: bool = False):
        """A copy on ``device`` (tensors already there are kept, not copied)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self):
        """A copy in page-locked memory (called by DataLoader's pin-memory thread)."""
        return self._map(Tensor.pin_memory)


@dataclasses.dataclass(eq=False)
class BatchAugment(_Batch):
    """The per-sample augmentation parameters of an ``INPUT.BATCH_AUGMENT`` batch, applied on the
    training device by :class:`datasets.batch_transforms.BatchTrainTransform`.

    Attributes:
        flip: (B,) bool; crop: (B, 2) int64 top / left in the padded image; erase: (B, 4) int64 i / j / h / w
            of the erasing rectangle (h = 0: none); noise: (sum 3*h*w,) float32 erasing values in batch order.
        erase_boxes: the rectangles as host integers (the CPU's erasing loop slices with them without
            reading ``erase`` back); None: read ``erase`` when needed.
        parts: (B, P, h_max, w_max) part maps at the mask's resolution, zero-padded, and part_sizes: (B, 2)
            their (h, w); None without masks.
    """

    flip: Tensor
    crop: Tensor
    erase: Tensor
    noise: Tensor
    erase_boxes: Sequence[tuple[int, int, int, int]] | None = None
    parts: Tensor | None = None
    part_sizes: Tensor | None = None


@dataclasses.dataclass(eq=False)
class TrainBatch(_Batch):
    """A training batch.

    Attributes:
        images: (B, 3, H, W) float32 normalised; uint8 resized but not augmented while ``augment`` is set.
        pids, camids, viewids: (B,) int64.
        masks: (B, P+1, H, W) float32 soft part masks (background first); None for ``MODEL.ARCH vit`` and
            while ``augment`` is set.
        augment: the parameters still to apply (``INPUT.BATCH_AUGMENT``, see :class:`BatchAugment`); None
            once applied, or when the loader augmented per sample.
    """

    images: Tensor
    pids: Tensor
    camids: Tensor
    viewids: Tensor
    masks: Tensor | None = None
    augment: BatchAugment | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclasses.dataclass(eq=False)
class EvalBatch(_Batch):
    """An evaluation batch (query, then gallery, in order).

    Attributes:
        images: (B, 3, H, W) float32 normalised; pids, camids: (B,) int64; occ_labels: (B,) int64
            (0 where the data set has none); paths: the image files.
    """

    images: Tensor
    pids: Tensor
    camids: Tensor
    occ_labels: Tensor
    paths: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]
