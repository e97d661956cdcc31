"""Occluded-REID (evaluation only: no masks)::

    ROOT/ICME2018_Occluded-Person-Reidentification_datasets/Occluded_REID/
        {occluded_body_images,whole_body_images}/<id:03d>/<id:03d>_<n:02d>.tif
"""
from __future__ import annotations

import os
import zlib

from tools.synthetic.layout import DUKE_ASPECTS, DUKE_HEIGHTS, NONE, NUM_CAMS, OBJECT, PERSON, ImageSpec, Plan

OCC_REID_DIR = os.path.join("ICME2018_Occluded-Person-Reidentification_datasets", "Occluded_REID")
OCC_REID_FOLDERS = ("occluded_body_images", "whole_body_images")
# Identities x (occluded, whole-body) images each; full = the real 200 x (5, 5).
OCC_REID_SCALES = {"tiny": (8, 3, 3), "small": (40, 5, 5), "full": (200, 5, 5)}
OCC_REID_HEIGHTS = {"tiny": (112, 144), "small": DUKE_HEIGHTS, "full": DUKE_HEIGHTS}


def plan_occ_reid(scale: str, seed: int) -> Plan:
    """Plan an Occluded-REID (evaluation only, no masks): ``<folder>/<id:03d>/<id:03d>_<n:02d>.tif``,
    occluded images (by objects and persons alternately) and holistic whole-body images per identity.
    The camera style is drawn per image: the release was shot with hand-held cameras."""
    num_ids, num_occluded, num_whole = OCC_REID_SCALES[scale]
    images = []
    for pid in range(1, num_ids + 1):
        for folder, count in zip(OCC_REID_FOLDERS, (num_occluded, num_whole)):
            for n in range(1, count + 1):
                filename = f"{pid:03d}_{n:02d}.tif"
                cam = 1 + zlib.crc32(f"{seed}/{folder}/{filename}".encode()) % NUM_CAMS
                occlusion = (OBJECT, PERSON)[n % 2] if folder == OCC_REID_FOLDERS[0] else NONE
                images.append(ImageSpec(filename, pid, cam, (f"{folder}/{pid:03d}",), occlusion))
    return Plan(images, [], [], OCC_REID_HEIGHTS[scale], DUKE_ASPECTS, OCC_REID_DIR, OCC_REID_FOLDERS, masks=False)
