"""Occluded-Duke: ``tiny`` / ``small`` plans with its structure and ``full``, a mirror of the real name lists.

Layout (TSD_REFERENCE.md §3)::

    ROOT/Occluded_Duke/{bounding_box_train,query,bounding_box_test}/<pid:04d>_c<cam>_f<frame:07d>.jpg
    ROOT/Occluded_Duke/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy   (36, H/8, W/8) float16
    ROOT/Occluded_Duke/new_query.txt, new_gallery.txt                      (§3.8 new benchmark)
"""
from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass

import numpy as np

from tools.synthetic.layout import (
    DUKE_ASPECTS,
    DUKE_HEIGHTS,
    KINDS,
    NONE,
    NUM_CAMS,
    OBJECT,
    PERSON,
    SPLITS,
    TRAIN_OCCLUSION_P,
    ImageSpec,
    Plan,
)
from utils.errors import DataError

DATASET_DIR = "Occluded_Duke"
NEW_QUERY, NEW_GALLERY = "new_query.txt", "new_gallery.txt"
NAME_RE = re.compile(r"([-\d]+)_c(\d)")  # the loaders' id/camera regex (§3.2)

# New-benchmark labels of query-identity images (§3.8): 1 person, 2 object, 3 none.
OCCLUSION_LABEL = {PERSON: 1, OBJECT: 2, NONE: 3}
LABEL_OCCLUSION = {v: k for k, v in OCCLUSION_LABEL.items()}
DISTRACTOR_OCCLUSION_P = (0.7, 0.15, 0.15)  # label-0 gallery images
MAX_NEW_QUERIES_PER_ID = 5

# Per scale: identities, image counts per identity (inclusive ranges), image heights. Query
# identities are the test identities with occluded query/ images; distractors appear only in the
# gallery (new-benchmark label 0).
@dataclass(frozen=True)
class ScaleSpec:
    """Sizes of a generated (not mirrored) data set."""

    train_ids: int
    train_images: tuple[int, int]
    query_ids: int
    distractor_ids: int
    holistic: tuple[int, int]  # holistic gallery images per query id (new-benchmark label 3)
    queries: tuple[int, int]  # occluded query/ images per query id
    gallery_occluded: tuple[int, int]  # occluded gallery images per query id (labels 1/2)
    distractor_images: tuple[int, int]
    heights: tuple[int, int]


SCALES = {
    "tiny": ScaleSpec(12, (5, 7), 6, 2, (2, 3), (2, 3), (1, 2), (2, 4), (112, 144)),
    "small": ScaleSpec(60, (7, 13), 32, 8, (4, 7), (3, 6), (1, 3), (3, 6), DUKE_HEIGHTS),
}


