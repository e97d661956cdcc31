"""The DukeMTMC family: Occluded-Duke, TSD's new Occluded-Duke benchmark and DukeMTMC-reID."""
from __future__ import annotations

import os

from utils.errors import DataError

from .bases import FolderSplitsDataset, ImageRecord, ReIDDataset, parse_pid_cam, relabel

__all__ = ["OccludedDuke", "NewOccludedDuke", "DukeMTMC"]

NEW_BENCHMARK_LABELS = ("0", "1", "2", "3")


class OccludedDuke(FolderSplitsDataset):
    """Occluded-Duke (lightas' split of DukeMTMC-reID): ``<root>/Occluded_Duke/{bounding_box_train,query,
    bounding_box_test}/<pid>_c<cam>_f<frame>.jpg``, 8 cameras, no junk ids.

    Real split: train 15,618 images / 702 ids, query 2,210 / 519, gallery 17,661 / 1,110.
    Training masks: ``<root>/Occluded_Duke/masks/pifpaf_maskrcnn_filtering/bounding_box_train/``.
    """

    name = "occ_duke"
    dataset_dirs = ("Occluded_Duke",)


class DukeMTMC(FolderSplitsDataset):
    """DukeMTMC-reID (holistic): ``<root>/dukemtmc-reid/{bounding_box_train,query,bounding_box_test}/``
    (the reference's folder name); torchreid's ``dukemtmc-reid/DukeMTMC-reID/`` and a bare
    ``DukeMTMC-reID/`` are accepted too. 8 cameras; 16,522 / 2,228 / 17,661 images.
    """

    name = "dukemtmc"
    dataset_dirs = ("dukemtmc-reid", os.path.join("dukemtmc-reid", "DukeMTMC-reID"), "DukeMTMC-reID")


def _line_error(path: str, lineno: int, what: str) -> DataError:
    return DataError(f"{path}:{lineno}: {what}; the file comes from the TSD repository root "
                     f"(github.com/hh23333/TSD), copy it unchanged to {os.path.dirname(path)}/")


class NewOccludedDuke(ReIDDataset):
    """TSD's new benchmark on Occluded-Duke (reference §3.8).

    * train: ``<root>/Occluded_Duke/bounding_box_train`` (the same 702 ids as ``occ_duke``);
    * query: ``<root>/Occluded_Duke/new_query.txt``, one path per line relative to ``Occluded_Duke/``
      (2,538 non-occluded images); ``occ_label`` 0;
    * gallery: ``<root>/Occluded_Duke/new_gallery.txt``, ``relative_path,label`` per line (18,001
      images), ``occ_label`` = label in 0..3 (3 holistic, 1/2 occluded, 0 other; §7.3).

    Both text files come from the TSD repository root and must be copied to ``<root>/Occluded_Duke/``.
    """

    name = "new_occ_duke"

    def __init__(self, root: str):
        base = OccludedDuke.locate(root)
        train = OccludedDuke.read_split(os.path.join(base, OccludedDuke.split_dirs["train"]))
        query = self._read_list(base, "new_query.txt", labelled=False)
        gallery = self._read_list(base, "new_gallery.txt", labelled=True)
        self.dataset_dir = base
        super().__init__(relabel(train), query, gallery)

    @staticmethod
    def _read_list(base: str, filename: str, labelled: bool) -> list[ImageRecord]:
        """Records of a new-benchmark list file (``path`` or ``path,label`` per line; blank lines skipped)."""
        list_path = os.path.join(base, filename)
        if not os.path.isfile(list_path):
            raise DataError(f"{list_path} not found; the new benchmark needs new_query.txt and new_gallery.txt "
                            f"from the TSD repository root (github.com/hh23333/TSD): copy them to {base}/")
        expected = "'relative/path.jpg,label'" if labelled else "'relative/path.jpg'"
        records, missing = [], []
        with open(list_path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                fields = line.split(",")
                if len(fields) != (2 if labelled else 1):
                    raise _line_error(list_path, lineno, f"expected {expected}, got '{line}'")
                if labelled and fields[1].strip() not in NEW_BENCHMARK_LABELS:
                    raise _line_error(list_path, lineno, f"label '{fields[1]}' is not one of 0, 1, 2, 3")
                label = int(fields[1]) if labelled else 0
                path = os.path.join(base, fields[0].strip())
                try:
                    pid, camid = parse_pid_cam(path, OccludedDuke.num_cams)
                except DataError as e:
                    raise _line_error(list_path, lineno, str(e)) from e
                if not os.path.isfile(path):
                    missing.append(path)
                records.append(ImageRecord(path, pid, camid, occ_label=label))
        if missing:
            raise DataError(f"{len(missing)} images listed in {list_path} do not exist (first: {missing[0]}); "
                            f"the list refers to the Occluded-Duke query/ and bounding_box_test/ folders")
        return records
