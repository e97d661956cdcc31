"""config.parts: the one owner of the part facts (channels, groupings, part and token names, sides)."""
from __future__ import annotations

import config
from config import parts


def test_group_sizes_are_the_references():
    """MODEL.NUM_PARTS of each INPUT.MASK_PREPROCESS grouping (the reference's mask_config.py)."""
    assert parts.PART_GROUP_SIZES == {"eight": 8, "five": 5, "three": 3, "one": 1}
    assert config.PART_GROUP_SIZES is parts.PART_GROUP_SIZES
    assert [parts.grouping_for_parts(n) for n in (8, 5, 3, 1, 4)] == ["eight", "five", "three", "one", None]


def test_part_and_token_names():
    assert parts.part_names("three") == ["head_mask", "upper_body_mask", "lower_body_mask"]
    assert parts.part_labels("five") == ["head", "arm", "torso", "leg", "feet"]
    assert parts.token_names("tsd", "five") == ["global", "head", "arm", "torso", "leg", "feet"]
    assert parts.token_names("tsd", "one") == ["global", "fg"]
    assert parts.token_names("vit", "eight") == ["global"]  # the ViT baseline has no part tokens
    assert [parts.part_abbrev(n) for n in parts.part_labels("eight")] == ["H", "LA", "RA", "T", "LL", "RL", "LF", "RF"]


def test_sides_give_the_flip_and_the_limbs():
    """A flip swaps the left and right parts; the diversity loss does not push apart the two sides of one
    limb: the reference's hand-written weights for 'eight' (head, arms, torso, legs, feet)."""
    assert parts.flip_permutation("eight") == [0, 2, 1, 3, 5, 4, 7, 6]
    assert parts.limb_groups("eight") == (0, 1, 1, 2, 3, 3, 4, 4)
    for grouping, size in parts.PART_GROUP_SIZES.items():
        if grouping != "eight":
            assert parts.flip_permutation(grouping) is None
            assert parts.limb_groups(grouping) == tuple(range(size))


def test_limb_channels_are_named_by_their_keypoints():
    assert parts.NUM_CHANNELS == 36 and len(parts.PIFPAF_LIMBS) == 36 - parts.NUM_KEYPOINTS
    for channel, (a, b) in enumerate(parts.PIFPAF_LIMBS, parts.NUM_KEYPOINTS):
        assert parts.PIFPAF_PARTS[channel] == f"{parts.PIFPAF_PARTS[a]}_to_{parts.PIFPAF_PARTS[b]}"