def new_benchmark_lists(images: list[ImageSpec], query_pids: set[int],
                        rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """The §3.8 construction: the gallery is the de-duplicated union of query/ and bounding_box_test/
    (files in both are listed once, as ``query/``); labels 1/2/3 = person-occluded / object-occluded /
    holistic images of query identities, 0 = everything else; the new queries are up to five holistic
    (label-3) gallery images per query identity."""
    gallery, holistic = [], {}
    in_query = [s for s in images if "query" in s.splits]
    test_only = [s for s in images if "bounding_box_test" in s.splits and "query" not in s.splits]
    for folder, specs in (("query", in_query), ("bounding_box_test", test_only)):
        for s in sorted(specs, key=lambda s: s.name):
            label = OCCLUSION_LABEL[s.occlusion] if s.pid in query_pids else 0
            gallery.append(f"{folder}/{s.name},{label}")
            if label == 3:
                holistic.setdefault(s.pid, []).append(f"{folder}/{s.name}")
    queries = []
    for pid in sorted(holistic):
        paths = holistic[pid]
        pick = rng.choice(len(paths), size=min(MAX_NEW_QUERIES_PER_ID, len(paths)), replace=False)
        queries += [paths[i] for i in sorted(pick)]
    return queries, gallery


class _Namer:
    """Unique Duke-style file names: frames advance by 120 per image of an identity."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}

    def __call__(self, pid: int, cam: int) -> str:
        k = self._count.get(pid, 0)
        self._count[pid] = k + 1
        return f"{pid:04d}_c{cam}_f{(pid * 211) % 90000 + 10000 + 120 * k:07d}.jpg"


def plan_scale(scale: str, seed: int) -> Plan:
    """Plan a ``tiny``/``small`` data set with the structure of Occluded-Duke.

    Every query identity has holistic gallery images in two cameras and occluded images (queries and
    gallery, by persons and by objects alternately) in one to three other cameras, so every new-benchmark
    query has label-1 and label-2 positives in another camera, and every occluded query has holistic
    gallery matches. About half of the query files also exist in bounding_box_test/ (as in the real set).
    """
    spec = SCALES[scale]
    rng = np.random.default_rng([seed, zlib.crc32(scale.encode())])

    def count(bounds: tuple[int, int]) -> int:
        return int(rng.integers(bounds[0], bounds[1], endpoint=True))

    n = spec.train_ids + spec.query_ids + spec.distractor_ids
    pids = rng.choice(np.arange(1, 7500), size=n, replace=False).tolist()
    train_pids = sorted(pids[:spec.train_ids])
    query_pids = sorted(pids[spec.train_ids:spec.train_ids + spec.query_ids])
    distractor_pids = sorted(pids[spec.train_ids + spec.query_ids:])
    name = _Namer()
    images: list[ImageSpec] = []

    def add(pid: int, cam: int, splits: tuple[str, ...], occlusion: str) -> None:
        images.append(ImageSpec(name(pid, cam), pid, cam, splits, occlusion))

    for pid in train_pids:
        cams = rng.choice(np.arange(1, NUM_CAMS + 1), size=count((2, 4)), replace=False)
        for _ in range(count(spec.train_images)):
            add(pid, int(rng.choice(cams)), ("bounding_box_train",), str(rng.choice(KINDS, p=TRAIN_OCCLUSION_P)))
    for pid in query_pids:
        cams = rng.permutation(np.arange(1, NUM_CAMS + 1))[:count((3, 5))].tolist()
        holistic_cams, occluded_cams = cams[:2], cams[2:]
        for _ in range(count(spec.holistic)):
            add(pid, int(rng.choice(holistic_cams)), ("bounding_box_test",), NONE)
        first = int(rng.integers(2))
        for k in range(count(spec.queries)):
            splits = ("query", "bounding_box_test") if rng.random() < 0.5 else ("query",)
            add(pid, int(rng.choice(occluded_cams)), splits, (PERSON, OBJECT)[(first + k) % 2])
        for _ in range(count(spec.gallery_occluded)):
            add(pid, int(rng.choice(occluded_cams)), ("bounding_box_test",), str(rng.choice((PERSON, OBJECT))))
    for pid in distractor_pids:
        cams = rng.choice(np.arange(1, NUM_CAMS + 1), size=2, replace=False)
        for _ in range(count(spec.distractor_images)):
            add(pid, int(rng.choice(cams)), ("bounding_box_test",), str(rng.choice(KINDS, p=DISTRACTOR_OCCLUSION_P)))
    new_query, new_gallery = new_benchmark_lists(images, set(query_pids), rng)
    return Plan(images, new_query, new_gallery, spec.heights, DUKE_ASPECTS, DATASET_DIR)


def _read_lines(folder: str, filename: str) -> list[str]:
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
        raise DataError(f"--names-from: {path} not found; point --names-from to a folder with "
                        f"{', '.join(f'{s}.list' for s in SPLITS)}, {NEW_QUERY} and {NEW_GALLERY}")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def write_name_lists(names_from: str, dst: str, limits: dict[str, int] | None = None) -> str:
    """Copy the Occluded-Duke name lists of ``names_from`` (the ``--names-from`` files) to ``dst``, each
    cut to its first ``limits[file name]`` names (lists not in ``limits`` stay whole): the input of a
    ``--scale full`` slice for benchmarks. Returns ``dst``.

    Raises:
        DataError: a list is missing in ``names_from``.
    """
    os.makedirs(dst, exist_ok=True)
    limits = limits or {}
    for name in (*(f"{s}.list" for s in SPLITS), NEW_QUERY, NEW_GALLERY):
        lines = _read_lines(names_from, name)
        with open(os.path.join(dst, name), "w") as f:
            f.writelines(line + "\n" for line in lines[:limits.get(name, len(lines))])
    return dst


def _parse_name(name: str, where: str) -> tuple[int, int]:
    m = NAME_RE.search(name)
    if m is None or not 1 <= int(m.group(2)) <= NUM_CAMS:
        raise DataError(f"{where}: '{name}' is not a '<pid>_c<cam 1-{NUM_CAMS}>_f<frame>.jpg' file name")
    return int(m.group(1)), int(m.group(2))


def _hashed_choice(seed: int, name: str, options: tuple[str, ...], p: tuple[float, ...]) -> str:
    """A choice that depends only on (seed, name): independent of list order, cheap for 35k files."""
    u = zlib.crc32(f"{seed}/{name}".encode()) / 2**32
    return options[min(int(np.searchsorted(np.cumsum(p), u, side="right")), len(options) - 1)]


def plan_full(names_from: str, seed: int) -> Plan:
    """Mirror the real benchmark from its name lists: same files, identities and cameras.

    Occlusion per file: query/ images are occluded (by a person for new-gallery label 1, an object for
    label 2, either otherwise); bounding_box_test/ images follow their new-gallery label (1 person,
    2 object, 3 holistic, 0 mostly holistic); training images are mostly holistic.
    """
    names = {split: _read_lines(names_from, f"{split}.list") for split in SPLITS}
    new_query = _read_lines(names_from, NEW_QUERY)
    new_gallery = _read_lines(names_from, NEW_GALLERY)
    labels: dict[str, int] = {}
    for line in new_gallery:
        path, _, label = line.rpartition(",")
        if not path or label not in ("0", "1", "2", "3"):
            raise DataError(f"{os.path.join(names_from, NEW_GALLERY)}: bad line '{line}', "
                            "expected '<split>/<name>.jpg,<0-3>'")
        labels[path] = int(label)
    listed = {f"{split}/{n}" for split in SPLITS for n in names[split]}
    for filename, paths in ((NEW_QUERY, new_query), (NEW_GALLERY, labels)):
        missing = next((p for p in paths if p not in listed), None)
        if missing is not None:
            raise DataError(f"{os.path.join(names_from, filename)}: '{missing}' "
                            f"is in none of the .list files of {names_from}")
    splits_of: dict[str, list[str]] = {}
    for split in SPLITS:
        for n in names[split]:
            splits_of.setdefault(n, []).append(split)
    images = []
    for n, splits in splits_of.items():
        pid, cam = _parse_name(n, os.path.join(names_from, f"{splits[0]}.list"))
        if "query" in splits:
            occlusion = LABEL_OCCLUSION.get(labels.get(f"query/{n}", 0), NONE)
            if occlusion == NONE:  # the query split is occluded by definition
                occlusion = _hashed_choice(seed, n, (PERSON, OBJECT), (0.5, 0.5))
        elif "bounding_box_test" in splits:
            label = labels.get(f"bounding_box_test/{n}", 0)
            occlusion = LABEL_OCCLUSION[label] if label else _hashed_choice(seed, n, KINDS, DISTRACTOR_OCCLUSION_P)
        else:
            occlusion = _hashed_choice(seed, n, KINDS, TRAIN_OCCLUSION_P)
        images.append(ImageSpec(n, pid, cam, tuple(splits), occlusion))
    return Plan(images, new_query, new_gallery, DUKE_HEIGHTS, DUKE_ASPECTS, DATASET_DIR)
