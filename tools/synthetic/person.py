"""The people of the synthetic data sets: per-identity appearance, a walking pose and its drawing."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tools.synthetic.paint import Colour, Garment, Painter, ellipse, garment_fill, polygon, segment

KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
             "left_knee", "right_knee", "left_ankle", "right_ankle")
KP = {name: i for i, name in enumerate(KEYPOINTS)}
FACE = [KP["nose"], KP["left_eye"], KP["right_eye"]]

# BGR palettes. Garment colours are few and weighted towards dark ones (as in Duke's winter scenes)
# so that many identities share a colour per part and only the combination of parts is distinctive.
GARMENT = ((28, 28, 30), (90, 42, 22), (118, 118, 118), (222, 222, 218), (42, 40, 178), (176, 104, 44),
           (62, 118, 52), (142, 178, 202), (40, 70, 110), (40, 186, 218), (118, 52, 102))
GARMENT_P = np.array([3, 3, 2, 1.5, 1, 1.5, 1, 1, 1, 0.7, 0.7]) / 16.4
SKIN = ((178, 198, 232), (138, 168, 212), (98, 134, 184), (66, 92, 138))
HAIR = ((22, 22, 26), (30, 45, 72), (60, 112, 172), (150, 150, 152), (36, 60, 122))
TEXTURES = ("plain", "hstripes", "vstripes", "checks")


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


def pick_colour(rng: np.random.Generator, palette: tuple[Colour, ...], p: np.ndarray | None = None) -> Colour:
    """A colour of ``palette`` drawn with probabilities ``p`` (uniform when None)."""
    return palette[int(rng.choice(len(palette), p=p))]


def _garment(rng: np.random.Generator, texture_p: tuple[float, ...]) -> Garment:
    colour = pick_colour(rng, GARMENT, GARMENT_P)
    accent = colour
    while accent == colour:
        accent = pick_colour(rng, GARMENT)
    return Garment(colour, accent, TEXTURES[int(rng.choice(len(TEXTURES), p=texture_p))],
                   float(rng.uniform(0.04, 0.09)))


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Sample a person's appearance (identities and occluding bystanders use the same sampler)."""
    return Appearance(
        skin=pick_colour(rng, SKIN), hair=pick_colour(rng, HAIR),
        hair_style=str(rng.choice(("short", "long", "hat"), p=(0.6, 0.25, 0.15))), hat=pick_colour(rng, GARMENT),
        upper=_garment(rng, (0.45, 0.2, 0.15, 0.2)), long_sleeves=bool(rng.random() < 0.7),
        lower=_garment(rng, (0.75, 0.05, 0.1, 0.1)), shorts=bool(rng.random() < 0.15),
        shoes=pick_colour(rng, GARMENT, GARMENT_P), build=float(rng.uniform(0.85, 1.15)))


@lru_cache(maxsize=4096)
def identity_appearance(seed: int, pid: int) -> Appearance:
    """The appearance of identity ``pid``: a function of ``(seed, pid)`` only, identical across splits."""
    return random_appearance(np.random.default_rng([seed, 0x1D, pid % 2**32]))


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


def draw_person(painter: Painter, pose: Pose, app: Appearance) -> None:
    """Draw a clothed person on ``painter`` in back-to-front order of the limbs."""
    kp, hp = pose.keypoints, pose.height
    upper = garment_fill(app.upper, pose.origin, hp)
    lower = garment_fill(app.lower, pose.origin, hp)
    arm_t, leg_t = 0.05 * hp * app.build, 0.075 * hp * app.build

    def leg(side: str) -> None:
        hip, knee, ankle = (kp[KP[f"{side}_{j}"]] for j in ("hip", "knee", "ankle"))
        painter.paint(segment(hip, knee, leg_t), lower)
        painter.paint(segment(knee, ankle, 0.9 * leg_t), app.skin if app.shorts else lower)
        foot = ankle + hp * np.array([0.025 * pose.facing, 0.03])
        painter.paint(ellipse(foot, (hp * (0.045 if pose.facing else 0.03), hp * 0.022)), app.shoes)

    def arm(side: str) -> None:
        shoulder, elbow, wrist = (kp[KP[f"{side}_{j}"]] for j in ("shoulder", "elbow", "wrist"))
        painter.paint(segment(shoulder, elbow, arm_t), upper)
        painter.paint(segment(elbow, wrist, 0.9 * arm_t), upper if app.long_sleeves else app.skin)
        painter.paint(ellipse(wrist, (0.022 * hp, 0.022 * hp)), app.skin)

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
    painter.paint(polygon(torso), upper)
    head = pose.head
    if app.hair_style == "long":
        painter.paint(ellipse(head + hp * np.array([0.0, 0.05]), (0.062 * hp, 0.1 * hp)), app.hair)
    painter.paint(segment(s_c, head, 0.045 * hp), app.skin)
    painter.paint(ellipse(head, (0.052 * hp, 0.068 * hp)), app.skin)
    cap = head - hp * np.array([0.0, 0.012])
    if app.hair_style == "hat":
        painter.paint(ellipse(cap, (0.058 * hp, 0.06 * hp), 180, 360), app.hat)
        brim = cap + hp * np.array([0.03 * pose.facing, 0.0])  # the peak points where the person walks
        half = hp * np.array([0.06 + 0.03 * abs(pose.facing), 0.0])
        painter.paint(segment(brim - half, brim + half, 0.015 * hp), app.hat)
    elif pose.view == "back":
        painter.paint(ellipse(head, (0.054 * hp, 0.07 * hp)), app.hair)  # the whole head is hair
    else:
        painter.paint(ellipse(cap, (0.056 * hp, 0.058 * hp), 180, 360), app.hair)
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
