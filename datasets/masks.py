"""Human-parsing masks: PifPaf channels, part groupings, file lookup, soft masks and token targets.

The masks are bpbreid's "PifPaf confidence fields filtered with Mask R-CNN": one ``.npy`` array of
shape (36, h, w) per training image, usually at a lower resolution than the image (reference §3.3).
The 36 channels are grouped into P body parts by a per-pixel maximum (§3.4); a background channel
is synthesised where no part is confident, and a softmax turns the P+1 maps into a per-pixel
distribution (§3.5 step 9). The model supervises its pixel classifier with :func:`mask_targets`.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from utils.errors import DataError

__all__ = [
    "PIFPAF_PARTS", "PART_GROUPINGS", "MASK_SUBDIR", "MASK_SOURCE_HINT", "part_names", "mask_candidates",
    "find_mask", "require_mask", "read_mask_header", "check_mask_values", "load_mask", "group_parts",
    "flip_permutation", "add_background", "mask_targets",
]

# Channel order of the mask files: the 17 COCO keypoints, then 19 limb ("joint") fields.
PIFPAF_PARTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
    "left_ankle_to_left_knee", "left_knee_to_left_hip", "right_ankle_to_right_knee", "right_knee_to_right_hip",
    "left_hip_to_right_hip", "left_shoulder_to_left_hip", "right_shoulder_to_right_hip",
    "left_shoulder_to_right_shoulder", "left_shoulder_to_left_elbow", "right_shoulder_to_right_elbow",
    "left_elbow_to_left_wrist", "right_elbow_to_right_wrist", "left_eye_to_right_eye", "nose_to_left_eye",
    "nose_to_right_eye", "left_eye_to_left_ear", "right_eye_to_right_ear", "left_ear_to_left_shoulder",
    "right_ear_to_right_shoulder",
)

_HEAD = (0, 1, 2, 3, 4, 29, 30, 31, 32, 33, 34, 35)
_LEFT_ARM = (5, 7, 9, 25, 27)
_RIGHT_ARM = (6, 8, 10, 26, 28)
_TORSO = (11, 12, 21, 22, 23, 24)
_LEFT_LEG = (13, 17, 18, 21)  # 21 (hip-hip) is also in the torso: exact ties, argmax picks the torso
_RIGHT_LEG = (14, 19, 20)
_LEFT_FEET = (15,)
_RIGHT_FEET = (16,)

# INPUT.MASK_PREPROCESS -> {group name: source channels}. Dict order is the part index 1..P
# (0 is the background); names and order are the reference's (mask_config.py).
PART_GROUPINGS: dict[str, dict[str, tuple[int, ...]]] = {
    "eight": {
        "head_mask": _HEAD, "left_arm_mask": _LEFT_ARM, "right_arm_mask": _RIGHT_ARM, "torso_mask": _TORSO,
        "left_leg_mask": _LEFT_LEG, "right_leg_mask": _RIGHT_LEG, "left_feet_mask": _LEFT_FEET,
        "right_feet_mask": _RIGHT_FEET,
    },
    "five": {
        "head_mask": _HEAD, "arm_mask": _LEFT_ARM + _RIGHT_ARM, "torso_mask": _TORSO,
        "leg_mask": _LEFT_LEG + _RIGHT_LEG, "feet_mask": _LEFT_FEET + _RIGHT_FEET,
    },
    "three": {
        "head_mask": _HEAD, "upper_body_mask": _LEFT_ARM + _RIGHT_ARM + _TORSO,
        "lower_body_mask": _LEFT_LEG + _RIGHT_LEG + _LEFT_FEET + _RIGHT_FEET,
    },
    "one": {"fg": _HEAD + _LEFT_ARM + _RIGHT_ARM + _TORSO + _LEFT_LEG + _RIGHT_LEG + _LEFT_FEET + _RIGHT_FEET},
}

NUM_CHANNELS = len(PIFPAF_PARTS)
# Masks of <root>/<dataset>/<split>/<img> live in <root>/<dataset>/MASK_SUBDIR/<split>/.
MASK_SUBDIR = os.path.join("masks", "pifpaf_maskrcnn_filtering")
MASK_SOURCE_HINT = (
    "the masks are bpbreid's 'PifPaf confidence fields filtered with Mask R-CNN' (download link in the "
    "README of github.com/VlSomers/bpbreid); `.venv/bin/python tools/make_synthetic_data.py` makes a synthetic "
    "data set with masks"
)


def part_names(grouping: str) -> list[str]:
    """Names of the P parts of ``grouping`` in part-index order (1..P)."""
    return list(PART_GROUPINGS[grouping])


def mask_candidates(img_path: str) -> list[str]:
    """Paths where the mask of ``img_path`` may live, in lookup order.

    ``<dataset>/<split>/<stem>.jpg`` -> ``<dataset>/masks/pifpaf_maskrcnn_filtering/<split>/`` +
    ``<stem>.npy`` (TSD's naming; stem = file name up to its first '.') or
    ``<stem>.jpg.confidence_fields.npy`` (bpbreid's Occluded-Duke naming).
    """
    split_dir = os.path.dirname(img_path)
    mask_dir = os.path.join(os.path.dirname(split_dir), MASK_SUBDIR, os.path.basename(split_dir))
    name = os.path.basename(img_path)
    return [os.path.join(mask_dir, name.split(".")[0] + ".npy"),
            os.path.join(mask_dir, name + ".confidence_fields.npy")]


def find_mask(img_path: str) -> str | None:
    """The existing mask file of ``img_path`` (see :func:`mask_candidates`), or None."""
    return next((p for p in mask_candidates(img_path) if os.path.isfile(p)), None)


def require_mask(img_path: str) -> str:
    """The existing mask file of ``img_path``.

    Raises:
        DataError: naming the image and the paths looked at, when there is none.
    """
    path = find_mask(img_path)
    if path is None:
        raise DataError(f"no part mask for {img_path}; looked for {' and '.join(mask_candidates(img_path))}")
    return path


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
        grouping: key of :data:`PART_GROUPINGS`.

    Returns:
        (..., P, h, w) part maps, same dtype. Max commutes with nearest-neighbour resizing, flips,
        crops and zeroing, so grouping at the source resolution first is exact and 36/P times cheaper.
    """
    groups = PART_GROUPINGS[grouping].values()
    return torch.stack([masks[..., list(g), :, :].amax(dim=-3) for g in groups], dim=-3).clamp_(0.0, 1.0)


def flip_permutation(grouping: str) -> list[int] | None:
    """Part order after a horizontal flip that swaps left/right groups, or None if none are sided.

    Only ``eight`` has sided groups (arms, legs, feet). Note the reference's left leg holds the
    hip-hip field (21) and the right leg does not, so a swap is not a perfect mirror of the channels.
    """
    names = part_names(grouping)

    def mirror(name: str) -> str:
        swapped = name.replace("left_", "\0").replace("right_", "left_").replace("\0", "right_")
        return swapped if swapped in names else name

    perm = [names.index(mirror(n)) for n in names]
    return None if perm == list(range(len(names))) else perm


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


def mask_targets(masks: Tensor, num_y: int, num_x: int) -> tuple[Tensor, Tensor]:
    """Per-token part labels and part visibility for the pixel classifier (reference §4.4, bug 9.11).

    The soft masks are point-sampled to the patch grid (bilinear, ``align_corners=True``), the label
    of a token is the argmax channel (exact ties go to the lower index), and a channel is visible
    when it wins at least one token.

    Args:
        masks: (B, P+1, H, W) soft masks from :func:`add_background`.
        num_y, num_x: patch grid (rows, cols); N = num_y * num_x.

    Returns:
        targets (B, N) int64 in [0, P] (row-major tokens), visibility (B, P+1) bool.
    """
    small = F.interpolate(masks, size=(num_y, num_x), mode="bilinear", align_corners=True)
    targets = small.argmax(dim=1).flatten(1)
    visibility = F.one_hot(targets, masks.shape[1]).amax(dim=1).bool()
    return targets, visibility
