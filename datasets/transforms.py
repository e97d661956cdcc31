"""Image decoding and the training (image + part mask) and evaluation transforms (reference §3.5, §3.6).

Both pipelines are torchvision transforms v2 on ``tv_tensors``: an ``Image`` (uint8, resized
bilinearly) and, for training, a ``Mask`` (resized nearest-neighbour, i.e. OpenCV ``INTER_NEAREST``:
source index ``floor(dst * h / H)``) go through the same random flip / pad / crop / erasing.

Evaluation has the reference's two image paths (``TEST.IMAGE_LOADER``): OpenCV decode + bilinear
resize (its in-training evaluation) and PIL decode + PIL bilinear resize (its ``test_tsd.py``).
Every decode first checks that a JPEG is complete (``DATASETS.TRUNCATED_IMAGES``).
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageFile
from torch import Tensor
from torchvision import transforms as T
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from config import EVAL_IMAGE_LOADERS, TRUNCATED_IMAGE_POLICIES
from config.parts import flip_permutation
from utils.errors import ConfigError, DataError
from utils.logger import get_logger

from .masks import add_background, group_parts

__all__ = ["jpeg_is_truncated", "file_is_truncated", "TRUNCATED_FIX", "check_truncated",
           "read_image", "read_pil_image", "make_resize", "PairedHorizontalFlip", "PairedRandomErasing",
           "TrainTransform", "EvalTransform", "eval_image_loader", "build_eval_transform"]

_JPEG_SOI, _JPEG_SOS, _JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
# How much of a file's end jpeg_is_truncated needs: a complete JPEG's end-of-image marker is its last
# two bytes, give or take a few bytes of padding that some writers append.
JPEG_TAIL_BYTES = 4096


def jpeg_is_truncated(head: bytes, tail: bytes) -> bool:
    """Whether a JPEG file whose first bytes are ``head`` and last bytes ``tail`` is cut short.

    A complete JPEG ends with the end-of-image marker FF D9 (possibly followed by padding). Inside the
    compressed data an FF byte is always followed by 00 or a restart marker, so FF D9 cannot occur
    there: a file cut in its compressed data has no FF D9 after the last start-of-scan marker FF DA.
    Not a JPEG (``head`` is not FF D8): False.
    """
    if not head.startswith(_JPEG_SOI):
        return False
    eoi = tail.rfind(_JPEG_EOI)
    return eoi < 0 or eoi < tail.rfind(_JPEG_SOS)


def file_is_truncated(path: str) -> bool:
    """:func:`jpeg_is_truncated` of the file at ``path`` from its first 2 and last ``JPEG_TAIL_BYTES`` bytes
    (one open, two small reads: ~1 s for the 15,618 training images of Occluded-Duke on a busy machine).
    A file that cannot be opened counts as complete here: reading it raises its own error."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(max(0, os.fstat(f.fileno()).st_size - JPEG_TAIL_BYTES))
            return jpeg_is_truncated(head, f.read())
    except OSError:
        return False


TRUNCATED_FIX = ("replace the file or delete it from its split folder, or set DATASETS.TRUNCATED_IMAGES warn "
                 "(or ignore, the reference's behaviour) to use it as decoded")


def _truncated_message(path: str) -> str:
    return (f"image {path} is truncated (a JPEG cut mid-stream: no end-of-image marker; decoded, its missing "
            f"part would be grey); {TRUNCATED_FIX}")


_warned: set[str] = set()


def check_truncated(path: str, truncated: bool, policy: str = "error") -> None:
    """Act on a truncated image per ``DATASETS.TRUNCATED_IMAGES``: 'error' raises :class:`DataError`
    naming ``path``; 'warn' logs a warning naming it (once per file and process); 'ignore' (the
    reference: PIL's ``LOAD_TRUNCATED_IMAGES = True``, OpenCV's decoder) says nothing."""
    if not truncated or policy == "ignore":
        return
    if policy == "error":
        raise DataError(_truncated_message(path))
    if path not in _warned:
        _warned.add(path)
        get_logger().warning(f"image {path} is truncated (a JPEG cut mid-stream); using it as decoded, its "
                             f"missing part grey (DATASETS.TRUNCATED_IMAGES warn)")


