"""Market-1501."""
from __future__ import annotations

from .bases import FolderSplitsDataset

__all__ = ["Market1501"]


class Market1501(FolderSplitsDataset):
    """Market-1501: ``<root>/Market-1501/{bounding_box_train,query,bounding_box_test}/<pid>_c<cam>s<seq>_*.jpg``
    (the reference's folder name; ``market1501/`` and ``Market-1501-v15.09.15/`` are accepted too).

    File names ``<pid:04d>_c<cam>s<seq>_<frame:06d>_<box:02d>.jpg`` (e.g. ``0002_c1s1_000451_03.jpg``),
    6 cameras; junk images (pid -1) are dropped, distractors (pid 0000) stay in the gallery.
    Real split: train 12,936 images / 751 ids, query 3,368 / 750 ids, gallery 19,732 files = 15,913
    after the junk is dropped (the 750 test ids + 2,793 distractors). Training masks (bpbreid):
    ``<root>/<dir>/masks/pifpaf_maskrcnn_filtering/bounding_box_train/<stem>.npy``. Models trained here
    are also evaluated on Occluded-REID (``occ_reid``), which has no training split.
    """

    name = "market1501"
    dataset_dirs = ("Market-1501", "market1501", "Market-1501-v15.09.15")
    num_cams = 6
    drop_junk = True
