"""Decoded training samples: from the source files, or from an on-disk cache built once (``DATALOADER.CACHE``).

A training sample's deterministic part -- the JPEG decoded and resized to ``INPUT.SIZE_TRAIN``, the
PifPaf mask grouped into ``INPUT.MASK_PREPROCESS`` parts at its own resolution -- is the same every
epoch. :class:`DecodedSource` computes it per access; :class:`CachedSource` reads it from a cache
folder that :func:`open_cache` builds on first use (in parallel) and memory-maps in every worker::

    <CACHE_DIR>/<dataset>_<fingerprint>/
        meta.json       format version, fingerprint inputs, counts, mask dtype
        images.npy      (N, 3, H, W) uint8, resized exactly as the per-sample path resizes
        masks.npy       (M,) every grouped (P, h, w) mask, flattened and concatenated (masks may differ in size)
        mask_index.npy  (N, 3) int64 offset into masks.npy, h, w

The folder name is a hash of the cache format version, the relevant ``INPUT`` keys and every source
file's path, size and modification time, so a changed file or key selects (and builds) another folder.
Masks are stored in float16 when every grouped value is exactly a float16 (the synthetic and bpbreid
masks are float16 files), else float32: values are bitwise those of the per-sample path.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import socket
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors

from config.parts import PART_GROUP_SIZES
from utils import comm
from utils.errors import ConfigError, DataError
from utils.logger import get_logger

from .bases import ImageRecord
from .masks import group_parts, load_mask, require_mask
from .transforms import make_resize, read_image

__all__ = ["CACHE_VERSION", "DecodedSource", "CachedSource", "cache_dir", "cache_folder", "build_cache", "open_cache"]

# Bump when the layout or the content of a cache folder changes: old folders are then ignored.
CACHE_VERSION = 1
_FILES = ("meta.json", "images.npy", "masks.npy", "mask_index.npy")


class DecodedSource:
    """Samples decoded from the source files on every access (no cache).

    Args:
        records: the training split; size: (H, W) resize target; grouping: part grouping or None
            (no masks); truncated: ``DATASETS.TRUNCATED_IMAGES``.
    """

    def __init__(self, records: Sequence[ImageRecord], size: Sequence[int], grouping: str | None,
                 truncated: str = "error"):
        self.records, self.grouping, self.truncated = records, grouping, truncated
        self.resize = make_resize(size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | None]:
        """``(image (3, H, W) uint8 resized, parts (P, h, w) float32 at the mask's resolution or None)``."""
        rec = self.records[index]
        image = self.resize(tv_tensors.Image(read_image(rec.path, self.truncated))).as_subclass(Tensor)
        if self.grouping is None:
            return image, None
        return image, group_parts(torch.from_numpy(load_mask(require_mask(rec.path))), self.grouping)


class CachedSource:
    """Samples read from a cache folder (see the module docstring); arrays are memory-mapped lazily,
    once per process, so that the object pickles small into loader workers.

    Raises:
        DataError: a cache file is unreadable or inconsistent with ``meta.json`` (names the file).
    """

    def __init__(self, folder: str):
        self.folder = folder
        meta_path = os.path.join(folder, "meta.json")
        try:
            with open(meta_path) as f:
                self.meta = json.load(f)
            self.num_samples, self.with_masks = int(self.meta["num_samples"]), bool(self.meta["grouping"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise self._bad(meta_path, e) from e
        self._arrays: dict[str, np.ndarray] | None = None
        self._open()  # validate now, in the main process; workers reopen after unpickling

    def _bad(self, path: str, err: Exception) -> DataError:
        return DataError(f"cache file {path} is unreadable or inconsistent ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); delete the folder {self.folder} "
                         f"and it is rebuilt on the next run")

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = {}
            h, w = self.meta["size"]
            expected = {"images.npy": ((self.num_samples, 3, h, w), np.uint8),
                        "mask_index.npy": ((self.num_samples, 3), np.int64), "masks.npy": (None, None)}
            for name, (shape, dtype) in expected.items():
                if name != "images.npy" and not self.with_masks:
                    continue
                path = os.path.join(self.folder, name)
                try:
                    arr = np.load(path, mmap_mode="r", allow_pickle=False)
                    if shape is not None and (arr.shape != shape or arr.dtype != dtype):
                        raise ValueError(f"shape {arr.shape} {arr.dtype}, expected {shape} {np.dtype(dtype)}")
                except (OSError, ValueError, EOFError) as e:
                    raise self._bad(path, e) from e
                arrays[name] = arr
            self._arrays = arrays
        return self._arrays

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | None]:
        """As :meth:`DecodedSource.__getitem__`; parts in the cache's dtype (float16 or float32)."""
        arrays = self._open()
        image = torch.from_numpy(np.array(arrays["images.npy"][index]))
        if not self.with_masks:
            return image, None
        offset, h, w = (int(v) for v in arrays["mask_index.npy"][index])
        num_parts = PART_GROUP_SIZES[self.meta["grouping"]]
        flat = arrays["masks.npy"][offset:offset + num_parts * h * w]
        if flat.size != num_parts * h * w:
            raise self._bad(os.path.join(self.folder, "masks.npy"), ValueError(f"sample {index} is truncated"))
        return image, torch.from_numpy(np.array(flat).reshape(num_parts, h, w))


def cache_dir(cfg) -> str:
    """``DATALOADER.CACHE_DIR``, or by default ``<parent of OUTPUT_DIR>/data_cache`` (shared by the runs of
    one experiment folder such as ``logs/occ_duke``), or ``$XDG_CACHE_HOME/tsd`` (``~/.cache/tsd``)
    without an ``OUTPUT_DIR``. Data folders are often read-only, so the cache never lives there."""
    if cfg.DATALOADER.CACHE_DIR:
        return os.path.expanduser(cfg.DATALOADER.CACHE_DIR)
    if cfg.OUTPUT_DIR:
        return os.path.join(os.path.dirname(os.path.abspath(cfg.OUTPUT_DIR)), "data_cache")
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tsd")


def _stat(path: str) -> list:
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror}); restore the file or remove it from its split") from e
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def cache_folder(root: str, name: str, records: Sequence[ImageRecord], size: Sequence[int],
                 grouping: str | None) -> tuple[str, dict]:
    """``(folder, fingerprint inputs)``: the cache folder of ``records`` under ``root``.

    The hash covers the format version, ``size``, ``grouping`` and each image's and mask's path,
    size and mtime (one ``stat`` per file, ~0.1 s for Occluded-Duke).
    """
    files = [[*_stat(r.path), *(_stat(require_mask(r.path)) if grouping else [])] for r in records]
    key = {"version": CACHE_VERSION, "size": list(size), "grouping": grouping}
    digest = hashlib.sha1(json.dumps([key, files]).encode()).hexdigest()[:16]
    return os.path.join(root, f"{name}_{digest}"), key


