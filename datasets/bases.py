"""Image records, the split container shared by all data sets, and file-name parsing helpers."""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from utils.errors import DataError

__all__ = ["ImageRecord", "ReIDDataset", "FolderSplitsDataset", "list_images", "relabel", "require_dir",
           "parse_pid_cam", "SYNTHETIC_HINT"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
SYNTHETIC_HINT = ("`.venv/bin/python tools/make_synthetic_data.py --root DIR` writes a synthetic Occluded-Duke "
                  "with this layout")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    Attributes:
        path: image file.
        pid: identity; contiguous 0..num_train_pids-1 in the train split, the raw id elsewhere.
        camid: 0-based camera index.
        viewid: 0-based view index (0 for every person data set; kept for SIE view embeddings).
        occ_label: new-benchmark gallery label 0..3 (0 for its queries); None for other data sets.
    """

    path: str
    pid: int
    camid: int
    viewid: int = 0
    occ_label: int | None = None


class ReIDDataset:
    """A data set's three splits (lists of :class:`ImageRecord`) and their statistics.

    Subclasses set ``name`` and fill ``train``/``query``/``gallery`` in ``__init__(root)``; the
    train pids must already be relabelled to 0..n-1 (:func:`relabel`).
    """

    name = "dataset"

    def __init__(self, train: list[ImageRecord], query: list[ImageRecord], gallery: list[ImageRecord]):
        self.train, self.query, self.gallery = train, query, gallery

    @property
    def num_train_pids(self) -> int:
        """Number of training identities (= classifier size)."""
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        """Size of the SIE camera table: 1 + the largest camid of any split.

        Equals the reference's count of distinct training cameras whenever those are 0..n-1, and
        stays valid when a split lacks a camera or the train split is empty (occ_reid).
        """
        return 1 + max((r.camid for r in self.train + self.query + self.gallery), default=-1)

    @property
    def num_train_views(self) -> int:
        """Size of the SIE view table: 1 + the largest viewid (1 for person data sets)."""
        return 1 + max((r.viewid for r in self.train + self.query + self.gallery), default=-1)

    def summary(self) -> str:
        """A table of images / identities / cameras per split."""
        rule = "  " + "-" * 40
        header = f"  {'subset':<8}| {'# ids':>6} | {'# images':>8} | {'# cameras':>9}"
        lines = [f"{self.name} statistics:", rule, header, rule]
        for split in ("train", "query", "gallery"):
            recs = getattr(self, split)
            lines.append(f"  {split:<8}| {len({r.pid for r in recs}):>6} | {len(recs):>8} | "
                         f"{len({r.camid for r in recs}):>9}")
        lines.append(rule)
        return "\n".join(lines)


def require_dir(path: str, layout: str) -> None:
    """Raise :class:`DataError` naming ``path`` and the expected ``layout`` if it is not a folder."""
    if not os.path.isdir(path):
        raise DataError(f"data folder {path} not found; expected layout: {layout}; point DATASETS.ROOT_DIR at the "
                        "folder that holds the data set (relative paths start at the current folder); "
                        f"{SYNTHETIC_HINT}")


def list_images(folder: str, recursive: bool = False) -> list[str]:
    """Sorted image paths in ``folder`` (and its sub-folders when ``recursive``).

    Sorting makes the record order, and hence sampling and evaluation, independent of the file
    system (the reference uses unsorted ``glob``).

    Raises:
        DataError: one image is there in two formats (``001_01.tif`` beside a converted
            ``001_01.jpg``): it would count twice as a query or gallery image; names the pair.
    """
    if recursive:
        paths = [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files]
    else:
        paths = [os.path.join(folder, f) for f in os.listdir(folder)]
    paths = sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS))
    _refuse_duplicate_stems(paths)
    return paths


def _refuse_duplicate_stems(paths: Sequence[str]) -> None:
    """Raise :class:`DataError` if two of the sorted ``paths`` differ only in their extension."""
    first: dict[str, str] = {}
    pairs = []
    for p in paths:
        stem = os.path.splitext(p)[0]
        if stem in first:
            pairs.append((first[stem], p))
        else:
            first[stem] = p
    if pairs:
        a, b = pairs[0]
        more = f" (and {len(pairs) - 1} more such pair{'s' if len(pairs) > 2 else ''})" if len(pairs) > 1 else ""
        ext_a, ext_b = os.path.splitext(a)[1], os.path.splitext(b)[1]
        raise DataError(f"image {os.path.basename(os.path.splitext(a)[0])} is in {os.path.dirname(a)} twice, as "
                        f"{os.path.basename(a)} and {os.path.basename(b)}{more}: it would be counted twice; keep "
                        f"one format (e.g. move the {ext_a} or the {ext_b} files out of the folder)")


def relabel(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Map the pids of ``records`` to 0..n-1 in ascending pid order.

    The reference enumerates a Python ``set`` (bug 9.24); sorting makes classifier rows reproducible.
    """
    records = list(records)
    label = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [dataclasses.replace(r, pid=label[r.pid]) for r in records]


# "<pid>_c<cam>..." as in Market-1501 / DukeMTMC file names; pid may be -1 (Market junk).
_PID_CAM = re.compile(r"([-\d]+)_c(\d+)")


def parse_pid_cam(path: str, num_cams: int) -> tuple[int, int]:
    """``(pid, 0-based camid)`` from a ``<pid>_c<cam>_...`` file name (matched on the base name).

    Raises:
        DataError: the name does not match or the camera is outside 1..num_cams.
    """
    m = _PID_CAM.search(os.path.basename(path))
    if m is None:
        # An error, not a skip: the identity comes from the name, and a silently dropped file changes the
        # split that results are compared on; the standard splits hold no such file.
        raise DataError(f"image file name {path} does not match '<pid>_c<camera>_...' (e.g. 0001_c2_f0046182.jpg); "
                        f"rename it or move it out of {os.path.dirname(path)}")
    pid, cam = int(m.group(1)), int(m.group(2))
    if not 1 <= cam <= num_cams:
        raise DataError(f"image {path} has camera c{cam}, expected c1..c{num_cams}")
    return pid, cam - 1


class FolderSplitsDataset(ReIDDataset):
    """A data set laid out as ``<root>/<dir>/{bounding_box_train,query,bounding_box_test}/<pid>_c<cam>_*.jpg``.

    Subclasses set ``dataset_dirs`` (candidate folder names under the root, first existing wins),
    ``num_cams`` and ``drop_junk`` (skip pid -1).
    """

    dataset_dirs: Sequence[str] = ()
    num_cams = 8
    drop_junk = False
    split_dirs = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

    def __init__(self, root: str):
        self.dataset_dir = self.locate(root)
        splits = {s: self.read_split(os.path.join(self.dataset_dir, d)) for s, d in self.split_dirs.items()}
        super().__init__(relabel(splits["train"]), splits["query"], splits["gallery"])

    @classmethod
    def layout(cls, root: str) -> str:
        """Human-readable expected layout under ``root`` (for error messages)."""
        return os.path.join(root, cls.dataset_dirs[0], "{" + ",".join(cls.split_dirs.values()) + "}", "*.jpg")

    @classmethod
    def locate(cls, root: str) -> str:
        """The data set folder under ``root``; every split folder must exist in it."""
        candidates = [os.path.join(root, d) for d in cls.dataset_dirs]
        train_dir = cls.split_dirs["train"]
        found = next((c for c in candidates if os.path.isdir(os.path.join(c, train_dir))), candidates[0])
        for d in cls.split_dirs.values():
            require_dir(os.path.join(found, d), cls.layout(root))
        return found

    @classmethod
    def read_split(cls, folder: str) -> list[ImageRecord]:
        """Records of every image in ``folder``, sorted by path.

        Raises:
            DataError: ``folder`` holds no image (an interrupted copy or extraction).
        """
        records = []
        for path in list_images(folder):
            pid, camid = parse_pid_cam(path, cls.num_cams)
            if not (cls.drop_junk and pid == -1):
                records.append(ImageRecord(path, pid, camid))
        if not records:
            raise DataError(f"data folder {folder} has no images; copy the split's <pid>_c<camera>_*.jpg files there "
                            f"(an interrupted copy or extraction leaves it empty)")
        return records
