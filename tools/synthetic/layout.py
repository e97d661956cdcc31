"""What a synthetic data set holds, shared by the per-data-set planners, the renderer and the writer.

A planner (:mod:`tools.synthetic.occ_duke`, :mod:`~tools.synthetic.market1501`,
:mod:`~tools.synthetic.occ_reid`) returns a :class:`Plan`: the :class:`ImageSpec` of every file (identity,
camera, occlusion, split folders) and the geometry of its boxes; :mod:`tools.synthetic.render` draws one
spec; :mod:`tools.synthetic.writer` writes a plan in the data set's layout.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

SPLITS = ("bounding_box_train", "query", "bounding_box_test")
MASK_DIR = os.path.join("masks", "pifpaf_maskrcnn_filtering")
NUM_CAMS = 8  # camera styles 1..8 (Occluded-Duke's cameras; Market-1501 uses six of them)

# Occlusion kinds.
NONE, OBJECT, PERSON = "none", "object", "person"
KINDS = (NONE, OBJECT, PERSON)
TRAIN_OCCLUSION_P = (0.8, 0.1, 0.1)  # training images: mostly holistic
DUKE_HEIGHTS = (150, 300)  # image height range (px); width from the ~2.3:1 aspect of Duke boxes
DUKE_ASPECTS = (2.0, 2.7)


@dataclass(frozen=True)
class ImageSpec:
    """One file to render: identity, camera, occlusion, and the split folders it is written to."""

    name: str  # '<pid:04d>_c<cam>_f<frame:07d>.jpg'
    pid: int
    cam: int  # 1..8
    splits: tuple[str, ...]  # several when the same image is in query/ and bounding_box_test/
    occlusion: str  # NONE | OBJECT | PERSON
    anonymous: bool = False  # a different random person per image (Market junk -1 / distractor 0000)


@dataclass(frozen=True)
class Plan:
    """Everything to write: the images and the two new-benchmark lists (lines without newline)."""

    images: list[ImageSpec]
    new_query: list[str]
    new_gallery: list[str]
    heights: tuple[int, int]
    aspects: tuple[float, float]  # height:width range of the boxes
    dataset_dir: str  # under the root
    folders: tuple[str, ...] = SPLITS  # top-level folders of the splits (ImageSpec.splits may go deeper)
    masks: bool = True  # write the PifPaf fields (training sets only)
