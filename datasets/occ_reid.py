"""Occluded-REID (test only)."""
from __future__ import annotations

import os

from utils.errors import DataError

from .bases import ImageRecord, ReIDDataset, list_images, require_dir

__all__ = ["OccludedREID"]


class OccludedREID(ReIDDataset):
    """Occluded-REID: ``<root>/ICME2018_Occluded-Person-Reidentification_datasets/Occluded_REID/``
    ``{occluded_body_images,whole_body_images}/<id>/<pid>_<n>.tif`` as in the original release
    (``001/001_01.tif``; any image extension works, the reference globs ``*.jpg`` of converted copies).
    200 ids x 5 occluded + 5 whole-body images.

    Evaluation only (models are trained on Market-1501): the train split is empty. Queries are the
    occluded images (camera 0), the gallery the whole-body images (camera 1); the pid is the integer
    before the first '_' of the file name.
    """

    name = "occ_reid"
    dataset_dir = os.path.join("ICME2018_Occluded-Person-Reidentification_datasets", "Occluded_REID")

    def __init__(self, root: str):
        base = os.path.join(root, self.dataset_dir)
        layout = os.path.join(base, "{occluded_body_images,whole_body_images}", "<id>", "<id>_<n>.tif")
        splits = []
        for camid, sub in enumerate(("occluded_body_images", "whole_body_images")):
            folder = os.path.join(base, sub)
            require_dir(folder, layout)
            records = [ImageRecord(p, self._pid(p), camid) for p in list_images(folder, True)]
            if not records:
                raise DataError(f"data folder {folder} has no images; expected layout: {layout} "
                                f"(an interrupted copy or extraction leaves it empty)")
            splits.append(records)
        super().__init__([], *splits)

    @staticmethod
    def _pid(path: str) -> int:
        try:
            return int(os.path.basename(path).split("_")[0])
        except ValueError as e:
            raise DataError(f"Occluded-REID image name {path} does not start with '<pid>_'") from e
