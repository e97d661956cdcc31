"""The layout of part-mask files, free of torch: channel names, part groupings and where a mask lives.

The masks are bpbreid's "PifPaf confidence fields filtered with Mask R-CNN": one ``.npy`` array of
shape (36, h, w) per image (reference §3.3). This module owns the facts a mask file's reader and
writer share, and imports nothing heavier than the standard library, so that ``tools/make_masks.py``
runs in its own environment without torch (the readers and the torch transforms are in
:mod:`datasets.masks`).
"""
from __future__ import annotations

import os

from utils.errors import DataError

__all__ = [
    "PIFPAF_PARTS", "NUM_KEYPOINTS", "PIFPAF_LIMBS", "PART_GROUPINGS", "NUM_CHANNELS", "MASK_SUBDIR",
    "MASK_SOURCE_HINT", "part_names", "mask_stem", "mask_candidates", "find_mask", "require_mask",
]

# Channel order of the mask files: the 17 COCO keypoints, then 19 limb ("joint") fields, PifPaf's
# COCO skeleton in its order; a limb channel is named "<keypoint>_to_<keypoint>".
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
NUM_KEYPOINTS = 17
# (keypoint, keypoint) channel indices of each limb channel, read off its name.
PIFPAF_LIMBS: tuple[tuple[int, int], ...] = tuple(
    (PIFPAF_PARTS.index(a), PIFPAF_PARTS.index(b))
    for a, b in (name.split("_to_") for name in PIFPAF_PARTS[NUM_KEYPOINTS:]))

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
    "README of github.com/VlSomers/bpbreid); `make masks` makes them for your own images with a pose model "
    "(README: 'Part masks for your own data'); `.venv/bin/python tools/make_synthetic_data.py` makes a "
    "synthetic data set with masks"
)


def part_names(grouping: str) -> list[str]:
    """Names of the P parts of ``grouping`` in part-index order (1..P)."""
    return list(PART_GROUPINGS[grouping])


def mask_stem(image_name: str) -> str:
    """File name of the mask of image ``image_name`` (TSD's naming: the name up to its first '.', + ``.npy``)."""
    return os.path.basename(image_name).split(".")[0] + ".npy"


def mask_candidates(img_path: str) -> list[str]:
    """Paths where the mask of ``img_path`` may live, in lookup order.

    ``<dataset>/<split>/<stem>.jpg`` -> ``<dataset>/masks/pifpaf_maskrcnn_filtering/<split>/`` +
    ``<stem>.npy`` (TSD's naming; stem = file name up to its first '.') or
    ``<stem>.jpg.confidence_fields.npy`` (bpbreid's Occluded-Duke naming).
    """
    split_dir = os.path.dirname(img_path)
    mask_dir = os.path.join(os.path.dirname(split_dir), MASK_SUBDIR, os.path.basename(split_dir))
    name = os.path.basename(img_path)
    return [os.path.join(mask_dir, mask_stem(name)), os.path.join(mask_dir, name + ".confidence_fields.npy")]


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
