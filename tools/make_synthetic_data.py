#!/usr/bin/env python
"""Generate a synthetic stand-in for Occluded-Duke, Market-1501 or Occluded-REID in the exact on-disk layout.

The real images and the bpbreid PifPaf parsing masks cannot be redistributed, so CI, the demo, the
tests and the benchmarks run on this generator's output (reference layout: TSD_REFERENCE.md §3)::

    ROOT/Occluded_Duke/{bounding_box_train,query,bounding_box_test}/<pid:04d>_c<cam>_f<frame:07d>.jpg
    ROOT/Occluded_Duke/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy   (36, H/8, W/8) float16
    ROOT/Occluded_Duke/new_query.txt, new_gallery.txt                      (§3.8 new benchmark)

    --dataset market1501 (train here, test on Occluded-REID: the paper's second protocol)
    ROOT/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/<pid:04d>_c<cam>s<seq>_<frame:06d>_<box:02d>.jpg
    ROOT/Market-1501-v15.09.15/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy   (junk -1, distractors 0000)

    --dataset occ_reid (evaluation only: no masks)
    ROOT/ICME2018_Occluded-Person-Reidentification_datasets/Occluded_REID/
        {occluded_body_images,whole_body_images}/<id:03d>/<id:03d>_<n:02d>.tif

Every image shows one target person whose clothes (head, arms, torso, legs, feet) are a
deterministic function of ``(seed, pid)``, drawn in a random walking pose on a camera-specific
background under camera-specific lighting. Occluded images add an object (car, crate, pole, board) or
another person in front of the target. The mask holds the 36 PifPaf fields (17 keypoint blobs, 19
limb fields, channel order of §3.3) rendered from the target's skeleton and zeroed wherever the target
is not visible, so a part hidden by an occluder has no parsing label — as with the real masks.

Scales: ``tiny`` (~20 ids, unit tests), ``small`` (~100 ids, demo) and ``full``, which mirrors the real
Occluded-Duke one-to-one from its name lists (``--names-from``) and has the real split statistics of
Market-1501 (751 train ids / 12,936 images, 3,368 queries, 19,732 gallery files) and Occluded-REID
(200 ids x 5 occluded + 5 whole-body images). Each image is rendered from its own RNG
seeded by ``(seed, file name)``, so the output bytes do not depend on the number of workers.

Usage::

    python tools/make_synthetic_data.py --root data --scale small --seed 0
    python tools/make_synthetic_data.py --root data --scale full --names-from ../shared/data/Occluded_Duke --workers 2
    python tools/make_synthetic_data.py --root data --dataset market1501 --scale small
    python tools/make_synthetic_data.py --root data --dataset occ_reid --scale small
"""
from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run as a script from anywhere: make `utils` importable
    sys.path.insert(0, _REPO)

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import lru_cache  # noqa: E402
from multiprocessing import Pool  # noqa: E402
from typing import Callable, Union  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from utils.errors import ConfigError, DataError  # noqa: E402
from utils.logger import get_logger, setup_logger  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# Layout and constants
# ---------------------------------------------------------------------------------------------------
DATASET_DIR = "Occluded_Duke"
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
MASK_DIR = os.path.join("masks", "pifpaf_maskrcnn_filtering")
NEW_QUERY, NEW_GALLERY = "new_query.txt", "new_gallery.txt"
# Written first and removed with the outputs: lets a re-run replace an earlier synthetic set while
# refusing to overwrite a folder that may hold the user's real data.
MARKER = "SYNTHETIC.json"
NAME_RE = re.compile(r"([-\d]+)_c(\d)")  # the loaders' id/camera regex (§3.2)
NUM_CAMS = 8
JPEG_QUALITY = 90
MASK_STRIDE = 8  # PifPaf fields are predicted at stride 8

# Occlusion kinds; new-benchmark labels of query-identity images (§3.8): 1 person, 2 object, 3 none.
NONE, OBJECT, PERSON = "none", "object", "person"
OCCLUSION_LABEL = {PERSON: 1, OBJECT: 2, NONE: 3}
LABEL_OCCLUSION = {v: k for k, v in OCCLUSION_LABEL.items()}
KINDS = (NONE, OBJECT, PERSON)
TRAIN_OCCLUSION_P = (0.8, 0.1, 0.1)  # training images: mostly holistic
DISTRACTOR_OCCLUSION_P = (0.7, 0.15, 0.15)  # label-0 gallery images
HIDDEN_RANGE = (0.2, 0.75)  # fraction of the target's body an occluder hides
OCCLUDER_TRIES = 8
DUKE_HEIGHTS = (150, 300)  # image height range (px); width from the ~2.3:1 aspect of Duke boxes
DUKE_ASPECTS = (2.0, 2.7)
MAX_NEW_QUERIES_PER_ID = 5

KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
             "left_knee", "right_knee", "left_ankle", "right_ankle")
KP = {name: i for i, name in enumerate(KEYPOINTS)}
FACE = [KP["nose"], KP["left_eye"], KP["right_eye"]]
# Channels 17..35: limb fields as (keypoint a, keypoint b), PIFPAF_PARTS order (§3.3).
LIMBS = np.array([(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                  (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)])
# Field widths in units of the person height: broad torso fields so that the torso's inside is
# labelled too, thin face fields, ankles wider than the shin fields so that the feet win below them.
KP_SIGMA = np.array([0.03] * 5 + [0.035] * 10 + [0.045] * 2, np.float32)
LIMB_SIGMA = np.array([0.035] * 4 + [0.05, 0.065, 0.065, 0.05] + [0.03] * 4 + [0.02] * 5 + [0.03] * 2, np.float32)

Colour = tuple[int, int, int]  # BGR
Fill = Union[Colour, "Texture"]

# BGR palettes. Garment colours are few and weighted towards dark ones (as in Duke's winter scenes)
# so that many identities share a colour per part and only the combination of parts is distinctive.
GARMENT = ((28, 28, 30), (90, 42, 22), (118, 118, 118), (222, 222, 218), (42, 40, 178), (176, 104, 44),
           (62, 118, 52), (142, 178, 202), (40, 70, 110), (40, 186, 218), (118, 52, 102))
GARMENT_P = np.array([3, 3, 2, 1.5, 1, 1.5, 1, 1, 1, 0.7, 0.7]) / 16.4
SKIN = ((178, 198, 232), (138, 168, 212), (98, 134, 184), (66, 92, 138))
HAIR = ((22, 22, 26), (30, 45, 72), (60, 112, 172), (150, 150, 152), (36, 60, 122))
VEHICLE = ((40, 40, 44), (200, 200, 205), (60, 60, 170), (150, 90, 40), (130, 130, 130), (40, 110, 60))
TEXTURES = ("plain", "hstripes", "vstripes", "checks")
OBJECT_TYPES = ("car", "crate", "pole", "board")

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
SCALE_CHOICES = (*SCALES, "full")


# ---------------------------------------------------------------------------------------------------
# Appearance of identities and cameras
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Garment:
    """A piece of clothing: base colour, accent colour and a texture with a period (× person height)."""

    colour: Colour
    accent: Colour
    texture: str
    period: float


@dataclass(frozen=True)
class Appearance:
    """What a person looks like, per body part."""

    skin: Colour
    hair: Colour
    hair_style: str  # 'short' | 'long' | 'hat'
    hat: Colour
    upper: Garment
    long_sleeves: bool
    lower: Garment
    shorts: bool
    shoes: Colour
    build: float  # body width factor


@dataclass(frozen=True)
class CameraStyle:
    """Background and lighting of one camera."""

    wall: np.ndarray  # (3,) float BGR
    ground: np.ndarray
    horizon: float  # fraction of the image height
    pattern: str  # 'plain' | 'bands' | 'windows' | 'noise'
    period: float  # pattern period as a fraction of the image height
    gain: float
    contrast: float
    cast: np.ndarray  # (3,) per-channel gain


def _colour(rng: np.random.Generator, palette: tuple[Colour, ...], p: np.ndarray | None = None) -> Colour:
    return palette[int(rng.choice(len(palette), p=p))]


def _garment(rng: np.random.Generator, texture_p: tuple[float, ...]) -> Garment:
    colour = _colour(rng, GARMENT, GARMENT_P)
    accent = colour
    while accent == colour:
        accent = _colour(rng, GARMENT)
    return Garment(colour, accent, TEXTURES[int(rng.choice(len(TEXTURES), p=texture_p))], float(rng.uniform(0.04, 0.09)))


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Sample a person's appearance (identities and occluding bystanders use the same sampler)."""
    return Appearance(
        skin=_colour(rng, SKIN), hair=_colour(rng, HAIR),
        hair_style=str(rng.choice(("short", "long", "hat"), p=(0.6, 0.25, 0.15))), hat=_colour(rng, GARMENT),
        upper=_garment(rng, (0.45, 0.2, 0.15, 0.2)), long_sleeves=bool(rng.random() < 0.7),
        lower=_garment(rng, (0.75, 0.05, 0.1, 0.1)), shorts=bool(rng.random() < 0.15),
        shoes=_colour(rng, GARMENT, GARMENT_P), build=float(rng.uniform(0.85, 1.15)))


@lru_cache(maxsize=4096)
def identity_appearance(seed: int, pid: int) -> Appearance:
    """The appearance of identity ``pid``: a function of ``(seed, pid)`` only, identical across splits."""
    return random_appearance(np.random.default_rng([seed, 0x1D, pid % 2**32]))


@lru_cache(maxsize=NUM_CAMS)
def camera_style(seed: int, cam: int) -> CameraStyle:
    """Background colours/texture and lighting of camera ``cam`` (1..8) under ``seed``."""
    rng = np.random.default_rng([seed, 0xCA, cam])
    grey = rng.uniform(70, 190)
    return CameraStyle(
        wall=0.55 * grey + 0.45 * rng.uniform(40, 220, 3), ground=rng.uniform(0.45, 0.8) * grey + rng.uniform(-15, 15, 3),
        horizon=float(rng.uniform(0.45, 0.75)), pattern=str(rng.choice(("plain", "bands", "windows", "noise"))),
        period=float(rng.uniform(0.08, 0.2)), gain=float(rng.uniform(0.75, 1.2)),
        contrast=float(rng.uniform(0.8, 1.15)), cast=rng.uniform(0.88, 1.12, 3))


# ---------------------------------------------------------------------------------------------------
# Pose: a walking skeleton in image coordinates
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pose:
    """A person's skeleton placed in the image."""

    keypoints: np.ndarray  # (17, 2) float32 (x, y) pixels, COCO order
    present: np.ndarray  # (17,) float32: 0 for keypoints PifPaf would not see (the face from behind)
    head: np.ndarray  # (2,) head centre
    origin: np.ndarray  # (2,) body centre x, top of the head y
    height: float  # person height in pixels
    facing: float  # +1 walking right, -1 left, 0 towards/away from the camera
    view: str  # 'front' | 'back' | 'left' | 'right'


def sample_pose(rng: np.random.Generator, cx: float, top: float, height: float, build: float) -> Pose:
    """A random walking pose (view, gait phase, stride, lean) of a person ``height`` px tall."""
    view = str(rng.choice(("front", "back", "left", "right")))
    facing = {"left": -1.0, "right": 1.0}.get(view, 0.0)
    # Lateral position of the person's left side: image right seen from the front, left from behind,
    # nearly on the body axis in profile.
    lat = {"front": 1.0, "back": -1.0}.get(view, 0.25)
    # In profile the gait swings along x; seen frontally it only shows as a little sideways motion.
    along = facing if facing else 0.15
    phase, stride = rng.uniform(0, 2 * np.pi), rng.uniform(0.12, 0.42)
    sw, hw = 0.105 * build, 0.07 * build
    kp = np.zeros((17, 2), np.float32)
    for sign, side in ((1.0, "left"), (-1.0, "right")):
        swing = stride * math.sin(phase + (0.0 if sign > 0 else math.pi))
        bend = 0.45 * max(0.0, math.sin(phase + (math.pi / 2 if sign > 0 else -math.pi / 2)))
        hip = np.array([sign * lat * hw, 0.52])
        knee = hip + 0.21 * np.array([math.sin(swing) * along, math.cos(swing)])
        ankle = knee + 0.21 * np.array([math.sin(swing - bend) * along, math.cos(swing - bend)])
        arm = -0.9 * swing
        out = 0.0 if facing else sign * lat * 0.1  # arms hang slightly outwards seen frontally
        shoulder = np.array([sign * lat * sw, 0.19])
        elbow = shoulder + 0.16 * np.array([math.sin(arm) * along + out, math.cos(arm)])
        wrist = elbow + 0.15 * np.array([math.sin(arm + 0.35) * along + out, math.cos(arm + 0.35)])
        for part, point in (("hip", hip), ("knee", knee), ("ankle", ankle), ("shoulder", shoulder),
                            ("elbow", elbow), ("wrist", wrist)):
            kp[KP[f"{side}_{part}"]] = point
        eye_x = facing * 0.04 + sign * lat * (0.008 if facing else 0.022)
        ear_x = -facing * 0.005 + sign * lat * (0.01 if facing else 0.05)
        kp[KP[f"{side}_eye"]] = (eye_x, 0.065)
        kp[KP[f"{side}_ear"]] = (ear_x, 0.07)
    kp[KP["nose"]] = (facing * 0.058, 0.085)
    head = np.array([facing * 0.005, 0.07])
    # A small lean about the hips.
    lean = rng.normal(0.0, 0.03)
    rot = np.array([[math.cos(lean), -math.sin(lean)], [math.sin(lean), math.cos(lean)]], np.float32)
    pivot = np.array([0.0, 0.52], np.float32)
    kp = (kp - pivot) @ rot.T + pivot
    head = (head - pivot) @ rot.T + pivot
    origin = np.array([cx, top], np.float32)
    present = np.ones(17, np.float32)
    if view == "back":
        present[FACE] = 0.0
    return Pose(kp * height + origin, present, head * height + origin, origin, float(height), facing, view)


# ---------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------
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


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def _segment(p: np.ndarray, q: np.ndarray, thickness: float) -> Shape:
    t = max(1, int(round(thickness)))
    return lambda img, c: cv2.line(img, _pt(p), _pt(q), c, t)


def _ellipse(centre: np.ndarray, axes: tuple[float, float], start: float = 0, end: float = 360) -> Shape:
    ax = (max(1, int(round(axes[0]))), max(1, int(round(axes[1]))))
    return lambda img, c: cv2.ellipse(img, _pt(centre), ax, 0, start, end, c, -1)


def _polygon(points: np.ndarray) -> Shape:
    pts = np.round(points).astype(np.int32)
    return lambda img, c: cv2.fillConvexPoly(img, pts, c)


def _rect(x0: float, y0: float, x1: float, y1: float) -> Shape:
    return _polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))


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


