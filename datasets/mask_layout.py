"""Where the part mask of an image lives, free of torch: the rules a mask file's reader and writer share.

The masks are bpbreid's "PifPaf confidence fields filtered with Mask R-CNN": one ``.npy`` array of
shape (36, h, w) per image (reference §3.3); their channels and part groupings are owned by
:mod:`config.parts`. This module imports nothing heavier than the standard library, so that
``tools/make_masks.py`` runs in its own environment without torch (the readers and the torch
transforms are in :mod:`datasets.masks`).
"""
from __future__ import annotations

import os

from utils.errors import DataError

__all__ = ["MASK_SUBDIR", "MASK_SOURCE_HINT", "mask_stem", "mask_candidates", "find_mask", "require_mask"]

# Masks of <root>/<dataset>/<split>/<img> live in <root>/<dataset>/MASK_SUBDIR/<split>/.
MASK_SUBDIR = os.path.join("masks", "pifpaf_maskrcnn_filtering")
MASK_SOURCE_HINT = (
    "the masks are bpbreid's 'PifPaf confidence fields filtered with Mask R-CNN' (download link in the "
    "README of github.com/VlSomers/bpbreid); `make masks` makes them for your own images with a pose model "
    "(README: 'Part masks for your own data'); `.venv/bin/python tools/make_synthetic_data.py` makes a "
    "synthetic data set with masks"
)


def mask_stem(image_name: str) -> str:
    """File name of the mask of image ``image_name`` (TSD's naming: the name up to its first '.', + ``.npy``)."""
    return os.path.basename(image_name).split(".")[0] + ".npy"


def mask_candidates(img_path: str) -> list[str]:
    """Paths where the mask of ``img_path`` may live, in lookup order.

    ``<dataset>/<split>/<stem>.jpg`` -> ``<dataset>/masks/pifpaf_maskrcnn_filtering/<split>/`` +
    ``<stem>.npy`` (TSD's naming; stem = file name up to its first '.') or
    ``<stem>.jpg.confidence_fields.npy`` (bpbreid's Occluded-Duke naming).
    """
    split_dir = os.path.dirname(img_path)
    mask_dir = os.path.join(os.path.dirname(split_dir), MASK_SUBDIR, os.path.basename(split_dir))
    name = os.path.basename(img_path)
    return [os.path.join(mask_dir, mask_stem(name)), os.path.join(mask_dir, name + ".confidence_fields.npy")]


def find_mask(img_path: str) -> str | None:
    """The existing mask file of ``img_path`` (see :func:`mask_candidates`), or None."""
    return next((p for p in mask_candidates(img_path) if os.path.isfile(p)), None)


def require_mask(img_path: str) -> str:
    """The existing mask file of ``img_path``.

    Raises:
        DataError: naming the image and the paths looked at, when there is none.
    """
    path = find_mask(img_path)
    if path is None:
        raise DataError(f"no part mask for {img_path}; looked for {' and '.join(mask_candidates(img_path))}")
    return path
