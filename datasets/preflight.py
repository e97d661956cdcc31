"""Checks run in the main process before any loader starts, so bad data fails fast with one line.

Every training mask file's ``.npy`` header is checked (readable, float dtype, (36, h, w), file size),
not a sample: a bad file among 15,618 would otherwise surface at the epoch that happens to read it.
Reading headers only costs ~2 s warm (2 busy cores) for the full Occluded-Duke. The values (NaN, inf, range) are
checked by :func:`datasets.masks.load_mask` whenever a mask is read. Every training JPEG's end is checked
for truncation (``DATASETS.TRUNCATED_IMAGES``; its first and last bytes only).
"""
from __future__ import annotations

import os

from utils.errors import DataError

from .bases import ReIDDataset
from .masks import MASK_SOURCE_HINT, MASK_SUBDIR, find_mask, read_mask_header
from .transforms import TRUNCATED_FIX, check_truncated, file_is_truncated

__all__ = ["needs_masks", "check_truncated_files", "preflight"]


def needs_masks(cfg) -> bool:
    """True when training consumes part masks (TSD; the ViT baseline does not)."""
    return cfg.MODEL.ARCH == "tsd"


def check_truncated_files(paths: list[str], policy: str) -> list[str]:
    """Find the truncated JPEGs among ``paths`` (:func:`datasets.transforms.file_is_truncated`) and act
    per ``policy`` (``DATASETS.TRUNCATED_IMAGES``): 'error' raises naming them, 'warn' logs each;
    'ignore' reads nothing. Returns the truncated paths."""
    if policy == "ignore":
        return []
    bad = [p for p in paths if file_is_truncated(p)]
    if len(bad) > 1 and policy == "error":
        raise DataError(f"{len(bad)} of {len(paths)} training images are truncated JPEGs (cut mid-stream: no "
                        f"end-of-image marker; first: {', '.join(bad[:3])}); {TRUNCATED_FIX}")
    for p in bad:
        check_truncated(p, True, policy)
    return bad


def preflight(cfg, dataset: ReIDDataset) -> None:
    """Validate what the training loader will read: the training split, its images and mask files.

    Split folders and new-benchmark lists were already checked by the data set constructor, the part
    count against the grouping by the config validator.

    Raises:
        DataError: the training split is empty, or a training mask is missing, unreadable, truncated,
            pickled or not a (36, h, w) float array (the first bad file is named).
    """
    if not dataset.train:
        raise DataError(f"{dataset.name} has no training split (evaluation only); train on another data set "
                        f"and evaluate with DATASETS.NAMES {dataset.name}")
    check_truncated_files([r.path for r in dataset.train], cfg.DATASETS.TRUNCATED_IMAGES)
    if not needs_masks(cfg):
        return
    masks = [find_mask(r.path) for r in dataset.train]
    missing = [r.path for r, m in zip(dataset.train, masks) if m is None]
    if missing:
        split_dir = os.path.dirname(missing[0])
        where = os.path.join(os.path.dirname(split_dir), MASK_SUBDIR, os.path.basename(split_dir))
        raise DataError(
            f"{len(missing)} of {len(masks)} training images have no part mask (first: {', '.join(missing[:3])}); "
            f"expected {where}/<stem>.npy or <stem>.jpg.confidence_fields.npy; {MASK_SOURCE_HINT}"
        )
    for path in masks:
        read_mask_header(path)
