"""Body parts: the 36 channels of a mask file, their groupings into parts, and the names of the tokens.

The one owner of these facts: the data pipeline reads masks and groups them with it (``datasets``), the
checkpoint check names a grouping by its part count (``model``), the diversity loss spares the two sides
of one limb (``loss``), the evaluator names its per-token rows (``evaluation``), the exported model its
tokens (``processor.export``), and the tools their figures. Standard library only, below everything that
needs torch: ``tools/make_masks.py`` imports it in the mask maker's environment (``.venv-masks``), which
has none.

The masks are bpbreid's "PifPaf confidence fields filtered with Mask R-CNN" (reference §3.3); the
groupings are the reference's (``mask_config.py``): part index 1..P in dict order, 0 the background.
"""
from __future__ import annotations

__all__ = [
    "PIFPAF_PARTS", "NUM_KEYPOINTS", "PIFPAF_LIMBS", "NUM_CHANNELS", "PART_GROUPINGS", "PART_GROUP_SIZES",
    "GLOBAL_TOKEN", "grouping_for_parts", "part_names", "part_labels", "token_names", "part_abbrev",
    "flip_permutation", "limb_groups",
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
NUM_CHANNELS = len(PIFPAF_PARTS)
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
# Number of parts P of each grouping: MODEL.NUM_PARTS must match INPUT.MASK_PREPROCESS.
PART_GROUP_SIZES: dict[str, int] = {g: len(parts) for g, parts in PART_GROUPINGS.items()}

# Name of token 0 of the model's features (the global branch); tokens 1..P are the parts.
GLOBAL_TOKEN = "global"
_SIDES = ("left_", "right_")


def grouping_for_parts(num_parts: int) -> str | None:
    """The ``INPUT.MASK_PREPROCESS`` grouping that makes ``num_parts`` parts, or None if none does."""
    return next((g for g, n in PART_GROUP_SIZES.items() if n == num_parts), None)


def part_names(grouping: str) -> list[str]:
    """The reference's names of the P parts of ``grouping`` in part-index order (1..P): ``head_mask``, ..."""
    return list(PART_GROUPINGS[grouping])


def part_labels(grouping: str) -> list[str]:
    """The P parts of ``grouping`` as results, exported models and figures name them: the reference's
    names without their ``_mask`` suffix (``head``, ``arm``, ``torso``, ``leg``, ``feet`` for 'five')."""
    return [n.removesuffix("_mask") for n in PART_GROUPINGS[grouping]]


def token_names(arch: str, grouping: str) -> list[str]:
    """Names of the model's 1 + P feature tokens in order (``MODEL.ARCH``, ``INPUT.MASK_PREPROCESS``):
    :data:`GLOBAL_TOKEN`, then the :func:`part_labels`; the ViT baseline (``vit``) has the global one only."""
    return [GLOBAL_TOKEN] + ([] if arch == "vit" else part_labels(grouping))


def part_abbrev(name: str) -> str:
    """Short label of a part: initials of its words ('head' → 'H', 'left_arm' → 'LA')."""
    return "".join(word[0] for word in name.split("_")).upper()


def _unsided(name: str) -> str:
    """``name`` without its side: 'left_arm_mask' -> 'arm_mask' (unchanged when it has none)."""
    return next((name.removeprefix(s) for s in _SIDES if name.startswith(s)), name)


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


def limb_groups(grouping: str) -> tuple[int, ...]:
    """The limb of each of the P parts of ``grouping``, numbered in order of appearance: the two sides of
    one limb share a number ('eight': head, left / right arm, torso, left / right leg, left / right
    feet -> ``(0, 1, 1, 2, 3, 3, 4, 4)``); in the other groupings every part is a limb of its own."""
    limbs = list(dict.fromkeys(_unsided(n) for n in PART_GROUPINGS[grouping]))
    return tuple(limbs.index(_unsided(n)) for n in PART_GROUPINGS[grouping])