def _unreadable(path: str) -> DataError:
    return DataError(f"cannot read image {path} (missing, truncated or not an image); "
                     f"replace the file or delete it from its split folder")


def _read_checked(path: str, truncated: str) -> tuple[bytes, bool]:
    """``(the file's bytes, whether it is a truncated JPEG)``, acted on per ``truncated`` (:func:`check_truncated`).
    The check searches the bytes already in memory: reading + checking + decoding from memory costs what
    ``cv2.imread`` alone does (measured on 7 KB crops)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _unreadable(path) from e
    cut = jpeg_is_truncated(data[:2], data[-JPEG_TAIL_BYTES:])
    check_truncated(path, cut, truncated)
    return data, cut


def read_image(path: str, truncated: str = "error") -> Tensor:
    """Decode an image file with OpenCV to a (3, h, w) uint8 RGB tensor (the training path and the
    reference's in-training evaluation).

    Raises:
        DataError: the file is missing, not an image, or truncated (per ``truncated``, see
            :func:`check_truncated`).
    """
    data, cut = _read_checked(path, truncated)
    # imdecode refuses a truncated JPEG; imread decodes it (grey where data is missing, and libjpeg prints
    # "Premature end of JPEG file"), which is what the reference trains on.
    bgr = cv2.imread(path, cv2.IMREAD_COLOR) if cut else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise _unreadable(path)
    return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)


@contextlib.contextmanager
def _pil_loads_truncated(allow: bool) -> Iterator[None]:
    """Let PIL decode a truncated file (its global switch, set only around one decode)."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow or before
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def read_pil_image(path: str, truncated: str = "error") -> Image.Image:
    """``PIL.Image.open(path).convert('RGB')``, the reference ``test_tsd.py``'s decode.

    Raises:
        DataError: as :func:`read_image`.
    """
    data, cut = _read_checked(path, truncated)
    try:
        with _pil_loads_truncated(cut), Image.open(io.BytesIO(data)) as image:  # a truncated file only if allowed
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path) from e


class PairedHorizontalFlip(v2.RandomHorizontalFlip):
    """Horizontal flip of image and mask together, optionally reordering the mask's channels.

    The reference flips the masks without swapping left/right parts (bug 9.10); pass
    ``mask_permutation`` (see :func:`config.parts.flip_permutation`) to swap them.
    """

    def __init__(self, p: float = 0.5, mask_permutation: Sequence[int] | None = None):
        super().__init__(p)
        self.mask_permutation = list(mask_permutation) if mask_permutation is not None else None

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, params)
        if self.mask_permutation is not None and isinstance(inpt, tv_tensors.Mask):
            out = tv_tensors.wrap(out[..., self.mask_permutation, :, :], like=inpt)
        return out


class PairedRandomErasing(v2.RandomErasing):
    """The reference's ``DualRE``: one rectangle of the image becomes N(0, 1) noise, the mask gets 0 there.

    Rectangle as in timm / Zhong et al.: area ~ U(0.02, 1/3) of the image, aspect ratio log-uniform
    in (0.3, 1/0.3), up to 10 attempts to fit strictly inside, uniform position. Apply it after
    normalisation (the noise lives in normalised space). A zeroed mask pixel becomes background.
    """

    def __init__(self, p: float = 0.5):
        super().__init__(p=p, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), value="random")

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Mask):
            return super().transform(inpt, params)
        if params["v"] is None:  # no rectangle fitted in 10 attempts
            return inpt
        erased = TF.erase_image(inpt.as_subclass(Tensor), params["i"], params["j"], params["h"], params["w"],
                                v=torch.zeros((), dtype=inpt.dtype))
        return tv_tensors.wrap(erased, like=inpt)


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def make_resize(size: Sequence[int]) -> v2.Resize:
    """Resize to ``size`` (H, W): images bilinear, masks nearest-neighbour (``floor(dst * h / H)``).

    No antialiasing: the reference resizes with cv2 INTER_LINEAR, which this matches up to uint8
    rounding (at most 1 grey level); v2 resizes ``Mask`` inputs with ``F.interpolate(mode='nearest')``,
    which is OpenCV's INTER_NEAREST.
    """
    return v2.Resize(list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=False)


