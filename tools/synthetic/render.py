"""One synthetic image: a person on a camera's street scene, an occluder, lighting and the PifPaf fields.

Every image shows one target person whose clothes are a deterministic function of ``(seed, pid)``
(:func:`tools.synthetic.person.identity_appearance`), drawn in a random walking pose on a
camera-specific background under camera-specific lighting. Occluded images add an object (car, crate,
pole, board) or another person in front of the target. The mask holds the 36 PifPaf fields (17 keypoint
blobs, 19 limb fields, channel order of §3.3) rendered from the target's skeleton and zeroed wherever
the target is not visible, so a part hidden by an occluder has no parsing label, as with the real masks.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from config.parts import PIFPAF_LIMBS
from tools.synthetic.layout import DUKE_ASPECTS, NONE, NUM_CAMS, OBJECT, ImageSpec
from tools.synthetic.paint import Painter, ellipse, pixel, polygon, rect, segment
from tools.synthetic.person import (
    GARMENT,
    Pose,
    draw_person,
    identity_appearance,
    pick_colour,
    place_person,
    random_appearance,
    sample_pose,
)

MASK_STRIDE = 8  # PifPaf fields are predicted at stride 8
HIDDEN_RANGE = (0.2, 0.75)  # fraction of the target's body an occluder hides
OCCLUDER_TRIES = 8
# Channels 17..35: limb fields as (keypoint a, keypoint b) (§3.3).
LIMBS = np.array(PIFPAF_LIMBS)
# Field widths in units of the person height: broad torso fields so that the torso's inside is
# labelled too, thin face fields, ankles wider than the shin fields so that the feet win below them.
KP_SIGMA = np.array([0.03] * 5 + [0.035] * 10 + [0.045] * 2, np.float32)
LIMB_SIGMA = np.array([0.035] * 4 + [0.05, 0.065, 0.065, 0.05] + [0.03] * 4 + [0.02] * 5 + [0.03] * 2, np.float32)
VEHICLE = ((40, 40, 44), (200, 200, 205), (60, 60, 170), (150, 90, 40), (130, 130, 130), (40, 110, 60))
OBJECT_TYPES = ("car", "crate", "pole", "board")


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


@lru_cache(maxsize=NUM_CAMS)
def camera_style(seed: int, cam: int) -> CameraStyle:
    """Background colours/texture and lighting of camera ``cam`` (1..8) under ``seed``."""
    rng = np.random.default_rng([seed, 0xCA, cam])
    grey = rng.uniform(70, 190)
    return CameraStyle(
        wall=0.55 * grey + 0.45 * rng.uniform(40, 220, 3),
        ground=rng.uniform(0.45, 0.8) * grey + rng.uniform(-15, 15, 3),
        horizon=float(rng.uniform(0.45, 0.75)), pattern=str(rng.choice(("plain", "bands", "windows", "noise"))),
        period=float(rng.uniform(0.08, 0.2)), gain=float(rng.uniform(0.75, 1.2)),
        contrast=float(rng.uniform(0.8, 1.15)), cast=rng.uniform(0.88, 1.12, 3))


def object_occluder(shape: tuple[int, int], rng: np.random.Generator) -> Painter:
    """A car, crate, pole or board in the foreground."""
    h, w = shape
    p = Painter(shape)
    kind = OBJECT_TYPES[int(rng.choice(len(OBJECT_TYPES), p=(0.3, 0.3, 0.2, 0.2)))]
    colour = pick_colour(rng, VEHICLE if kind == "car" else GARMENT)
    dark = tuple(int(0.55 * c) for c in colour)
    if kind == "car":  # covers the lower body over the full width
        top, x0, x1 = h * rng.uniform(0.45, 0.7), -w * rng.uniform(0, 0.3), w * (1 + rng.uniform(0, 0.3))
        roof = top + 0.08 * h
        p.paint(polygon(np.array([[x0 + 0.1 * w, roof], [x0 + 0.3 * w, top], [x1 - 0.3 * w, top],
                                   [x1 - 0.1 * w, roof]])), dark)
        p.paint(polygon(np.array([[x0 + 0.2 * w, roof], [x0 + 0.33 * w, top + 0.015 * h],
                                   [x1 - 0.33 * w, top + 0.015 * h], [x1 - 0.2 * w, roof]])), (70, 60, 50))
        p.paint(rect(x0, roof, x1, h + 1), colour)
        p.paint(segment(np.array([x0, roof + 0.05 * h]), np.array([x1, roof + 0.05 * h]), 0.012 * h), dark)
        for x in (x0 + 0.25 * w, x1 - 0.25 * w):
            p.paint(ellipse(np.array([x, h]), (0.12 * w, 0.12 * w)), (20, 20, 20))
    elif kind == "crate":  # a box or bin standing in front of the legs
        bw, bh = w * rng.uniform(0.45, 0.95), h * rng.uniform(0.25, 0.5)
        x0, bottom = rng.uniform(-0.2 * w, w - 0.8 * bw), h * (1 + rng.uniform(0, 0.05))
        p.paint(rect(x0, bottom - bh, x0 + bw, bottom), colour)
        for y in np.linspace(bottom - bh, bottom, 4, endpoint=False)[1:]:
            p.paint(segment(np.array([x0, y]), np.array([x0 + bw, y]), 0.01 * h), dark)
    elif kind == "pole":  # a tree trunk or post over the full height
        pw, xc = w * rng.uniform(0.12, 0.3), w * rng.uniform(0.2, 0.8)
        p.paint(rect(xc - pw / 2, -1, xc + pw / 2, h + 1), colour)
        p.paint(rect(xc, -1, xc + pw / 2, h + 1), dark)
    else:  # a board/sign entering from one side at body height
        bw, bh, y0 = w * rng.uniform(0.4, 0.7), h * rng.uniform(0.25, 0.45), h * rng.uniform(0.05, 0.4)
        x0 = -1 if rng.random() < 0.5 else w - bw
        p.paint(rect(x0, y0, x0 + bw, y0 + bh), colour)
        p.paint(rect(x0 + 0.1 * bw, y0 + 0.2 * bh, x0 + 0.9 * bw, y0 + 0.35 * bh), dark)
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
        img *= cv2.resize(rng.uniform(0.8, 1.2, (4, 3)).astype(np.float32), (w, h),
                          interpolation=cv2.INTER_CUBIC)[..., None]
    img *= np.linspace(1.12, 0.9, h, dtype=np.float32)[:, None, None]  # light from above
    for _ in range(int(rng.integers(1, 4))):  # low-contrast clutter: doors, posts, parked things
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(0.0, 0.8) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.05, 0.3) * h
        cv2.rectangle(img, pixel((x0, y0)), pixel((x1, y1)), (style.wall * rng.uniform(0.6, 1.3)).tolist(), -1)
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


def render(spec: ImageSpec, seed: int, heights: tuple[int, int],
           aspects: tuple[float, float] = DUKE_ASPECTS) -> Rendered:
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
