"""Human-parsing masks: reading and checking mask files, part grouping, soft masks and token targets.

The masks are bpbreid's "PifPaf confidence fields filtered with Mask R-CNN": one ``.npy`` array of
shape (36, h, w) per training image, usually at a lower resolution than the image (reference §3.3).
The 36 channels are grouped into P body parts by a per-pixel maximum (§3.4); a background channel
is synthesised where no part is confident, and a softmax turns the P+1 maps into a per-pixel
distribution (§3.5 step 9); the model derives its pixel classifier's targets from these soft masks
(:func:`model.targets.mask_targets`). The channel names and part groupings are :mod:`config.parts`',
the file locations the torch-free :mod:`datasets.mask_layout`'s (the mask maker's environment has
no torch), re-exported here.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from config.parts import NUM_CHANNELS, PART_GROUPINGS
from utils.errors import DataError

from .mask_layout import MASK_SOURCE_HINT, MASK_SUBDIR, find_mask, mask_candidates, require_mask

__all__ = [
    "MASK_SUBDIR", "MASK_SOURCE_HINT", "mask_candidates", "find_mask", "require_mask", "read_mask_header",
    "check_mask_values", "load_mask", "group_parts", "add_background",
]


def _check_shape(path: str, shape: Sequence[int]) -> None:
    if len(shape) != 3 or shape[0] != NUM_CHANNELS or min(shape) < 1:
        raise DataError(
            f"mask file {path} has shape {tuple(shape)}, expected ({NUM_CHANNELS}, h, w) PifPaf confidence fields; "
            f"{MASK_SOURCE_HINT}"
        )


def _check_dtype(path: str, dtype: np.dtype) -> None:
    if dtype.hasobject:  # np.save of an object array: the payload is a pickle, which can run any code
        raise DataError(f"mask file {path} holds pickled Python objects (dtype {dtype}); mask files are read "
                        f"without pickle, so it is never loaded: replace it with a float array of confidences")
    if dtype.kind != "f":
        raise DataError(f"mask file {path} has dtype {dtype}, expected float16/float32 confidences in [0, 1]; "
                        f"{MASK_SOURCE_HINT}")


def read_mask_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` of a mask file from its ``.npy`` header alone (no data read, no pickle).

    Checks what can be checked without the data: a readable ``.npy`` header, a floating dtype, the
    (36, h, w) shape, and a file size that holds all of the array (a truncated copy is caught here).

    Raises:
        DataError: naming the file and what is wrong with it.
    """
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):  # 3.0 only changes the header's text encoding
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            data_start, size = f.tell(), os.fstat(f.fileno()).st_size
    except (OSError, ValueError, EOFError) as e:  # unreadable, not an .npy file, damaged header
        raise DataError(f"cannot read mask file {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"{MASK_SOURCE_HINT}") from e
    _check_dtype(path, dtype)
    _check_shape(path, shape)
    expected = data_start + int(np.prod(shape)) * dtype.itemsize
    if size < expected:
        raise DataError(f"cannot read mask file {path}: it is truncated ({size} of {expected} bytes of a "
                        f"{tuple(shape)} {dtype} .npy); copy it again. {MASK_SOURCE_HINT}")
    return tuple(shape), dtype


# Confidences are in [0, 1]; the slack absorbs float16 rounding (group_parts clamps to [0, 1] anyway).
MASK_VALUE_TOLERANCE = 1e-2


def check_mask_values(path: str, arr: np.ndarray) -> None:
    """Raise :class:`DataError` naming ``path`` when ``arr`` holds NaN / inf or values outside [0, 1].

    Two reductions over a small array (min and max; NaN propagates through both), ~10 us per mask.
    """
    lo, hi = float(arr.min()), float(arr.max())
    if -MASK_VALUE_TOLERANCE <= lo and hi <= 1 + MASK_VALUE_TOLERANCE:
        return
    if np.isnan(lo) or np.isnan(hi):
        what = f"NaN in {int(np.isnan(arr).sum())} of {arr.size} values"
    elif np.isinf(lo) or np.isinf(hi):
        what = f"inf in {int(np.isinf(arr).sum())} of {arr.size} values"
    else:
        what = f"values in [{lo:g}, {hi:g}]"
    raise DataError(f"mask file {path} has {what}, expected confidences in [0, 1] (a broken export, or maps "
                    f"saved as 0-255 or logits); regenerate the file or delete its image from the split")


def load_mask(path: str, mmap: bool = False) -> np.ndarray:
    """Read a (36, h, w) mask file as float32, without pickle (with ``mmap`` only the header is read; dtype kept).

    Raises:
        DataError: the file is missing, unreadable, not a (36, h, w) float array, or (when read
            completely) holds NaN / inf / values outside [0, 1].
    """
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # missing, truncated, empty, pickled or not an .npy file
        if "allow_pickle" in str(e):
            _check_dtype(path, np.dtype(object))
        raise DataError(f"cannot read mask file {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"{MASK_SOURCE_HINT}") from e
    _check_dtype(path, arr.dtype)
    _check_shape(path, arr.shape)
    if mmap:
        return arr
    check_mask_values(path, arr)
    return arr.astype(np.float32, copy=False)


def group_parts(masks: Tensor, grouping: str) -> Tensor:
    """Group PifPaf channels into parts: per-pixel max over each group's channels, clamped to [0, 1].

    Args:
        masks: (..., 36, h, w) confidence fields.
        grouping: key of :data:`config.parts.PART_GROUPINGS`.

    Returns:
        (..., P, h, w) part maps, same dtype. Max commutes with nearest-neighbour resizing, flips,
        crops and zeroing, so grouping at the source resolution first is exact and 36/P times cheaper.
    """
    groups = PART_GROUPINGS[grouping].values()
    return torch.stack([masks[..., list(g), :, :].amax(dim=-3) for g in groups], dim=-3).clamp_(0.0, 1.0)


def add_background(parts: Tensor, threshold: float, softmax_weight: float) -> Tensor:
    """Soft part masks with a synthesised background channel (the reference's ``AddBackgroundMask``).

    background = 1 where ``max_k part_k < threshold`` (strict) else 0, stacked first; then a softmax
    over channels of ``softmax_weight * masks`` (or, when the weight is 0, division by the channel sum,
    which is >= threshold everywhere by construction).

    Args:
        parts: (..., P, H, W) grouped part maps in [0, 1].

    Returns:
        (..., P+1, H, W) per-pixel distribution over [background, part 1..P].
    """
    background = (parts.amax(dim=-3, keepdim=True) < threshold).to(parts.dtype)
    masks = torch.cat([background, parts], dim=-3)
    if softmax_weight > 0:
        return torch.softmax(softmax_weight * masks, dim=-3)
    return masks / masks.sum(dim=-3, keepdim=True)
