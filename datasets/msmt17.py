"""MSMT17 (list-file layout of TransReID)."""
from __future__ import annotations

import os

from utils.errors import DataError

from .bases import ImageRecord, ReIDDataset, relabel, require_dir

__all__ = ["MSMT17"]

NUM_CAMS = 15


class MSMT17(ReIDDataset):
    """MSMT17: ``<root>/MSMT17/{train,test}/`` images and ``<root>/MSMT17/list_{train,val,query,gallery}.txt``.

    Each list line is ``<relative path> <pid>``; the camera is the third ``_`` field of the file name
    (``0000_000_01_0303morning_0015_0.jpg`` -> c1, 15 cameras). As in TransReID the train split is
    list_train + list_val (32,621 images / 1,041 ids).
    """

    name = "msmt17"
    dataset_dir = "MSMT17"

    def __init__(self, root: str):
        base = os.path.join(root, self.dataset_dir)
        layout = os.path.join(base, "{train,test}/ + list_{train,val,query,gallery}.txt")
        for d in ("train", "test"):
            require_dir(os.path.join(base, d), layout)
        train = [r for lst in ("list_train.txt", "list_val.txt") for r in self._read_list(base, "train", lst)]
        super().__init__(relabel(train), self._read_list(base, "test", "list_query.txt"),
                         self._read_list(base, "test", "list_gallery.txt"))

    @staticmethod
    def _read_list(base: str, image_dir: str, filename: str) -> list[ImageRecord]:
        list_path = os.path.join(base, filename)
        if not os.path.isfile(list_path):
            raise DataError(f"MSMT17 list file {list_path} not found; it ships with the MSMT17_V1 release")
        records = []
        with open(list_path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rel, pid_str = line.split()
                    pid, cam = int(pid_str), int(os.path.basename(rel).split("_")[2])
                except (ValueError, IndexError) as e:
                    raise DataError(f"{list_path}:{lineno}: expected '<dir>/<pid>_<idx>_<cam>_....jpg <pid>', "
                                    f"got '{line.strip()}'") from e
                if not 1 <= cam <= NUM_CAMS:
                    raise DataError(f"{list_path}:{lineno}: camera {cam} outside 1..{NUM_CAMS}")
                records.append(ImageRecord(os.path.join(base, image_dir, rel), pid, cam - 1))
        return records
