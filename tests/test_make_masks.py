"""tools/make_masks.py: bpbreid-format part masks from BlazePose, on synthetic keypoints and on real pedestrians.

The tests on real pixels crop people out of ``../shared/data/real/vtest.avi`` (OpenCV's HOG people
detector, or hand-listed tracks) into a temporary folder, and run the tool with the mask environment's
Python (``.venv-masks``, made by ``make masks-venv`` and by ``make test``) as a subprocess; they skip,
saying so, when that environment or the video is absent. Nothing from the video is written elsewhere.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from config.parts import NUM_CHANNELS, PART_GROUPINGS, PIFPAF_LIMBS, PIFPAF_PARTS
from datasets.mask_layout import mask_candidates
from tools.make_masks import Person, dataset_jobs, field_size, folder_jobs, render_fields

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASKS_PY = os.path.join(REPO, ".venv-masks", "bin", "python")
VIDEO = os.path.join(os.path.dirname(REPO), "shared", "data", "real", "vtest.avi")
SUMMARY = re.compile(r"make_masks: (\d+) images: (\d+) skipped \(mask exists\), (\d+) processed: (\d+) with a person "
                     r"found \([\d.]+%\), (\d+) without \(all-zero masks\), (\d+) unreadable")

needs_masks_env = pytest.mark.skipif(
    not os.path.isfile(MASKS_PY), reason="the mask environment .venv-masks is absent: `make masks-venv` creates it "
                                         "(`make test` does too)")
needs_video = pytest.mark.skipif(not os.path.isfile(VIDEO), reason=f"{VIDEO} (the shared real video) is absent")


def run_tool(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``tools/make_masks.py ARGS`` in the mask environment."""
    r = subprocess.run([MASKS_PY, os.path.join(REPO, "tools", "make_masks.py"), *args], capture_output=True,
                       text=True, cwd=REPO, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def summary_counts(stdout: str) -> dict[str, int]:
    m = SUMMARY.search(stdout)
    assert m, stdout
    keys = ("images", "existing", "processed", "persons", "no_person", "unreadable")
    return dict(zip(keys, map(int, m.groups())))


def five_part_centroids(mask: np.ndarray) -> dict[str, float]:
    """Confidence-weighted mean row (0 = top) of each part of the 'five' grouping."""
    rows = np.arange(mask.shape[1], dtype=np.float64)[:, None]
    out = {}
    for name, channels in PART_GROUPINGS["five"].items():
        part = mask[list(channels)].max(0)
        out[name.removesuffix("_mask")] = float((part * rows).sum() / part.sum()) if part.sum() > 0 else float("nan")
    return out


# ------------------------------------------------------------------------------ rendering (no pose model)

def standing_person(mask_hw=(256, 128)) -> Person:
    """An upright person filling a 256 x 128 image: COCO keypoints by hand, a box-shaped person mask."""
    xy = {"nose": (64, 30), "left_eye": (68, 26), "right_eye": (60, 26), "left_ear": (74, 28), "right_ear": (54, 28),
          "left_shoulder": (84, 60), "right_shoulder": (44, 60), "left_elbow": (92, 100), "right_elbow": (36, 100),
          "left_wrist": (96, 135), "right_wrist": (32, 135), "left_hip": (76, 135), "right_hip": (52, 135),
          "left_knee": (78, 185), "right_knee": (50, 185), "left_ankle": (80, 235), "right_ankle": (48, 235)}
    kp = np.array([[xy[n][0] / 128, xy[n][1] / 256, 0.9] for n in PIFPAF_PARTS[:17]])
    mask = np.zeros(mask_hw, np.float32)
    mask[10:250, 20:108] = 1.0
    return Person(kp, height=(250 - 10) / 256, mask=mask)


def test_fields_have_the_bpbreid_format_and_follow_the_channel_names():
    person = standing_person()
    fields = render_fields(person, (256, 128))
    assert fields.shape == (NUM_CHANNELS, 32, 16) == (36, *field_size(256, 128, 8))
    assert fields.dtype == np.float32 and fields.min() >= 0 and fields.max() <= 1
    cell = 8  # each field peaks in the cell of its keypoint
    for k in range(17):
        y, x = np.unravel_index(fields[k].argmax(), fields[k].shape)
        kx, ky = person.keypoints[k, :2] * (128, 256)
        assert abs((x + 0.5) * cell - kx) <= cell and abs((y + 0.5) * cell - ky) <= cell, PIFPAF_PARTS[k]
        assert fields[k].max() == pytest.approx(0.9, abs=0.1)
    for channel, (a, b) in enumerate(PIFPAF_LIMBS, 17):  # a limb is confident at its middle, as at its ends
        assert PIFPAF_PARTS[channel] == f"{PIFPAF_PARTS[a]}_to_{PIFPAF_PARTS[b]}"
        mid = (person.keypoints[a, :2] + person.keypoints[b, :2]) / 2 * (16, 32)
        assert fields[channel, int(mid[1]), int(mid[0])] > 0.5, PIFPAF_PARTS[channel]
    centroids = five_part_centroids(fields)
    assert centroids["head"] < centroids["torso"] < centroids["leg"] < centroids["feet"]


def test_fields_are_zero_outside_the_person_mask_and_without_a_person():
    person = standing_person()
    person.mask[:, :64] = 0  # the person's right half is hidden
    fields = render_fields(person, (256, 128))
    assert fields[:, :, :8].max() == 0 and fields[:, :, 8:].max() > 0.5
    none = render_fields(None, (131, 67))
    assert none.shape == (36, 17, 9) and none.dtype == np.float32 and not none.any()


def test_stride_and_spread_flags_set_resolution_and_width():
    person = standing_person()
    assert render_fields(person, (256, 128), stride=4).shape == (36, 64, 32)
    narrow, wide = (render_fields(person, (256, 128), spread=s) for s in (0.03, 0.1))
    assert (narrow > 0.3).sum() < (wide > 0.3).sum()


def test_mask_tool_imports_without_torch():
    """The mask environment has no torch: the tool (and the data set readers it uses) import without it."""
    code = ("import sys; sys.modules['torch'] = None  # importing torch now fails, as in .venv-masks\n"
            "import tools.make_masks; from datasets import build_dataset; from config.parts import PIFPAF_PARTS\n"
            "heavy = ('torch', 'torchvision', 'mediapipe')\n"
            "print([m for m, v in sys.modules.items() if v and m.split('.')[0] in heavy])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_without_mediapipe_the_tool_names_the_mask_environment(tmp_path, monkeypatch):
    import tools.make_masks as tool
    from utils.errors import ConfigError

    monkeypatch.setattr(tool, "find_spec", lambda name: None)  # as in the training environment
    with pytest.raises(ConfigError, match=r"mediapipe is not installed .*make masks IMAGES=DIR OUT=DIR"):
        tool.make_masks([(str(tmp_path / "a.jpg"), str(tmp_path / "a.npy"))])


def test_folder_and_dataset_jobs_write_where_the_loaders_look(tmp_path, synthetic_root):
    for rel in ("a/x_1.jpg", "a/b/y.png", "z.jpeg"):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / rel).write_bytes(b"")
    jobs = folder_jobs(str(tmp_path / "in"), str(tmp_path / "out"))
    assert sorted(os.path.relpath(d, tmp_path / "out") for _, d in jobs) == ["a/b/y.npy", "a/x_1.npy", "z.npy"]
    # One image in two formats is refused where every loader lists images (datasets.bases.list_images) ...
    (tmp_path / "in" / "a" / "x_1.png").write_bytes(b"")
    with pytest.raises(Exception, match=r"image x_1 is in .*a twice, as x_1.jpg and x_1.png"):
        folder_jobs(str(tmp_path / "in"), str(tmp_path / "out"))
    (tmp_path / "in" / "a" / "x_1.png").unlink()
    # ... and two names that only differ after their first '.' would share one mask (bpbreid's naming).
    (tmp_path / "in" / "a" / "x_1.v2.jpg").write_bytes(b"")
    with pytest.raises(Exception, match="would share the mask file"):
        folder_jobs(str(tmp_path / "in"), str(tmp_path / "out"))
    (tmp_path / "in" / "a" / "x_1.v2.jpg").unlink()

    from datasets import build_dataset

    train = build_dataset("occ_duke", synthetic_root).train
    jobs = dataset_jobs(synthetic_root, "occ_duke", ["train"])
    assert [s for s, _ in jobs] == [r.path for r in train]
    assert all(d == mask_candidates(s)[0] and "masks/pifpaf_maskrcnn_filtering/bounding_box_train/" in d
               for s, d in jobs)


# ------------------------------------------------------------------------------ real pedestrians

def hog_crops(folder: str, frames=(0, 120, 240, 360, 480, 600, 720), limit: int | None = None) -> list[str]:
    """Crops of the people OpenCV's HOG detector finds in ``frames`` of the video (the first ``limit``), as PNGs
    in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    cap = cv2.VideoCapture(VIDEO)
    paths = []
    for f in frames:
        cap.set(cv2.CAP_PROP_POS_FRAMES, f)
        ok, frame = cap.read()
        assert ok, f"cannot read frame {f} of {VIDEO}"
        boxes, scores = hog.detectMultiScale(frame, winStride=(8, 8), padding=(8, 8), scale=1.05)
        for (x, y, w, h), s in zip(boxes, scores.ravel()):
            if s > 0.5 and h < 220 and len(paths) != limit:  # taller boxes are loose ones around far-away people
                paths.append(os.path.join(folder, f"f{f:04d}_{x}_{y}.png"))
                cv2.imwrite(paths[-1], frame[y:y + h, x:x + w])
    cap.release()
    return paths


@pytest.fixture(scope="module")
def video_masks(tmp_path_factory):
    """(crop paths, mask folder, summary counts, stdout) of `make_masks.py --images` on HOG crops of the video."""
    if not os.path.isfile(MASKS_PY):
        pytest.skip("the mask environment .venv-masks is absent: `make masks-venv` creates it (`make test` does too)")
    if not os.path.isfile(VIDEO):
        pytest.skip(f"{VIDEO} (the shared real video) is absent")
    base = tmp_path_factory.mktemp("video_masks")
    crops = hog_crops(str(base / "crops"))
    r = run_tool("--images", str(base / "crops"), "--out", str(base / "masks"), "--workers", "2")
    return crops, str(base / "masks"), summary_counts(r.stdout), r.stdout


def load_video_masks(video_masks) -> dict[str, np.ndarray]:
    crops, out, _, _ = video_masks
    return {p: np.load(os.path.join(out, os.path.basename(p).split(".")[0] + ".npy"), allow_pickle=False)
            for p in crops}


def test_real_crops_get_bpbreid_format_masks_and_people_are_found(video_masks):
    crops, out, counts, stdout = video_masks
    masks = load_video_masks(video_masks)
    assert len(crops) >= 15, "the HOG detector should find people in the sampled frames"
    for path, m in masks.items():
        h, w = cv2.imread(path).shape[:2]
        assert m.dtype == np.float32 and m.shape == (36, (h - 1) // 8 + 1, (w - 1) // 8 + 1), path
        assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1, path
    found = [p for p, m in masks.items() if m.max() > 0]
    none = sorted(p for p, m in masks.items() if m.max() == 0)
    assert counts == {"images": len(crops), "existing": 0, "processed": len(crops), "persons": len(found),
                      "no_person": len(none), "unreadable": 0}, stdout
    assert len(found) >= 0.8 * len(crops), stdout
    listed = open(os.path.join(out, "no_person.txt")).read().split() if none else []
    assert listed == none
    assert all(masks[p].max() > 0.5 for p in found)  # a found person has confident fields


def test_real_crops_have_head_above_torso_above_legs_above_feet(video_masks):
    masks = load_video_masks(video_masks)
    found = {p: m for p, m in masks.items() if m.max() > 0}
    assert found
    for path, m in found.items():
        c = five_part_centroids(m)
        assert c["head"] < c["torso"] < c["leg"] < c["feet"], (os.path.basename(path), c)
        assert c["head"] < c["arm"] < c["feet"], (os.path.basename(path), c)


FOREGROUND_CHECK = """
import json, sys, cv2, numpy as np
from tools.make_masks import BlazePose, render_fields
model, rows = BlazePose(), []
for path in sys.argv[1:]:
    img = cv2.imread(path)
    person = model.find(img)
    if person is None:
        continue
    fields = render_fields(person, img.shape[:2])
    small = cv2.resize(person.mask, fields.shape[:0:-1], interpolation=cv2.INTER_LINEAR)
    full = cv2.dilate((cv2.resize(person.mask, img.shape[1::-1]) > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8))
    kp = person.keypoints[person.keypoints[:, 2] > 0.5]
    x = np.clip((kp[:, 0] * img.shape[1]).astype(int), 0, img.shape[1] - 1)
    y = np.clip((kp[:, 1] * img.shape[0]).astype(int), 0, img.shape[0] - 1)
    rows.append({"outside": float(fields[:, small <= 0].max(initial=0)), "fg": float(full.mean()),
                 "mass_in": float((fields * (small > 0.5)).sum() / fields.sum()), "kp_in": float(full[y, x].mean())})
print(json.dumps(rows))
"""


@pytest.mark.slow
def test_real_fields_stay_inside_the_person_mask(video_masks):
    crops = video_masks[0][::3]
    r = subprocess.run([MASKS_PY, "-c", FOREGROUND_CHECK, *crops], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(rows) >= 0.8 * len(crops)
    for row in rows:
        assert row["outside"] == 0, row  # no field where the person mask is zero
        assert 0.01 < row["fg"] < 0.6, row  # the person mask is a person, not the whole crop
        assert row["mass_in"] > 0.75, row  # most of the fields lie on the person itself
    # the visible keypoints are on the person the mask segments
    assert np.mean([row["kp_in"] for row in rows]) > 0.9, rows


@pytest.mark.slow
@needs_masks_env
@needs_video
def test_resume_overwrite_and_unreadable_images(tmp_path):
    crops = hog_crops(str(tmp_path / "in"), frames=(240,), limit=2)
    assert len(crops) == 2
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = str(tmp_path / "out")
    r = run_tool("--images", str(tmp_path / "in"), "--out", out, "--workers", "1", check=False)
    assert r.returncode == 2 and r.stderr.startswith(f"error: cannot read image {broken}"), r.stderr[-2000:]

    r = run_tool("--images", str(tmp_path / "in"), "--out", out, "--skip-unreadable")
    counts = summary_counts(r.stdout)
    assert counts["unreadable"] == 1 and counts["existing"] + counts["processed"] == 3  # the error run made some
    assert open(os.path.join(out, "unreadable.txt")).read().split() == [str(broken)]
    assert not os.path.exists(os.path.join(out, "broken.npy"))
    made = {c: os.path.getmtime(os.path.join(out, os.path.basename(c).split(".")[0] + ".npy")) for c in crops}

    broken.unlink()
    r = run_tool("--images", str(tmp_path / "in"), "--out", out)
    assert "2 images, all skipped" in r.stdout
    r = run_tool("--images", str(tmp_path / "in"), "--out", out, "--overwrite")
    assert summary_counts(r.stdout)["processed"] == 2
    assert all(os.path.getmtime(os.path.join(out, os.path.basename(c).split(".")[0] + ".npy")) > t
               for c, t in made.items())
    assert not os.path.exists(os.path.join(out, "unreadable.txt"))  # remade without it: the list is emptied
    assert not [f for f in os.listdir(out) if f.endswith(".part")]


# Pedestrians of the video, listed by hand: (frame, x, y, w, h) key boxes of one person each (from HOG
# detections linked by an IoU tracker, checked by eye); boxes in between are interpolated. The left and
# right halves of the frame are the two cameras (c1: box centre x < 384, c2: right of it), so that a
# person walking across is seen by both. Test identities cross the frame; training ones are others.
TEST_TRACKS = {
    1: [(283, 101, 107, 69, 137), (303, 186, 122, 70, 140), (325, 308, 131, 73, 147), (345, 432, 155, 70, 140),
        (365, 555, 176, 71, 141), (385, 676, 198, 70, 141), (390, 710, 209, 58, 132)],
    2: [(425, 708, 264, 60, 134), (445, 568, 230, 70, 139), (465, 464, 193, 68, 136), (485, 362, 160, 74, 147),
        (507, 252, 139, 72, 144), (529, 176, 138, 65, 130)],
    3: [(570, 176, 336, 73, 145), (593, 369, 301, 78, 156), (613, 543, 269, 74, 148), (633, 609, 204, 74, 147),
        (653, 614, 166, 69, 137), (663, 588, 148, 67, 133)],
    4: [(657, 706, 298, 62, 140), (677, 465, 231, 71, 141), (697, 277, 182, 72, 144), (719, 120, 160, 65, 130)],
}
TRAIN_TRACKS = {
    11: [(67, 352, 158, 66, 133), (130, 360, 154, 65, 130), (171, 443, 190, 67, 134), (211, 637, 282, 73, 145),
         (231, 485, 251, 74, 148), (271, 263, 169, 68, 136), (297, 263, 141, 65, 130)],
    12: [(177, 368, 192, 65, 130), (197, 221, 160, 67, 134)],
    13: [(231, 703, 274, 65, 142), (271, 441, 213, 71, 142), (311, 251, 170, 70, 139), (331, 272, 171, 70, 139),
         (371, 486, 238, 69, 137), (403, 699, 292, 69, 140)],
    14: [(367, 320, 132, 71, 141), (387, 236, 160, 66, 132), (447, 282, 177, 68, 136), (487, 482, 230, 73, 146),
         (517, 694, 306, 74, 153)],
    15: [(470, 520, 198, 71, 142), (490, 551, 232, 77, 153), (530, 440, 169, 70, 139), (569, 328, 122, 65, 130)],
    16: [(613, 344, 425, 73, 147), (633, 324, 375, 96, 192), (673, 183, 324, 84, 168), (713, 37, 243, 74, 148),
         (737, 93, 205, 70, 140)],
    17: [(687, 293, 135, 67, 134), (727, 482, 185, 70, 140), (747, 607, 200, 68, 137), (793, 623, 212, 70, 140)],
    18: [(715, 224, 146, 69, 138), (757, 422, 199, 67, 133), (777, 531, 219, 74, 148), (793, 595, 247, 75, 150)],
}
FRAME_MIDDLE_X = 384  # of the 768 px wide video


def track_boxes(keys: list[tuple[int, int, int, int, int]], n: int) -> list[tuple[int, int, int, int, int]]:
    """``n`` (frame, x, y, w, h) boxes at evenly spaced frames of a track, interpolated between its key boxes."""
    k = np.array(keys, dtype=np.float64)
    frames = np.unique(np.linspace(k[0, 0], k[-1, 0], n).round().astype(int))
    return [(int(f), *(int(round(np.interp(f, k[:, 0], k[:, i]))) for i in range(1, 5))) for f in frames]


def write_market_from_video(root: str, train_per_id: int = 12, test_per_id: int = 12) -> dict[str, int]:
    """Crops of the listed tracks as a Market-1501 layout under ``root/Market-1501``; returns images per split.

    Names ``<pid>_c<cam>s1_<frame>_00.jpg``. Query: the first two c1 crops of each test identity; gallery:
    its other crops (the c2 ones are its true matches; c1 ones are same-camera and left out by the protocol).
    """
    wanted: dict[int, list[tuple[str, int, tuple]]] = {}
    for tracks, per_id, split in ((TRAIN_TRACKS, train_per_id, "train"), (TEST_TRACKS, test_per_id, "test")):
        for pid, keys in tracks.items():
            for f, x, y, w, h in track_boxes(keys, per_id):
                wanted.setdefault(f, []).append((split, pid, (x, y, w, h)))
    base = os.path.join(root, "Market-1501")
    counts = dict.fromkeys(("bounding_box_train", "query", "bounding_box_test"), 0)
    queries: dict[int, int] = {}
    cap = cv2.VideoCapture(VIDEO)
    frame_index = 0
    while wanted:
        ok, frame = cap.read()
        assert ok, f"{VIDEO} ended before frame {min(wanted)}"
        for split, pid, (x, y, w, h) in wanted.pop(frame_index, []):
            cam = 1 if x + w / 2 < FRAME_MIDDLE_X else 2
            if split == "train":
                folder = "bounding_box_train"
            elif cam == 1 and queries.get(pid, 0) < 2:
                folder, queries[pid] = "query", queries.get(pid, 0) + 1
            else:
                folder = "bounding_box_test"
            os.makedirs(os.path.join(base, folder), exist_ok=True)
            name = f"{pid:04d}_c{cam}s1_{frame_index:06d}_00.jpg"
            cv2.imwrite(os.path.join(base, folder, name), frame[y:y + h, x:x + w], [cv2.IMWRITE_JPEG_QUALITY, 95])
            counts[folder] += 1
        frame_index += 1
    cap.release()
    return counts


@pytest.mark.slow
@needs_masks_env
@needs_video
def test_train_and_test_on_real_crops_with_generated_masks(tmp_path):
    """Real pedestrians in the Market-1501 layout, masks by the tool in data-set mode, then the user's commands:
    train.py one epoch (tiny model, CPU) and test.py on its checkpoint."""
    root = str(tmp_path / "data")
    counts = write_market_from_video(root)
    assert counts == {"bounding_box_train": 96, "query": 8, "bounding_box_test": 40}
    r = run_tool("--root", root, "--dataset", "market1501", "--workers", "2")
    made = summary_counts(r.stdout)
    assert made["processed"] == 96 and made["persons"] >= 0.8 * 96, r.stdout

    from datasets import build_dataset
    from datasets.masks import find_mask, load_mask

    train = build_dataset("market1501", root).train
    assert all(load_mask(find_mask(rec.path)).shape[0] == 36 for rec in train)  # where and what the loader reads

    cfg = os.path.join(REPO, "configs", "demo", "market_tiny.yml")
    opts = ["DATASETS.ROOT_DIR", root, "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN",
            "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]", "SOLVER.IMS_PER_BATCH", "16", "TEST.IMS_PER_BATCH", "64"]
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--config_file", cfg, *opts, "OUTPUT_DIR",
                        str(out), "SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "0",
                        "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.LOG_PERIOD", "2"],
                       capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mask_parsing_ce" in r.stdout  # the part-mask loss trained on the generated masks
    r = subprocess.run([sys.executable, os.path.join(REPO, "test.py"), "--config_file", cfg, *opts, "OUTPUT_DIR",
                        str(out / "test"), "TEST.WEIGHT", str(out / "transformer_1.pth")],
                       capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.load(open(out / "test" / "results.json"))["results"]["ALL"]
    assert res["num_valid"] == 8 and 0 <= res["mAP"] <= 1, res  # every query has its matches in the other camera
    print(f"real crops with generated masks, 1 epoch: Rank-1 {res['rank1']:.3f}, mAP {res['mAP']:.3f}")


def test_show_masks_draws_the_grouped_parts(tmp_path):
    from tools.show_masks import main as show_masks

    (tmp_path / "img").mkdir()
    person = standing_person()
    for i, p in enumerate((person, None)):
        img = np.full((256, 128, 3), 90 + 60 * i, np.uint8)
        cv2.imwrite(str(tmp_path / "img" / f"p{i}.png"), img)
        (tmp_path / "masks").mkdir(exist_ok=True)
        np.save(tmp_path / "masks" / f"p{i}.npy", render_fields(p, (256, 128)))
    out = tmp_path / "grid.png"
    assert show_masks(["--images", str(tmp_path / "img"), "--masks", str(tmp_path / "masks"), "--out", str(out)]) == 0
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape[0] > 400 and grid.shape[1] > 300
    os.remove(tmp_path / "masks" / "p1.npy")
    with pytest.raises(Exception, match="have no mask .*make masks IMAGES="):
        show_masks(["--images", str(tmp_path / "img"), "--masks", str(tmp_path / "masks"), "--out", str(out)])