def draw_person(painter: Painter, pose: Pose, app: Appearance) -> None:
    """Draw a clothed person on ``painter`` in back-to-front order of the limbs."""
    kp, hp = pose.keypoints, pose.height
    upper = garment_fill(app.upper, pose.origin, hp)
    lower = garment_fill(app.lower, pose.origin, hp)
    arm_t, leg_t = 0.05 * hp * app.build, 0.075 * hp * app.build

    def leg(side: str) -> None:
        hip, knee, ankle = (kp[KP[f"{side}_{j}"]] for j in ("hip", "knee", "ankle"))
        painter.paint(_segment(hip, knee, leg_t), lower)
        painter.paint(_segment(knee, ankle, 0.9 * leg_t), app.skin if app.shorts else lower)
        foot = ankle + hp * np.array([0.025 * pose.facing, 0.03])
        painter.paint(_ellipse(foot, (hp * (0.045 if pose.facing else 0.03), hp * 0.022)), app.shoes)

    def arm(side: str) -> None:
        shoulder, elbow, wrist = (kp[KP[f"{side}_{j}"]] for j in ("shoulder", "elbow", "wrist"))
        painter.paint(_segment(shoulder, elbow, arm_t), upper)
        painter.paint(_segment(elbow, wrist, 0.9 * arm_t), upper if app.long_sleeves else app.skin)
        painter.paint(_ellipse(wrist, (0.022 * hp, 0.022 * hp)), app.skin)

    # In profile the near side (drawn last) is the left one when walking right.
    near, far = ("left", "right") if pose.facing >= 0 else ("right", "left")
    if pose.facing:
        arm(far)
    leg(far)
    leg(near)
    shoulders = kp[[KP["left_shoulder"], KP["right_shoulder"]]]
    hips = kp[[KP["left_hip"], KP["right_hip"]]]
    s_c, h_c = shoulders.mean(0), hips.mean(0)
    # Half widths of the torso; in profile the shoulder keypoints nearly coincide, so the body depth sets it.
    s_half = max(abs(shoulders[0, 0] - shoulders[1, 0]) / 2 + 0.02 * hp, 0.06 * hp * app.build)
    h_half = max(abs(hips[0, 0] - hips[1, 0]) / 2 + 0.02 * hp, 0.055 * hp)
    torso = np.array([[s_c[0] - s_half, s_c[1] - 0.02 * hp], [s_c[0] + s_half, s_c[1] - 0.02 * hp],
                      [h_c[0] + h_half, h_c[1] + 0.04 * hp], [h_c[0] - h_half, h_c[1] + 0.04 * hp]])
    painter.paint(_polygon(torso), upper)
    head = pose.head
    if app.hair_style == "long":
        painter.paint(_ellipse(head + hp * np.array([0.0, 0.05]), (0.062 * hp, 0.1 * hp)), app.hair)
    painter.paint(_segment(s_c, head, 0.045 * hp), app.skin)
    painter.paint(_ellipse(head, (0.052 * hp, 0.068 * hp)), app.skin)
    cap = head - hp * np.array([0.0, 0.012])
    if app.hair_style == "hat":
        painter.paint(_ellipse(cap, (0.058 * hp, 0.06 * hp), 180, 360), app.hat)
        brim = cap + hp * np.array([0.03 * pose.facing, 0.0])  # the peak points where the person walks
        half = hp * np.array([0.06 + 0.03 * abs(pose.facing), 0.0])
        painter.paint(_segment(brim - half, brim + half, 0.015 * hp), app.hat)
    elif pose.view == "back":
        painter.paint(_ellipse(head, (0.054 * hp, 0.07 * hp)), app.hair)  # the whole head is hair
    else:
        painter.paint(_ellipse(cap, (0.056 * hp, 0.058 * hp), 180, 360), app.hair)
    if pose.facing:
        arm(near)
    else:
        arm("left")
        arm("right")