def _init_build_worker() -> None:
    """Build-pool initializer: one thread per process (the pool already uses every core)."""
    torch.set_num_threads(1)


def _decode_chunk(args: tuple[Sequence[ImageRecord], Sequence[int], str | None, str]) -> list[tuple]:
    """Build task: ``[(image, parts or None)]`` numpy arrays of a chunk of records.

    Touches no state of the calling process (thread count, random streams): with one build process it
    runs in the training process itself, whose numbers must not depend on whether the cache was built
    in this run (a thread count of 1 instead of the run's changes float reductions, hence the weights).
    """
    records, size, grouping, truncated = args
    source = DecodedSource(records, size, grouping, truncated)
    return [tuple(None if t is None else t.numpy() for t in source[i]) for i in range(len(records))]


def build_cache(folder: str, records: Sequence[ImageRecord], size: Sequence[int], grouping: str | None,
                key: dict, workers: int = 1, truncated: str = "error") -> None:
    """Decode ``records`` into the cache ``folder`` (see the module docstring) with ``workers`` processes
    (``truncated``: ``DATASETS.TRUNCATED_IMAGES``).

    Written into a private temporary folder and renamed into place at the end, so an interrupted build
    leaves nothing that looks valid, and of two concurrent builders (nodes sharing a file system) one
    wins and the other discards its copy.
    """
    log = get_logger()
    start = time.perf_counter()
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{folder}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    n, (h, w) = len(records), size
    log.info(f"building the training-data cache of {n} images in {folder} with {workers} process(es) ...")
    try:
        images = np.lib.format.open_memmap(os.path.join(tmp, "images.npy"), "w+", np.uint8, (n, 3, h, w))
        parts, index, offset = [], np.zeros((n, 3), np.int64), 0
        chunk = max(1, min(256, -(-n // (4 * workers))))
        chunks = [(records[i:i + chunk], size, grouping, truncated) for i in range(0, n, chunk)]
        pool = multiprocessing.get_context().Pool(workers, _init_build_worker) if workers > 1 else None
        try:
            results = pool.imap(_decode_chunk, chunks) if pool else map(_decode_chunk, chunks)
            i = 0
            for decoded in results:
                for image, part in decoded:
                    images[i] = image
                    if part is not None:
                        parts.append(part.reshape(-1))
                        index[i] = (offset, part.shape[1], part.shape[2])
                        offset += part.size
                    i += 1
        finally:
            if pool:
                pool.close()
                pool.join()
        images.flush()
        del images
        masks = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        # float16 storage only if it is lossless for every value (then float16 -> float32 is exact).
        dtype = "float16" if np.array_equal(masks.astype(np.float16).astype(np.float32), masks) else "float32"
        if grouping:
            np.save(os.path.join(tmp, "masks.npy"), masks.astype(dtype))
            np.save(os.path.join(tmp, "mask_index.npy"), index)
        meta = {**key, "num_samples": n, "mask_dtype": dtype, "seconds": round(time.perf_counter() - start, 1),
                "first_image": records[0].path if n else None}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same cache first
            if not os.path.isfile(os.path.join(folder, "meta.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nbytes = sum(os.path.getsize(os.path.join(folder, f)) for f in _FILES if os.path.exists(os.path.join(folder, f)))
    log.info(f"cache built in {time.perf_counter() - start:.1f} s: {nbytes / 2**20:.0f} MiB in {folder}")


def _builds_here() -> bool:
    """Whether this process builds a missing cache: local rank 0 of each node (a node may not see the
    others' file system), i.e. the only process without torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def open_cache(cfg, name: str, records: Sequence[ImageRecord], grouping: str | None) -> CachedSource:
    """The :class:`CachedSource` of ``records`` for ``cfg``, built first if missing.

    Under torch.distributed, local rank 0 of every node builds while the other ranks wait at a
    barrier, then every rank opens the same folder. Build processes: ``DATALOADER.NUM_WORKERS``
    (at least 1, at most the CPU count).

    Raises:
        DataError: a source file is missing, or the cache is unreadable (names the file).
        ConfigError: the cache cannot be written (``DATALOADER.CACHE_DIR``).
    """
    folder, key = cache_folder(cache_dir(cfg), name, records, cfg.INPUT.SIZE_TRAIN, grouping)
    ready = os.path.isfile(os.path.join(folder, "meta.json"))
    if not ready and _builds_here():
        workers = max(1, min(cfg.DATALOADER.NUM_WORKERS, os.cpu_count() or 1))
        try:
            build_cache(folder, records, cfg.INPUT.SIZE_TRAIN, grouping, key, workers, cfg.DATASETS.TRUNCATED_IMAGES)
        except OSError as e:  # read errors of the sources are DataErrors already: this is the cache side
            raise ConfigError(f"cannot write the training-data cache {folder} ({e.strerror or e}); set "
                              f"DATALOADER.CACHE_DIR to a writable folder with room for it, or DATALOADER.CACHE "
                              f"False") from e
    comm.synchronize()
    if not os.path.isfile(os.path.join(folder, "meta.json")):
        raise DataError(f"the training-data cache {folder} was not built (this process has LOCAL_RANK "
                        f"{os.environ.get('LOCAL_RANK', '0')}; local rank 0 builds it); check that it can write "
                        f"to DATALOADER.CACHE_DIR")
    if ready:
        get_logger().info(f"using the training-data cache {folder}")
    return CachedSource(folder)
