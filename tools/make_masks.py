#!/usr/bin/env python
"""Part masks in bpbreid's format for any images, from a pose model that installs with its weights.

    make masks IMAGES=path/to/crops OUT=path/to/masks        # sets up .venv-masks on first use
    .venv-masks/bin/python tools/make_masks.py --images DIR --out DIR [--workers N] [--overwrite]
    .venv-masks/bin/python tools/make_masks.py --root data --dataset market1501 [--splits train]

Writes one float32 ``(36, h, w)`` array in [0, 1] per image, channels in ``config.parts.PIFPAF_PARTS`` order (17
COCO keypoint fields, then 19 limb fields), at ``1/--stride`` of the image's resolution (PifPaf's
field size ``(H - 1) // stride + 1``; 8 by default, as bpbreid's files): folder mode writes
``OUT/<sub-folder>/<stem>.npy`` for every image under ``--images`` (recursively); data-set mode writes
each image's mask where the loaders look (``<data set>/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy``,
:func:`datasets.mask_layout.mask_candidates`).

The model is MediaPipe's BlazePose (legacy Pose solution, ``pose_landmark_full`` + ``pose_detection``
+ its person segmentation), whose weights ship inside the ``mediapipe`` wheel: nothing is downloaded.
Its 33 landmarks are mapped to the 17 COCO keypoints by name. A keypoint field is a Gaussian blob at
the keypoint, of spread ``--spread`` x the person's height and peak the landmark's visibility; a limb
field is the same profile around the segment between its two keypoints, of peak the smaller of their
visibilities. Both are multiplied by the person mask (bpbreid filters PifPaf's fields with a Mask
R-CNN person mask the same way). Of the persons found, the one nearest the image's centre is kept
(BlazePose returns one person per pass: when it is off-centre, a second pass on the image with that
person blanked looks for a more central one). An image without a person gets an all-zero mask,
counted in the summary and listed in ``no_person.txt`` at the output's root.

Runs in its own environment (``requirements-masks.txt``: mediapipe pins numpy<2 and protobuf<5), which
has no torch; it imports only torch-free project modules. Resumable: existing masks are skipped unless
``--overwrite``; a mask is written to a temporary file and renamed, so an interrupted run leaves no
partial file.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import multiprocessing
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib.util import find_spec

import cv2
import numpy as np

from config.parts import NUM_CHANNELS, NUM_KEYPOINTS, PIFPAF_LIMBS, PIFPAF_PARTS
from datasets.bases import IMAGE_EXTENSIONS, list_images
from datasets.mask_layout import mask_candidates, mask_stem
from utils.cli import ArgumentParser, run_main
from utils.errors import ConfigError, DataError
from utils.logger import setup_logger
from utils.progress import Progress

__all__ = ["Person", "field_size", "render_fields", "BlazePose", "folder_jobs", "dataset_jobs", "make_masks",
           "Summary", "main"]

DEFAULT_STRIDE = 8  # PifPaf's output stride: bpbreid's files are at 1/8 of the image
DEFAULT_SPREAD = 0.06  # Gaussian sigma / person height: the head blob about covers the head
WORK_HEIGHT = 256  # images are resized to this height (aspect kept) for the pose model
OFF_CENTRE = 0.2  # |person centre x - 0.5| (fraction of the width) beyond which a second pass looks for another
NO_PERSON_LIST = "no_person.txt"
UNREADABLE_LIST = "unreadable.txt"
MASKS_VENV_HINT = ("run it with the mask environment: `make masks IMAGES=DIR OUT=DIR` (creates .venv-masks), or "
                   "`.venv-masks/bin/python tools/make_masks.py ...`")


@dataclass
class Person:
    """One person found in an image, in normalised image coordinates.

    Attributes:
        keypoints: (17, 3) float — x / width, y / height, confidence in [0, 1] — in COCO order
            (``PIFPAF_PARTS[:17]``).
        height: the person's size as a fraction of the image height (landmark extent, incl. the parts
            outside the image, which the model extrapolates).
        mask: (h, w) float person mask in [0, 1] over the whole image (any resolution, same aspect).
    """

    keypoints: np.ndarray
    height: float
    mask: np.ndarray


def field_size(height: int, width: int, stride: int = DEFAULT_STRIDE) -> tuple[int, int]:
    """(h, w) of the fields of a ``height`` x ``width`` image at ``stride``: PifPaf's ``(H - 1) // stride + 1``."""
    return (height - 1) // stride + 1, (width - 1) // stride + 1