def place_person(rng: np.random.Generator, h: int, w: int, build: float) -> Pose:
    """Pose of the target person: centred with position and scale jitter, as in a detector box."""
    height = h * rng.uniform(0.8, 0.94)
    top = h * rng.uniform(0.02, max(0.021, 0.98 - height / h))
    return sample_pose(rng, w * (0.5 + rng.uniform(-0.08, 0.08)), top, height, build)


def object_occluder(shape: tuple[int, int], rng: np.random.Generator) -> Painter:
    """A car, crate, pole or board in the foreground."""
    h, w = shape
    p = Painter(shape)
    kind = OBJECT_TYPES[int(rng.choice(len(OBJECT_TYPES), p=(0.3, 0.3, 0.2, 0.2)))]
    colour = _colour(rng, VEHICLE if kind == "car" else GARMENT)
    dark = tuple(int(0.55 * c) for c in colour)
    if kind == "car":  # covers the lower body over the full width
        top, x0, x1 = h * rng.uniform(0.45, 0.7), -w * rng.uniform(0, 0.3), w * (1 + rng.uniform(0, 0.3))
        roof = top + 0.08 * h
        p.paint(_polygon(np.array([[x0 + 0.1 * w, roof], [x0 + 0.3 * w, top], [x1 - 0.3 * w, top], [x1 - 0.1 * w, roof]])), dark)
        p.paint(_polygon(np.array([[x0 + 0.2 * w, roof], [x0 + 0.33 * w, top + 0.015 * h], [x1 - 0.33 * w, top + 0.015 * h],
                                   [x1 - 0.2 * w, roof]])), (70, 60, 50))
        p.paint(_rect(x0, roof, x1, h + 1), colour)
        p.paint(_segment(np.array([x0, roof + 0.05 * h]), np.array([x1, roof + 0.05 * h]), 0.012 * h), dark)
        for x in (x0 + 0.25 * w, x1 - 0.25 * w):
            p.paint(_ellipse(np.array([x, h]), (0.12 * w, 0.12 * w)), (20, 20, 20))
    elif kind == "crate":  # a box or bin standing in front of the legs
        bw, bh = w * rng.uniform(0.45, 0.95), h * rng.uniform(0.25, 0.5)
        x0, bottom = rng.uniform(-0.2 * w, w - 0.8 * bw), h * (1 + rng.uniform(0, 0.05))
        p.paint(_rect(x0, bottom - bh, x0 + bw, bottom), colour)
        for y in np.linspace(bottom - bh, bottom, 4, endpoint=False)[1:]:
            p.paint(_segment(np.array([x0, y]), np.array([x0 + bw, y]), 0.01 * h), dark)
    elif kind == "pole":  # a tree trunk or post over the full height
        pw, xc = w * rng.uniform(0.12, 0.3), w * rng.uniform(0.2, 0.8)
        p.paint(_rect(xc - pw / 2, -1, xc + pw / 2, h + 1), colour)
        p.paint(_rect(xc, -1, xc + pw / 2, h + 1), dark)
    else:  # a board/sign entering from one side at body height
        bw, bh, y0 = w * rng.uniform(0.4, 0.7), h * rng.uniform(0.25, 0.45), h * rng.uniform(0.05, 0.4)
        x0 = -1 if rng.random() < 0.5 else w - bw
        p.paint(_rect(x0, y0, x0 + bw, y0 + bh), colour)
        p.paint(_rect(x0 + 0.1 * bw, y0 + 0.2 * bh, x0 + 0.9 * bw, y0 + 0.35 * bh), dark)
    return p


