"""Market-1501 (train here, test on Occluded-REID: the paper's second protocol) with bpbreid's mask layout::

    ROOT/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/<pid:04d>_c<cam>s<seq>_<frame:06d>_<box:02d>.jpg
    ROOT/Market-1501-v15.09.15/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy   (junk -1, distractors 0000)
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from tools.synthetic.layout import KINDS, TRAIN_OCCLUSION_P, ImageSpec, Plan

MARKET_DIR = "Market-1501-v15.09.15"
MARKET_CAMS = 6
MARKET_SIZE = (128, 64)  # every Market-1501 box is 128 x 64


@dataclass(frozen=True)
class MarketSpec:
    """Sizes of a Market-1501: totals per split (spread over the identities), distractors 0000 and
    junk boxes -1 in the gallery."""

    train_ids: int
    train_images: int
    test_ids: int
    queries: int
    gallery: int  # gallery images of the test identities (without distractors and junk)
    distractors: int
    junk: int


# full = the real release: 12,936 train images / 751 ids; 3,368 queries / 750 ids; 19,732 gallery
# files = 13,120 of the 750 test ids + 2,793 distractors (0000) + 3,819 junk (-1): 15,913 after the
# loaders drop the junk.
MARKET_SCALES = {
    "tiny": MarketSpec(12, 72, 6, 12, 30, 4, 4),
    "small": MarketSpec(60, 660, 32, 110, 420, 40, 40),
    "full": MarketSpec(751, 12936, 750, 3368, 13120, 2793, 3819),
}


def _spread(rng: np.random.Generator, total: int, n: int, least: int) -> list[int]:
    """``n`` random counts, each at least ``least``, summing to exactly ``total``."""
    if total < n * least:
        raise ValueError(f"cannot spread {total} over {n} x at least {least}")
    return (rng.multinomial(total - n * least, np.full(n, 1 / n)) + least).tolist()


class _MarketNamer:
    """Unique Market-style names ``<pid:04d>_c<cam>s<seq>_<frame:06d>_<box:02d>.jpg`` (junk: ``-1_...``)."""

    def __init__(self) -> None:
        self._count: dict[tuple[int, int], int] = {}

    def __call__(self, pid: int, cam: int) -> str:
        k = self._count.get((pid, cam), 0)
        self._count[pid, cam] = k + 1
        seq = 1 + (pid + k // 40) % 6
        frame = (abs(pid) * 131 + cam * 977) % 50000 + 25 * k
        return f"{'-1' if pid == -1 else f'{pid:04d}'}_c{cam}s{seq}_{frame:06d}_{1 + k % 8:02d}.jpg"


def plan_market(scale: str, seed: int) -> Plan:
    """Plan a Market-1501 (``full``: the real split statistics) with bpbreid's mask layout.

    Train and test identities are disjoint ids in 1..1501. A test identity appears in 2-6 of the 6
    cameras; its queries and gallery images cycle through them and it has at least two gallery
    images, so every query has a gallery match in another camera. Market is mostly holistic.
    """
    spec = MARKET_SCALES[scale]
    rng = np.random.default_rng([seed, zlib.crc32(f"market1501/{scale}".encode())])
    pids = rng.choice(np.arange(1, 1502), size=spec.train_ids + spec.test_ids, replace=False).tolist()
    train_pids, test_pids = sorted(pids[:spec.train_ids]), sorted(pids[spec.train_ids:])
    name = _MarketNamer()
    images: list[ImageSpec] = []

    def add(pid: int, cam: int, split: str, anonymous: bool = False) -> None:
        occlusion = str(rng.choice(KINDS, p=TRAIN_OCCLUSION_P))
        images.append(ImageSpec(name(pid, cam), pid, cam, (split,), occlusion, anonymous))

    for pid, n in zip(train_pids, _spread(rng, spec.train_images, spec.train_ids, 2)):
        cams = rng.choice(np.arange(1, MARKET_CAMS + 1), size=int(rng.integers(2, MARKET_CAMS, endpoint=True)),
                          replace=False)
        for _ in range(n):
            add(pid, int(rng.choice(cams)), "bounding_box_train")
    queries = _spread(rng, spec.queries, spec.test_ids, 1)
    gallery = _spread(rng, spec.gallery, spec.test_ids, 2)
    for pid, n_query, n_gallery in zip(test_pids, queries, gallery):
        cams = rng.permutation(np.arange(1, MARKET_CAMS + 1))[
            : int(rng.integers(2, MARKET_CAMS, endpoint=True))].tolist()
        for k in range(n_query):
            add(pid, cams[k % len(cams)], "query")
        for k in range(n_gallery):
            add(pid, cams[k % len(cams)], "bounding_box_test")
    for pid, n in ((0, spec.distractors), (-1, spec.junk)):
        for _ in range(n):
            add(pid, int(rng.integers(1, MARKET_CAMS, endpoint=True)), "bounding_box_test", anonymous=True)
    return Plan(images, [], [], (MARKET_SIZE[0],) * 2, (MARKET_SIZE[0] / MARKET_SIZE[1],) * 2, MARKET_DIR)
