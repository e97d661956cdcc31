"""Write a planned synthetic data set in its on-disk layout (:func:`generate`, the generator's entry point)."""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
import zlib
from multiprocessing import Pool

import cv2
import numpy as np

from tools.synthetic.layout import MASK_DIR, NONE, SPLITS, ImageSpec, Plan
from tools.synthetic.market1501 import plan_market
from tools.synthetic.occ_duke import NEW_GALLERY, NEW_QUERY, SCALES, plan_full, plan_scale
from tools.synthetic.occ_reid import plan_occ_reid
from tools.synthetic.render import render
from utils.errors import ConfigError, DataError
from utils.logger import get_logger

# Written first and removed with the outputs: lets a re-run replace an earlier synthetic set while
# refusing to overwrite a folder that may hold the user's real data.
MARKER = "SYNTHETIC.json"
JPEG_QUALITY = 90
DATASETS = ("occ_duke", "market1501", "occ_reid")
SCALE_CHOICES = (*SCALES, "full")


def _render_chunk(args: tuple[str, int, tuple, bool, list[ImageSpec]]) -> tuple[int, int]:
    """Render and write a chunk of images; returns (number of images, bytes written)."""
    dataset, seed, geometry, masks, specs = args
    written = 0
    for spec in specs:
        out = render(spec, seed, *geometry)
        ext = os.path.splitext(spec.name)[1]
        ok, encoded = cv2.imencode(ext, out.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else [])
        if not ok:
            raise RuntimeError(f"{ext} encoding failed for {spec.name}")
        buf = io.BytesIO()
        np.save(buf, out.fields)
        stem = spec.name.split(".")[0]
        for split in spec.splits:
            files = [(os.path.join(dataset, split, spec.name), encoded.tobytes())]
            if masks:
                files.append((os.path.join(dataset, MASK_DIR, split, f"{stem}.npy"), buf.getvalue()))
            for path, data in files:
                with open(path, "wb") as f:
                    f.write(data)
                written += len(data)
    return len(specs), written


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses the cores


def _prepare(dataset: str, plan: Plan) -> None:
    """Create the output folders, replacing an earlier synthetic set but never other data."""
    outputs = [*plan.folders, "masks", NEW_QUERY, NEW_GALLERY, MARKER]
    if os.path.isfile(os.path.join(dataset, MARKER)):
        for item in outputs:
            path = os.path.join(dataset, item)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    elif any(os.path.exists(os.path.join(dataset, item)) for item in outputs):
        raise DataError(f"{dataset} already holds a data set not made by this generator; choose another --root")
    for split in sorted({*plan.folders, *(s for spec in plan.images for s in spec.splits)}):
        os.makedirs(os.path.join(dataset, split), exist_ok=True)
        if plan.masks:
            os.makedirs(os.path.join(dataset, MASK_DIR, split), exist_ok=True)


def _write_text(path: str, lines: list[str]) -> int:
    data = "".join(f"{line}\n" for line in lines).encode()
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def _split_stats(images: list[ImageSpec], folders: tuple[str, ...] = SPLITS) -> dict:
    stats: dict[str, dict[str, int]] = {"images": {}, "ids": {}, "occluded": {}}
    for split in folders:
        specs = [s for s in images if any(f.split("/")[0] == split for f in s.splits)]
        stats["images"][split] = len(specs)
        stats["ids"][split] = len({s.pid for s in specs})
        stats["occluded"][split] = sum(s.occlusion != NONE for s in specs)
    return stats