def person_occluder(shape: tuple[int, int], rng: np.random.Generator, target: Pose) -> Painter:
    """A bystander beside the target and slightly closer to the camera."""
    h, w = shape
    app = random_appearance(rng)
    height = target.height * rng.uniform(0.95, 1.2)
    cx = target.origin[0] + target.height * (1 if rng.random() < 0.5 else -1) * rng.uniform(0.08, 0.2)
    top = target.origin[1] + h * rng.uniform(0.0, 0.12)
    p = Painter(shape)
    draw_person(p, sample_pose(rng, cx, top, height, app.build), app)
    return p


def render_background(style: CameraStyle, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A street scene of the camera (wall, ground, pattern, clutter) with per-image jitter; (h, w, 3) uint8."""
    horizon = int(h * np.clip(style.horizon + rng.normal(0, 0.04), 0.3, 0.9))
    img = np.empty((h, w, 3), np.float32)
    img[:horizon] = style.wall
    img[horizon:] = style.ground
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    half = style.period * h / 2
    offset = rng.uniform(0, 2 * half, 2)
    if style.pattern == "bands":
        img[:horizon] *= np.where(((ys[:horizon] + offset[0]) // half) % 2, 0.85, 1.0)[..., None]
    elif style.pattern == "windows":
        win = (((ys[:horizon] + offset[0]) // half) % 2) * (((xs + offset[1]) // half) % 2)
        img[:horizon] *= (1.0 - 0.3 * win)[..., None]
    elif style.pattern == "noise":
        img *= cv2.resize(rng.uniform(0.8, 1.2, (4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    img *= np.linspace(1.12, 0.9, h, dtype=np.float32)[:, None, None]  # light from above
    for _ in range(int(rng.integers(1, 4))):  # low-contrast clutter: doors, posts, parked things
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(0.0, 0.8) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.05, 0.3) * h
        cv2.rectangle(img, _pt((x0, y0)), _pt((x1, y1)), (style.wall * rng.uniform(0.6, 1.3)).tolist(), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def apply_lighting(img: np.ndarray, style: CameraStyle, rng: np.random.Generator) -> np.ndarray:
    """Camera exposure (contrast, gain, colour cast, per-image jitter), slight blur and sensor noise."""
    levels = np.arange(256, dtype=np.float32)[:, None]
    gain = style.gain * rng.uniform(0.9, 1.1)
    lut = ((levels - 128) * style.contrast + 128) * gain * style.cast[None, :]
    out = cv2.LUT(img, np.clip(lut, 0, 255).astype(np.uint8)[:, None, :])
    out = cv2.GaussianBlur(out, (3, 3), 0.6)
    noise = rng.standard_normal(out.shape[:2], dtype=np.float32)[..., None] * 3.0
    return np.clip(out + noise, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# PifPaf-like confidence fields
# ---------------------------------------------------------------------------------------------------
def pifpaf_fields(pose: Pose, visible: np.ndarray) -> np.ndarray:
    """The 36 confidence fields of the target on the stride-8 grid, zero where it is not visible.

    Args:
        pose: the target's skeleton.
        visible: (H, W) uint8, 255 where the target person is visible (its silhouette minus occluders);
            plays the role of bpbreid's Mask R-CNN filtering.
    Returns:
        (36, round(H/8), round(W/8)) float16 in [0, 1]: 17 keypoint blobs then 19 limb fields.
    """
    h, w = visible.shape
    mh, mw = max(1, round(h / MASK_STRIDE)), max(1, round(w / MASK_STRIDE))
    cy, cx = h / mh, w / mw
    grid = np.stack(np.meshgrid((np.arange(mw) + 0.5) * cx, (np.arange(mh) + 0.5) * cy), -1).reshape(1, -1, 2)
    grid = grid.astype(np.float32)
    kp = pose.keypoints
    min_sigma = 0.5 * max(cy, cx)  # a field never falls between grid points
    kp_sigma = np.maximum(KP_SIGMA * pose.height, min_sigma)
    d2 = ((grid - kp[:, None, :]) ** 2).sum(-1)
    kp_fields = np.exp(-d2 / (2 * kp_sigma[:, None] ** 2)) * pose.present[:, None]
    a, b = kp[LIMBS[:, 0]][:, None, :], kp[LIMBS[:, 1]][:, None, :]
    ab = b - a
    t = np.clip(((grid - a) * ab).sum(-1) / np.maximum((ab ** 2).sum(-1), 1e-6), 0, 1)
    d2 = ((grid - (a + t[..., None] * ab)) ** 2).sum(-1)
    limb_sigma = np.maximum(LIMB_SIGMA * pose.height, min_sigma)
    limb_fields = np.exp(-d2 / (2 * limb_sigma[:, None] ** 2)) * (pose.present[LIMBS].min(1))[:, None]
    coverage = cv2.resize(visible, (mw, mh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    support = np.clip(2.5 * coverage, 0, 1).reshape(1, -1)  # a cell 40% covered by the person counts fully
    fields = np.concatenate([kp_fields, limb_fields]) * support
    return np.clip(fields, 0, 1).reshape(36, mh, mw).astype(np.float16)


# ---------------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSpec:
    """One file to render: identity, camera, occlusion, and the split folders it is written to."""

    name: str  # '<pid:04d>_c<cam>_f<frame:07d>.jpg'
    pid: int
    cam: int  # 1..8
    splits: tuple[str, ...]  # several when the same image is in query/ and bounding_box_test/
    occlusion: str  # NONE | OBJECT | PERSON
    anonymous: bool = False  # a different random person per image (Market junk -1 / distractor 0000)


@dataclass(frozen=True)
class Rendered:
    """A rendered image with its parsing fields and the silhouette of its occluder."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    fields: np.ndarray  # (36, h, w) float16
    occluder: np.ndarray  # (H, W) uint8, 255 where the occluder is (all 0 for holistic images)


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The RNG of one image: depends only on the seed and the file name (not on order or workers).

    The split is deliberately left out, so a file listed in both query/ and bounding_box_test/ (as
    1,870 real ones are) renders to identical bytes in both folders.
    """
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def render(spec: ImageSpec, seed: int, heights: tuple[int, int], aspects: tuple[float, float] = DUKE_ASPECTS) -> Rendered:
    """Render the image and the parsing fields of ``spec`` (height in ``heights``, height:width in
    ``aspects``; Market-1501's fixed 128 x 64 boxes are ``heights=(128, 128), aspects=(2, 2)``)."""
    rng = image_rng(seed, spec.name)
    h = int(rng.integers(heights[0], heights[1], endpoint=True))
    w = max(16, int(round(h / rng.uniform(*aspects))))
    style = camera_style(seed, spec.cam)
    # Junk boxes and distractors (Market's -1 / 0000) are many different people under one label.
    app = random_appearance(rng) if spec.anonymous else identity_appearance(seed, spec.pid)
    canvas = render_background(style, h, w, rng)
    pose = place_person(rng, h, w, app.build)
    target = Painter((h, w))
    draw_person(target, pose, app)
    target.composite(canvas)
    occluder = np.zeros((h, w), np.uint8)
    if spec.occlusion != NONE:
        body = target.labels > 0
        for _ in range(OCCLUDER_TRIES):  # resample occluders that hide too little or nearly everything
            p = object_occluder((h, w), rng) if spec.occlusion == OBJECT else person_occluder((h, w), rng, pose)
            if HIDDEN_RANGE[0] <= (p.labels[body] > 0).mean() <= HIDDEN_RANGE[1]:
                break
        p.composite(canvas)
        occluder = p.silhouette
    fields = pifpaf_fields(pose, cv2.bitwise_and(target.silhouette, cv2.bitwise_not(occluder)))
    return Rendered(apply_lighting(canvas, style, rng), fields, occluder)


# ---------------------------------------------------------------------------------------------------
# Planners: which files exist, with which occlusion
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Everything to write: the images and the two new-benchmark lists (lines without newline)."""

    images: list[ImageSpec]
    new_query: list[str]
    new_gallery: list[str]
    heights: tuple[int, int]
    aspects: tuple[float, float] = DUKE_ASPECTS
    dataset_dir: str = DATASET_DIR  # under the root
    folders: tuple[str, ...] = SPLITS  # top-level folders of the splits (ImageSpec.splits may go deeper)
    masks: bool = True  # write the PifPaf fields (training sets only)


def new_benchmark_lists(images: list[ImageSpec], query_pids: set[int], rng: np.random.Generator) -> tuple[list[str], list[str]]:
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
    return Plan(images, new_query, new_gallery, spec.heights)


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
            raise DataError(f"{os.path.join(names_from, NEW_GALLERY)}: bad line '{line}', expected '<split>/<name>.jpg,<0-3>'")
        labels[path] = int(label)
    listed = {f"{split}/{n}" for split in SPLITS for n in names[split]}
    for filename, paths in ((NEW_QUERY, new_query), (NEW_GALLERY, labels)):
        missing = next((p for p in paths if p not in listed), None)
        if missing is not None:
            raise DataError(f"{os.path.join(names_from, filename)}: '{missing}' is in none of the .list files of {names_from}")
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
    return Plan(images, new_query, new_gallery, DUKE_HEIGHTS)


# ---------------------------------------------------------------------------------------------------
# Market-1501 and Occluded-REID (the paper's second protocol: train on Market, test on Occluded-REID)
# ---------------------------------------------------------------------------------------------------
MARKET_DIR = "Market-1501-v15.09.15"
MARKET_CAMS = 6
MARKET_SIZE = (128, 64)  # every Market-1501 box is 128 x 64
OCC_REID_DIR = os.path.join("ICME2018_Occluded-Person-Reidentification_datasets", "Occluded_REID")
OCC_REID_FOLDERS = ("occluded_body_images", "whole_body_images")
DATASETS = ("occ_duke", "market1501", "occ_reid")


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
# Occluded-REID: identities x (occluded, whole-body) images each; full = the real 200 x (5, 5).
OCC_REID_SCALES = {"tiny": (8, 3, 3), "small": (40, 5, 5), "full": (200, 5, 5)}
OCC_REID_HEIGHTS = {"tiny": (112, 144), "small": DUKE_HEIGHTS, "full": DUKE_HEIGHTS}


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
        cams = rng.choice(np.arange(1, MARKET_CAMS + 1), size=int(rng.integers(2, MARKET_CAMS, endpoint=True)), replace=False)
        for _ in range(n):
            add(pid, int(rng.choice(cams)), "bounding_box_train")
    queries = _spread(rng, spec.queries, spec.test_ids, 1)
    gallery = _spread(rng, spec.gallery, spec.test_ids, 2)
    for pid, n_query, n_gallery in zip(test_pids, queries, gallery):
        cams = rng.permutation(np.arange(1, MARKET_CAMS + 1))[: int(rng.integers(2, MARKET_CAMS, endpoint=True))].tolist()
        for k in range(n_query):
            add(pid, cams[k % len(cams)], "query")
        for k in range(n_gallery):
            add(pid, cams[k % len(cams)], "bounding_box_test")
    for pid, n in ((0, spec.distractors), (-1, spec.junk)):
        for _ in range(n):
            add(pid, int(rng.integers(1, MARKET_CAMS, endpoint=True)), "bounding_box_test", anonymous=True)
    return Plan(images, [], [], (MARKET_SIZE[0],) * 2, (MARKET_SIZE[0] / MARKET_SIZE[1],) * 2, MARKET_DIR)


def plan_occ_reid(scale: str, seed: int) -> Plan:
    """Plan an Occluded-REID (evaluation only, no masks): ``<folder>/<id:03d>/<id:03d>_<n:02d>.tif``,
    occluded images (by objects and persons alternately) and holistic whole-body images per identity.
    The camera style is drawn per image: the release was shot with hand-held cameras."""
    num_ids, num_occluded, num_whole = OCC_REID_SCALES[scale]
    images = []
    for pid in range(1, num_ids + 1):
        for folder, count in zip(OCC_REID_FOLDERS, (num_occluded, num_whole)):
            for n in range(1, count + 1):
                filename = f"{pid:03d}_{n:02d}.tif"
                cam = 1 + zlib.crc32(f"{seed}/{folder}/{filename}".encode()) % NUM_CAMS
                occlusion = (OBJECT, PERSON)[n % 2] if folder == OCC_REID_FOLDERS[0] else NONE
                images.append(ImageSpec(filename, pid, cam, (f"{folder}/{pid:03d}",), occlusion))
    return Plan(images, [], [], OCC_REID_HEIGHTS[scale], DUKE_ASPECTS, OCC_REID_DIR, OCC_REID_FOLDERS, masks=False)


# ---------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------
def _render_chunk(args: tuple[str, int, tuple[int, int], list[ImageSpec]]) -> tuple[int, int]:
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
                log.info("  %d/%d images (%.0f%%), %.1f s", done, total, 100 * done / total, time.perf_counter() - start)
                next_report = math.floor(10 * done / total) / 10 + 0.1
    finally:
        if pool:
            pool.close()
            pool.join()
    stats.update(seconds=round(time.perf_counter() - start, 2), bytes=written)
    return stats


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description="Generate a synthetic Occluded-Duke, Market-1501 or Occluded-REID "
                                                 "(images, PifPaf masks, new-benchmark lists) in the real layout.")
    parser.add_argument("--root", required=True, help="data root; the set is written to ROOT/<the data set's folder>")
    parser.add_argument("--dataset", default="occ_duke", choices=DATASETS,
                        help="occ_duke (ROOT/Occluded_Duke), market1501 (ROOT/Market-1501-v15.09.15) or occ_reid "
                             "(ROOT/ICME2018_Occluded-Person-Reidentification_datasets/Occluded_REID)")
    parser.add_argument("--scale", default="tiny", choices=SCALE_CHOICES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--names-from", default=None, metavar="DIR",
                        help="folder with the real name lists (.list, new_query.txt, new_gallery.txt); "
                             "--dataset occ_duke --scale full only")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    setup_logger(None)
    stats = generate(args.root, args.scale, args.seed, args.names_from, args.workers, args.dataset)
    log = get_logger()
    for split in stats["images"]:
        log.info("%-20s %6d images %5d ids %6d occluded", split, stats["images"][split], stats["ids"][split],
                 stats["occluded"][split])
    if args.dataset == "occ_duke":
        log.info("new_query.txt %d lines, new_gallery.txt %d lines", stats["new_query"], stats["new_gallery"])
    log.info("done in %.1f s, %.1f MB written", stats["seconds"], stats["bytes"] / 2**20)


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main)
