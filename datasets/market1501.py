"""Market-1501."""
from __future__ import annotations

from .bases import FolderSplitsDataset

__all__ = ["Market1501"]


class Market1501(FolderSplitsDataset):
    """Market-1501: ``<root>/Market-1501/{bounding_box_train,query,bounding_box_test}/<pid>_c<cam>s<seq>_*.jpg``
    (the reference's folder name; ``market1501/`` and ``Market-1501-v15.09.15/`` are accepted too).

    6 cameras; junk images (pid -1) are dropped, distractors (pid 0) stay in the gallery.
    Real split: train 12,936 images / 751 ids, query 3,368 / 750, gallery 15,913 / 751 + distractors.
    """

    name = "market1501"
    dataset_dirs = ("Market-1501", "market1501", "Market-1501-v15.09.15")
    num_cams = 6
    drop_junk = True