def generate(root: str, scale: str = "tiny", seed: int = 0, names_from: str | None = None, workers: int = 1,
             dataset: str = "occ_duke") -> dict:
    """Write a synthetic data set under ``root`` and return its statistics.

    Args:
        root: data root (``DATASETS.ROOT_DIR``); created if missing.
        scale: 'tiny' (~20 ids), 'small' (~100 ids) or 'full' (Occluded-Duke: mirrors ``names_from``;
            Market-1501 / Occluded-REID: the real split statistics).
        seed: non-negative seed; the same seed gives the same bytes whatever ``workers`` is.
        names_from: folder with the three ``.list`` files and the two new-benchmark files ('full' only).
        workers: rendering processes.
        dataset: 'occ_duke' (``root/Occluded_Duke`` with the new-benchmark lists), 'market1501'
            (``root/Market-1501-v15.09.15``) or 'occ_reid' (``root/ICME2018_.../Occluded_REID``, no masks).
    Returns:
        ``{'root', 'scale', 'seed', 'images': {split: n}, 'ids': {split: n}, 'occluded': {split: n},
        'unique_images', 'new_query', 'new_gallery', 'seconds', 'bytes'}``.
    """
    start = time.perf_counter()
    log = get_logger()
    if scale not in SCALE_CHOICES:
        raise ConfigError(f"unknown scale '{scale}'; use one of {', '.join(SCALE_CHOICES)}")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset '{dataset}'; use one of {', '.join(DATASETS)}")
    if (dataset == "occ_duke" and scale == "full") != (names_from is not None):
        raise ConfigError("--names-from DIR is required with --dataset occ_duke --scale full and only used there")
    if seed < 0 or workers < 1:
        raise ConfigError(f"need seed >= 0 and workers >= 1, got seed={seed}, workers={workers}")
    if dataset == "market1501":
        plan = plan_market(scale, seed)
    elif dataset == "occ_reid":
        plan = plan_occ_reid(scale, seed)
    else:
        plan = plan_full(names_from, seed) if scale == "full" else plan_scale(scale, seed)
    # Another appearance space per data set: Market's and Occluded-REID's identity 1 are not one person.
    render_seed = seed if dataset == "occ_duke" else zlib.crc32(f"{dataset}/{seed}".encode())
    out_dir = os.path.join(root, plan.dataset_dir)
    _prepare(out_dir, plan)
    stats = {"root": root, "dataset": dataset, "scale": scale, "seed": seed, **_split_stats(plan.images, plan.folders),
             "unique_images": len(plan.images), "new_query": len(plan.new_query), "new_gallery": len(plan.new_gallery)}
    # Deterministic content only (no timing), so that generated trees can be compared byte-wise.
    written = _write_text(os.path.join(out_dir, MARKER), [json.dumps(
        {"generator": "tools/make_synthetic_data.py", **{k: stats[k] for k in ("scale", "seed", "images", "ids")}})])
    if dataset == "occ_duke" and scale == "full":  # the real lists, byte for byte
        for filename in (NEW_QUERY, NEW_GALLERY):
            shutil.copyfile(os.path.join(names_from, filename), os.path.join(out_dir, filename))
            written += os.path.getsize(os.path.join(out_dir, filename))
    elif dataset == "occ_duke":  # the new-benchmark lists exist for Occluded-Duke only
        written += _write_text(os.path.join(out_dir, NEW_QUERY), plan.new_query)
        written += _write_text(os.path.join(out_dir, NEW_GALLERY), plan.new_gallery)
    total = len(plan.images)
    size = max(1, min(500, math.ceil(total / (workers * 8))))
    geometry = (plan.heights, plan.aspects)
    chunks = [(out_dir, render_seed, geometry, plan.masks, plan.images[i:i + size]) for i in range(0, total, size)]
    log.info("rendering %d images (%s %s) into %s with %d worker(s)", total, dataset, scale, out_dir, workers)
    done, next_report = 0, 0.1
    pool = Pool(workers, initializer=_init_worker) if workers > 1 else None
    try:
        results = pool.imap_unordered(_render_chunk, chunks) if pool else map(_render_chunk, chunks)
        for n, nbytes in results:
            done, written = done + n, written + nbytes
            if done / total >= next_report:
                log.info("  %d/%d images (%.0f%%), %.1f s", done, total, 100 * done / total,
                         time.perf_counter() - start)
                next_report = math.floor(10 * done / total) / 10 + 0.1
    finally:
        if pool:
            pool.close()
            pool.join()
    stats.update(seconds=round(time.perf_counter() - start, 2), bytes=written)
    return stats