def _segment_distance2(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance of points (px, py) to the segments a->b; a, b: (L, 2) -> (L, *px.shape)."""
    d = (b - a)[:, :, None, None]
    p = np.stack([px, py])[None] - a[:, :, None, None]
    t = np.clip((p * d).sum(1) / np.maximum((d * d).sum(1), 1e-12), 0.0, 1.0)
    return ((p - t[:, None] * d) ** 2).sum(1)


def render_fields(person: Person | None, image_hw: Sequence[int], stride: int = DEFAULT_STRIDE,
                  spread: float = DEFAULT_SPREAD) -> np.ndarray:
    """The (36, h, w) float32 confidence fields of ``person`` in an image of size ``image_hw`` (H, W).

    Every field is sampled at the centres of the ``stride`` x ``stride`` cells (the loaders resize
    masks to the image nearest-neighbour, so a cell stands for its block), in image pixels:

    * keypoint k: ``c_k * exp(-d^2 / (2 s^2))``, d the distance to the keypoint;
    * limb (a, b): ``min(c_a, c_b) * exp(-d^2 / (2 s^2))``, d the distance to the segment a-b;

    with ``s = spread * person height`` and c the keypoint confidences; then all are multiplied by
    the person mask at the same points. No person: all zeros.
    """
    H, W = int(image_hw[0]), int(image_hw[1])
    h, w = field_size(H, W, stride)
    if person is None:
        return np.zeros((NUM_CHANNELS, h, w), np.float32)
    # cell centres in image pixels
    px, py = np.meshgrid((np.arange(w) + 0.5) * W / w, (np.arange(h) + 0.5) * H / h)
    xy = person.keypoints[:, :2] * np.array([W, H])
    conf = np.clip(person.keypoints[:, 2], 0.0, 1.0)
    inv = -0.5 / max(spread * person.height * H, 1e-6) ** 2

    d2 = (px[None] - xy[:, 0, None, None]) ** 2 + (py[None] - xy[:, 1, None, None]) ** 2
    keypoint_fields = conf[:, None, None] * np.exp(inv * d2)
    a, b = np.array(PIFPAF_LIMBS).T
    limb_conf = np.minimum(conf[a], conf[b])
    limb_fields = limb_conf[:, None, None] * np.exp(inv * _segment_distance2(px, py, xy[a], xy[b]))
    fields = np.concatenate([keypoint_fields, limb_fields])
    # the person mask point-sampled at the cell centres (bilinear; a downscale without antialiasing)
    mask = cv2.resize(person.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(fields * np.clip(mask, 0.0, 1.0)[None], 0.0, 1.0).astype(np.float32)


class BlazePose:
    """MediaPipe's BlazePose (legacy ``Pose`` solution with its person segmentation) on one image at a time.

    Uses ``model_complexity=1`` (``pose_landmark_full.tflite``), the landmark model the wheel ships;
    the other complexities would be downloaded at run time, which this tool never does.
    """

    def __init__(self, min_confidence: float = 0.5):
        try:
            import mediapipe as mp
        except ImportError as e:
            raise ConfigError(f"mediapipe is not installed in {sys.executable}'s environment; {MASKS_VENV_HINT}") from e
        pose = mp.solutions.pose
        self._pose = pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True,
                               min_detection_confidence=min_confidence)
        # the COCO keypoints by name among BlazePose's 33 landmarks (both name the person's own left / right)
        self._coco = [pose.PoseLandmark[name.upper()].value for name in PIFPAF_PARTS[:NUM_KEYPOINTS]]

    def _once(self, rgb: np.ndarray) -> Person | None:
        result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return None
        lm = np.array([[p.x, p.y, p.visibility] for p in result.pose_landmarks.landmark], np.float64)
        height = max(np.ptp(lm[:, 1]), np.ptp(lm[:, 0]) * rgb.shape[1] / rgb.shape[0])
        return Person(lm[self._coco], float(height), result.segmentation_mask)

    @staticmethod
    def centre_offset(person: Person) -> float:
        """|x - 0.5| of the person's centre (of its mask, else of its keypoints), as a fraction of the width."""
        fg = person.mask > 0.5
        x = (np.nonzero(fg)[1].mean() + 0.5) / fg.shape[1] if fg.any() else float(np.median(person.keypoints[:, 0]))
        return abs(x - 0.5)

    def find(self, bgr: np.ndarray) -> Person | None:
        """The person nearest the centre of ``bgr`` (an (H, W, 3) uint8 BGR image), or None."""
        h, w = bgr.shape[:2]
        size = (max(1, round(WORK_HEIGHT * w / h)), WORK_HEIGHT)
        rgb = cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC if h < WORK_HEIGHT else cv2.INTER_AREA),
                           cv2.COLOR_BGR2RGB)
        first = self._once(rgb)
        if first is None or self.centre_offset(first) <= OFF_CENTRE:
            return first
        # an off-centre person is often the occluder in a re-id crop: blank it and look again
        cover = cv2.dilate((first.mask > 0.3).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        blanked = rgb.copy()
        blanked[cover] = rgb.reshape(-1, 3).mean(0).astype(np.uint8)
        second = self._once(blanked)
        if second is not None and self.centre_offset(second) < self.centre_offset(first):
            return second
        return first

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._pose.close()


# ---------------------------------------------------------------------------------------------- jobs

Job = tuple[str, str]  # (image path, mask path)


def folder_jobs(images: str, out: str) -> list[Job]:
    """(image, ``out/<relative folder>/<stem>.npy``) for every image under ``images``, recursively.

    Raises:
        DataError: ``images`` is not a folder, holds no image, or two images share a mask path
            (``a.jpg`` and ``a.png`` in one folder).
    """
    if not os.path.isdir(images):
        raise DataError(f"image folder {images} does not exist")
    paths = list_images(images, recursive=True)
    if not paths:
        raise DataError(f"no images ({', '.join('*' + e for e in IMAGE_EXTENSIONS)}) found under {images}")
    jobs = [(p, os.path.join(out, os.path.relpath(os.path.dirname(p), images), mask_stem(p))) for p in paths]
    return _unique(jobs)


def dataset_jobs(root: str, dataset: str, splits: Sequence[str]) -> list[Job]:
    """(image, mask path where the loaders look) for every image of ``splits`` of data set ``dataset``.

    Raises:
        ConfigError: unknown data set. DataError: missing folders, malformed lists, or no image in
            the chosen splits (Occluded-REID has no training split).
    """
    from datasets.factory import build_dataset

    ds = build_dataset(dataset, root)
    records = [r for s in splits for r in getattr(ds, s)]
    if not records:
        raise DataError(f"{dataset} under {root} has no images in the split(s) {', '.join(splits)}; "
                        f"choose others with --splits (e.g. --splits query gallery)")
    seen: set[str] = set()
    unique = [r.path for r in records if not (r.path in seen or seen.add(r.path))]  # new_occ_duke lists overlap
    return _unique([(p, mask_candidates(p)[0]) for p in unique])


def _unique(jobs: list[Job]) -> list[Job]:
    by_mask: dict[str, str] = {}
    for src, dst in jobs:
        if dst in by_mask:
            raise DataError(f"images {by_mask[dst]} and {src} would share the mask file {dst} (masks are named by "
                            f"the image name up to its first '.'); rename one of them")
        by_mask[dst] = src
    return jobs


# ------------------------------------------------------------------------------------------- workers

@dataclass(frozen=True)
class _Options:
    stride: int
    spread: float
    min_confidence: float
    quiet: bool
    no_person_list: str
    unreadable_list: str | None  # None: an unreadable image is an error, not listed


_MODEL: BlazePose | None = None
_OPTIONS: _Options | None = None


def _init_worker(options: _Options) -> None:
    global _MODEL, _OPTIONS
    _OPTIONS = options
    if options.quiet:  # MediaPipe's C++ start-up warnings; Python errors still reach the parent through the pool
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    _MODEL = BlazePose(options.min_confidence)


def _save(path: str, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` through a temporary file, so that no partial mask is ever left there."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _append(list_path: str, image: str) -> None:
    # one short line in append mode: whole lines from concurrent workers, never interleaved bytes
    with open(list_path, "a") as f:
        f.write(image + "\n")


def _process(job: Job) -> tuple[str, str]:
    """Make the mask of one image; returns (image path, 'person' | 'none' | 'unreadable').

    An image without a person is listed before its mask is written, so that every all-zero mask on
    disk is listed even when the run is interrupted.
    """
    src, dst = job
    bgr = cv2.imread(src, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        if _OPTIONS.unreadable_list:
            _append(_OPTIONS.unreadable_list, src)
        return src, "unreadable"
    person = _MODEL.find(bgr)
    if person is None:
        _append(_OPTIONS.no_person_list, src)
    _save(dst, render_fields(person, bgr.shape[:2], _OPTIONS.stride, _OPTIONS.spread))
    return src, "none" if person is None else "person"


# ------------------------------------------------------------------------------------------- running

@dataclass
class Summary:
    """What a run did.

    Attributes:
        images: images asked for. existing: skipped because their mask existed. persons / no_person /
        unreadable: outcomes of the processed ones (the last two also as path lists). seconds: wall
        time of the processing. workers: processes used.
    """

    images: int
    existing: int
    persons: int
    no_person: list[str]
    unreadable: list[str]
    seconds: float
    workers: int

    @property
    def processed(self) -> int:
        return self.persons + len(self.no_person) + len(self.unreadable)

    def line(self) -> str:
        """The one-line summary printed at the end."""
        if not self.processed:
            return f"make_masks: {self.images} images, all skipped (their masks exist; --overwrite remakes them)"
        rate = self.processed / self.seconds
        found = f"{self.persons} with a person found ({100 * self.persons / self.processed:.1f}%)"
        return (f"make_masks: {self.images} images: {self.existing} skipped (mask exists), {self.processed} processed: "
                f"{found}, {len(self.no_person)} without (all-zero masks), {len(self.unreadable)} unreadable; "
                f"{self.seconds:.1f} s, {rate:.1f} crops/s with {self.workers} worker(s)")


def _tidy_list(path: str, drop: Iterable[str] = ()) -> None:
    """Rewrite the image list ``path`` sorted and without repeats, less ``drop`` and images that no longer
    exist (deleted when empty)."""
    if not os.path.isfile(path):
        return
    keep = {p for p in open(path).read().split("\n") if p and os.path.isfile(p)} - set(drop)
    if keep:
        with open(path, "w") as f:
            f.write("\n".join(sorted(keep)) + "\n")
    else:
        os.remove(path)


def make_masks(jobs: Sequence[Job], workers: int = 1, overwrite: bool = False, skip_unreadable: bool = False,
               stride: int = DEFAULT_STRIDE, spread: float = DEFAULT_SPREAD, min_confidence: float = 0.5,
               list_dir: str | None = None, quiet: bool = True) -> Summary:
    """Make the masks of ``jobs`` (image path, mask path) with ``workers`` processes.

    Masks that exist are skipped unless ``overwrite``. The images without a person (and, with
    ``skip_unreadable``, the unreadable ones) are listed in ``no_person.txt`` / ``unreadable.txt``
    in ``list_dir`` (default: the common folder of the mask paths); the lists carry over resumed runs.
    ``quiet`` silences the workers' standard error (MediaPipe's C++ log lines).

    Raises:
        DataError: an image cannot be read (naming it), unless ``skip_unreadable``.
    """
    todo = [j for j in jobs if overwrite or not os.path.isfile(j[1])]
    if not todo:
        return Summary(len(jobs), len(jobs), 0, [], [], 0.0, 0)
    if find_spec("mediapipe") is None:  # before starting workers, whose start-up would fail on it
        raise ConfigError(f"mediapipe is not installed in {sys.executable}'s environment; {MASKS_VENV_HINT}")
    list_dir = list_dir or os.path.commonpath([os.path.dirname(os.path.abspath(d)) for _, d in jobs])
    os.makedirs(list_dir, exist_ok=True)
    lists = [os.path.join(list_dir, NO_PERSON_LIST), os.path.join(list_dir, UNREADABLE_LIST)]
    for path in lists:  # the images made now are listed again by what they turn out to be
        _tidy_list(path, drop=[src for src, _ in todo])
    workers = max(1, min(workers, len(todo)))
    options = _Options(stride, spread, min_confidence, quiet, lists[0], lists[1] if skip_unreadable else None)
    outcomes: dict[str, list[str]] = {"person": [], "none": [], "unreadable": []}
    start = time.perf_counter()
    # Always worker processes, also for one: the model's C++ logging is silenced there, and a worker that
    # dies is reported (BrokenProcessPool) instead of a hang. Spawned, not forked: a forked child would
    # inherit the parent's threads and locks.
    try:
        with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _init_worker, (options,)) as pool, \
                Progress(len(todo), "part masks", "images") as progress:
            chunk = max(1, min(16, len(todo) // (8 * workers)))
            try:
                for src, status in pool.map(_process, todo, chunksize=chunk):
                    if status == "unreadable" and not skip_unreadable:
                        raise DataError(f"cannot read image {src} (missing, empty or not an image file); replace "
                                        f"or delete it, or pass --skip-unreadable to list it in {UNREADABLE_LIST} "
                                        f"and go on")
                    outcomes[status].append(src)
                    progress.update()
            except BrokenProcessPool as e:
                raise DataError("a mask worker process died (out of memory, or a crash in MediaPipe); rerun to "
                                "resume, with --verbose to see the model's own messages") from e
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        for path in lists:
            _tidy_list(path)
    return Summary(len(jobs), len(jobs) - len(todo), len(outcomes["person"]), sorted(outcomes["none"]),
                   sorted(outcomes["unreadable"]), time.perf_counter() - start, workers)


def default_workers() -> int:
    """The CPU cores this process may use (one single-threaded model per worker)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    from datasets.factory import DATASET_FACTORY

    parser = ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_argument_group("input (one of)")
    src.add_argument("--images", metavar="DIR", help="folder of images (searched recursively); needs --out")
    src.add_argument("--root", metavar="DIR", help="data root (DATASETS.ROOT_DIR); with --dataset")
    parser.add_argument("--out", metavar="DIR", help="folder mode: where OUT/<sub-folder>/<stem>.npy go")
    parser.add_argument("--dataset", choices=sorted(DATASET_FACTORY), help="data-set mode: which data set under --root")
    parser.add_argument("--splits", nargs="+", default=["train"], choices=["train", "query", "gallery"],
                        help="data-set mode: the splits to make masks for (default: train, the one training reads)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: the usable cores)")
    parser.add_argument("--overwrite", action="store_true", help="remake masks that exist (default: skip them)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help=f"list unreadable images in {UNREADABLE_LIST} and go on (default: stop with an error)")
    parser.add_argument("--stride", type=int, default=DEFAULT_STRIDE,
                        help="image pixels per mask cell (default 8, PifPaf's and bpbreid's)")
    parser.add_argument("--spread", type=float, default=DEFAULT_SPREAD,
                        help="Gaussian sigma of the fields as a fraction of the person's height (default %(default)s)")
    parser.add_argument("--min-confidence", type=float, default=0.5, help="BlazePose's person detection threshold")
    parser.add_argument("--verbose", action="store_true", help="show MediaPipe's own log lines (silenced by default)")
    args = parser.parse_args(argv)

    if bool(args.images) == bool(args.root):
        parser.error("give either --images DIR --out DIR (folder mode) or --root DIR --dataset NAME (data-set mode)")
    if args.images and not args.out:
        parser.error("--images needs --out DIR (where the masks go)")
    if args.root and not args.dataset:
        parser.error(f"--root needs --dataset, one of {', '.join(sorted(DATASET_FACTORY))}")
    if args.stride < 1 or args.workers < 1 or args.spread <= 0 or not 0 < args.min_confidence < 1:
        parser.error("--stride and --workers must be >= 1, --spread > 0 and --min-confidence in (0, 1)")

    setup_logger(None)
    jobs = folder_jobs(args.images, args.out) if args.images else dataset_jobs(args.root, args.dataset, args.splits)
    summary = make_masks(jobs, args.workers, args.overwrite, args.skip_unreadable, args.stride, args.spread,
                         args.min_confidence, list_dir=args.out, quiet=not args.verbose)
    print(summary.line())
    for name, paths in ((NO_PERSON_LIST, summary.no_person), (UNREADABLE_LIST, summary.unreadable)):
        if paths:
            print(f"  {len(paths)} listed in {name} (first: {paths[0]})")
    return 0


if __name__ == "__main__":
    run_main(main)
