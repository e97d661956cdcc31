"""Painting primitives of the synthetic renderer: shapes drawn into a label map and composited at once."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np

Colour = tuple[int, int, int]  # BGR
Fill = Union[Colour, "Texture"]


@dataclass(frozen=True)
class Garment:
    """A piece of clothing: base colour, accent colour and a texture with a period (× person height)."""

    colour: Colour
    accent: Colour
    texture: str
    period: float


Shape = Callable[[np.ndarray, object], None]  # draws itself on an image with a colour/label


class Painter:
    """Paints shapes into a label map (one label per distinct fill) and composites them in one go.

    Drawing single-channel labels with cv2 and colouring the pixels once is much cheaper than
    compositing every textured shape onto the canvas; later shapes cover earlier ones as usual.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.labels = np.zeros(shape, np.uint8)
        self._fills: dict[Fill, int] = {}

    def paint(self, shape: Shape, fill: Fill) -> None:
        """Draw ``shape`` with a plain colour or a :class:`Texture`."""
        shape(self.labels, self._fills.setdefault(fill, len(self._fills) + 1))

    @property
    def silhouette(self) -> np.ndarray:
        """(H, W) uint8, 255 wherever something was painted."""
        return (self.labels > 0).astype(np.uint8) * 255

    def composite(self, canvas: np.ndarray) -> None:
        """Colour the painted pixels of ``canvas`` (H, W, 3) uint8 in place."""
        ys, xs = np.nonzero(self.labels)
        labels = self.labels[ys, xs]
        table = np.zeros((len(self._fills) + 1, 3), np.uint8)
        for fill, label in self._fills.items():
            if not isinstance(fill, Texture):
                table[label] = fill
        colours = table[labels]
        for fill, label in self._fills.items():
            if isinstance(fill, Texture):
                sel = labels == label
                colours[sel] = fill.colours(ys[sel], xs[sel])
        canvas[ys, xs] = colours


def pixel(p: np.ndarray) -> tuple[int, int]:
    """The integer pixel (x, y) nearest to the point ``p``."""
    return int(round(float(p[0]))), int(round(float(p[1])))


def segment(p: np.ndarray, q: np.ndarray, thickness: float) -> Shape:
    """A line from ``p`` to ``q``, ``thickness`` px wide."""
    t = max(1, int(round(thickness)))
    return lambda img, c: cv2.line(img, pixel(p), pixel(q), c, t)


def ellipse(centre: np.ndarray, axes: tuple[float, float], start: float = 0, end: float = 360) -> Shape:
    """A filled ellipse (or the sector from ``start`` to ``end`` degrees) with half ``axes`` (x, y) in px."""
    ax = (max(1, int(round(axes[0]))), max(1, int(round(axes[1]))))
    return lambda img, c: cv2.ellipse(img, pixel(centre), ax, 0, start, end, c, -1)


def polygon(points: np.ndarray) -> Shape:
    """A filled convex polygon with ``points`` (n, 2) (x, y) in px."""
    pts = np.round(points).astype(np.int32)
    return lambda img, c: cv2.fillConvexPoly(img, pts, c)


def rect(x0: float, y0: float, x1: float, y1: float) -> Shape:
    """A filled axis-aligned rectangle from corner (x0, y0) to (x1, y1)."""
    return polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))


@dataclass(frozen=True, eq=False)  # hashed by identity: one label per texture object
class Texture:
    """A two-colour garment pattern anchored at the person, so that it moves with them."""

    garment: Garment
    origin: np.ndarray  # (2,) pattern phase origin (x, y) in pixels
    half: float  # half period in pixels

    def colours(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """(n, 3) uint8 colours of the pixels at rows ``ys`` and columns ``xs``."""
        by = ((ys - self.origin[1]) // self.half).astype(np.int64) % 2
        bx = ((xs - self.origin[0]) // self.half).astype(np.int64) % 2
        band = {"hstripes": by, "vstripes": bx, "checks": by ^ bx}[self.garment.texture]
        return np.where(band[:, None].astype(bool), np.array(self.garment.accent, np.uint8),
                        np.array(self.garment.colour, np.uint8))


def garment_fill(g: Garment, origin: np.ndarray, person_height: float) -> Fill:
    """The fill of a garment: its plain colour or its texture."""
    if g.texture == "plain":
        return g.colour
    return Texture(g, origin, max(2.0, g.period * person_height / 2))