class TrainTransform:
    """The reference's joint training augmentation of an image and its PifPaf mask (§3.5).

    resize -> horizontal flip (p ``INPUT.PROB``) -> pad ``INPUT.PADDING`` with 0 + random crop back
    to ``INPUT.SIZE_TRAIN`` -> normalise -> paired random erasing (p ``INPUT.RE_PROB``) -> part
    grouping -> background + softmax.

    The 36 channels are grouped to P parts first, at the mask's own resolution: the max over a
    group commutes with the nearest-neighbour resize, the flip, the crop and the zeroing, so the
    result is bitwise the reference's, for P instead of 36 channels. The background and softmax
    need the final resolution and come last.

    Args:
        size: (H, W) output size; mean, std: normalisation; flip_p, erase_p: probabilities;
        padding: pixels added on each side before the crop; grouping: ``INPUT.MASK_PREPROCESS`` or
        None when no masks are used; swap_lr: swap left/right parts on flip; bg_threshold,
        softmax_weight: :func:`datasets.masks.add_background`.
    """

    def __init__(self, size: Sequence[int], mean: Sequence[float], std: Sequence[float], flip_p: float = 0.5,
                 padding: int = 10, erase_p: float = 0.5, grouping: str | None = None, swap_lr: bool = False,
                 bg_threshold: float = 0.3, softmax_weight: float = 15.0):
        self.grouping = grouping
        self.bg_threshold = bg_threshold
        self.softmax_weight = softmax_weight
        permutation = flip_permutation(grouping) if grouping is not None and swap_lr else None
        self.pipeline = v2.Compose([
            make_resize(size),
            PairedHorizontalFlip(flip_p, permutation),
            v2.RandomCrop(list(size), padding=padding or None, fill=0),
            *_normalise(mean, std),
            PairedRandomErasing(erase_p),
            v2.ToPureTensor(),
        ])

    @classmethod
    def from_cfg(cls, cfg, with_masks: bool) -> TrainTransform:
        """The transform configured by ``cfg.INPUT`` (masks only if ``with_masks``)."""
        i = cfg.INPUT
        return cls(i.SIZE_TRAIN, i.PIXEL_MEAN, i.PIXEL_STD, i.PROB, i.PADDING, i.RE_PROB,
                   i.MASK_PREPROCESS if with_masks else None, i.FLIP_SWAP_LR, i.MASK_BG_THRESHOLD,
                   i.MASK_SOFTMAX_WEIGHT)

    def __call__(self, image: Tensor, raw_mask: np.ndarray | Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Augment one sample.

        Args:
            image: (3, h, w) uint8 RGB.
            raw_mask: (36, h', w') PifPaf confidence fields (any resolution) or None.

        Returns:
            image (3, H, W) float32 normalised; soft masks (P+1, H, W) float32 (background first)
            summing to 1 per pixel, or None without ``raw_mask``.
        """
        if raw_mask is None or self.grouping is None:
            return self.augment(image, None)
        return self.augment(image, group_parts(torch.as_tensor(raw_mask, dtype=torch.float32), self.grouping))

    def augment(self, image: Tensor, parts: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Augment one sample whose mask is already grouped (the cached path, ``DATALOADER.CACHE``).

        Args:
            image: (3, h, w) uint8 RGB (already at ``size``: the resize is then the identity).
            parts: (P, h', w') grouped part maps (float16 or float32, any resolution) or None.

        Returns:
            as :meth:`__call__`.
        """
        if parts is None or self.grouping is None:
            return self.pipeline(tv_tensors.Image(image)), None
        img, mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(parts.to(torch.float32)))
        return img, add_background(mask, self.bg_threshold, self.softmax_weight)


class EvalTransform:
    """An image file -> the (3, H, W) float32 network input at ``size``, by one of the reference's two
    evaluation paths (§3.6):

    * ``'pil'`` (``test_tsd.py``, TransReID's ``make_dataloader``): ``PIL.Image.open(path).convert('RGB')``
      -> torchvision ``Resize(size)`` on the PIL image (PIL's bilinear filter, which low-passes when it
      shrinks) -> ``ToTensor`` (uint8 / 255) -> ``Normalize``. Bitwise the reference's input
      (``tests/test_parity_test_transform.py``). torchvision's v1 ``ToTensor`` divides by 255 as the
      reference does; v2 ``ToDtype(scale=True)`` multiplies by 1/255, 1 ulp away on most pixels.
    * ``'cv2'`` (``train_tsd.py``'s in-training evaluation): OpenCV decode -> bilinear resize without
      antialiasing (:func:`make_resize`, cv2 ``INTER_LINEAR`` up to uint8 rounding) -> normalise.

    On the 36 images of the parity fixture the two resizes agree in uint8 where they enlarge (32 crops)
    and differ by 0.38-1.73 grey levels per pixel where they shrink (4 crops, the most at x2.5).
    """

    def __init__(self, size: Sequence[int], mean: Sequence[float], std: Sequence[float], loader: str = "pil",
                 truncated: str = "error"):
        if loader not in EVAL_IMAGE_LOADERS[1:] or truncated not in TRUNCATED_IMAGE_POLICIES:
            raise ConfigError(f"an evaluation loader is one of {list(EVAL_IMAGE_LOADERS[1:])} and a truncated-image "
                              f"policy one of {list(TRUNCATED_IMAGE_POLICIES)}, got {loader!r}, {truncated!r}")
        self.loader, self.truncated = loader, truncated
        if loader == "pil":
            self.pipeline = T.Compose([v2.Resize(list(size), interpolation=v2.InterpolationMode.BILINEAR),
                                       T.ToTensor(), v2.Normalize(list(mean), list(std))])
        else:
            self.pipeline = v2.Compose([make_resize(size), *_normalise(mean, std), v2.ToPureTensor()])

    def __call__(self, path: str) -> Tensor:
        """(3, H, W) float32 normalised input of the image file at ``path``."""
        if self.loader == "pil":
            return self.pipeline(read_pil_image(path, self.truncated))
        return self.pipeline(read_image(path, self.truncated))


def eval_image_loader(cfg, in_training: bool) -> str:
    """``TEST.IMAGE_LOADER`` resolved: 'auto' is the reference's choice, 'cv2' for the evaluation during
    training (``train_tsd.py``) and 'pil' for stand-alone evaluation (``test_tsd.py``: test.py and the
    tools that evaluate a checkpoint)."""
    loader = cfg.TEST.IMAGE_LOADER
    if loader == "auto":
        return "cv2" if in_training else "pil"
    return loader


def build_eval_transform(cfg, in_training: bool = False) -> EvalTransform:
    """The evaluation input of an image file: ``INPUT.SIZE_TEST``, ``INPUT.PIXEL_MEAN`` / ``PIXEL_STD``,
    the path of :func:`eval_image_loader`, ``DATASETS.TRUNCATED_IMAGES``; see :class:`EvalTransform`."""
    i = cfg.INPUT
    return EvalTransform(i.SIZE_TEST, i.PIXEL_MEAN, i.PIXEL_STD, eval_image_loader(cfg, in_training),
                         cfg.DATASETS.TRUNCATED_IMAGES)
