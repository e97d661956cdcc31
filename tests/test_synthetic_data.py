"""Tests of the synthetic Occluded-Duke generator (``tools/make_synthetic_data.py``)."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tools.synthetic.layout import MASK_DIR, NONE, OBJECT, PERSON, SPLITS, ImageSpec
from tools.synthetic.occ_duke import DATASET_DIR, NEW_GALLERY, NEW_QUERY, plan_full
from tools.synthetic.render import render
from tools.synthetic.writer import generate
from utils.errors import ConfigError, DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_LISTS = os.path.join(os.path.dirname(REPO), "shared", "data", "Occluded_Duke")
FILE_NAME = re.compile(r"^\d{4}_c[1-8]_f\d{7}\.jpg$")
LOADER_RE = re.compile(r"([-\d]+)_c(\d)")  # the loaders' pattern (TSD_REFERENCE §3.2)


def _names(root: str, split: str) -> list[str]:
    return sorted(os.listdir(os.path.join(root, DATASET_DIR, split)))


def _pid_cam(name: str) -> tuple[int, int]:
    pid, cam = LOADER_RE.search(name).groups()
    return int(pid), int(cam)


def _mask(root: str, split: str, name: str) -> np.ndarray:
    return np.load(os.path.join(root, DATASET_DIR, MASK_DIR, split, name.split(".")[0] + ".npy"))


def _new_benchmark(root: str) -> tuple[list[str], dict[str, int]]:
    ds = os.path.join(root, DATASET_DIR)
    with open(os.path.join(ds, NEW_QUERY)) as f:
        queries = f.read().splitlines()
    with open(os.path.join(ds, NEW_GALLERY)) as f:
        rows = [line.rsplit(",", 1) for line in f.read().splitlines()]
    gallery = {path: int(label) for path, label in rows}
    assert len(gallery) == len(rows), "new gallery lists a file twice"
    return queries, gallery


def _tree_hash(root: str) -> str:
    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _part_coverage(fields: np.ndarray) -> float:
    """Fraction of mask cells labelled as some body part (max field ≥ 0.3, the reference's bg threshold)."""
    return float((fields.astype(np.float32).max(0) >= 0.3).mean())


def _visible_keypoints(fields: np.ndarray) -> int:
    """Number of the 17 keypoint fields with a peak (≥ 0.3) somewhere in the mask."""
    return int((fields[:17].reshape(17, -1).max(1) >= 0.3).sum())


def test_layout_and_file_names(synthetic_root):
    ids = {}
    for split in SPLITS:
        names = _names(synthetic_root, split)
        assert names and all(FILE_NAME.match(n) for n in names), split
        ids[split] = {_pid_cam(n)[0] for n in names}
    assert not ids["bounding_box_train"] & (ids["query"] | ids["bounding_box_test"])
    assert 15 <= len(set().union(*ids.values())) <= 25
    assert ids["query"] <= ids["bounding_box_test"]
    # Every occluded query has a gallery match in another camera (standard protocol).
    gallery = {_pid_cam(n) for n in _names(synthetic_root, "bounding_box_test")}
    for name in _names(synthetic_root, "query"):
        pid, cam = _pid_cam(name)
        assert any(p == pid and c != cam for p, c in gallery), name


def test_every_image_has_a_low_resolution_36_channel_mask(synthetic_root):
    for split in SPLITS:
        for name in _names(synthetic_root, split):
            h, w = cv2.imread(os.path.join(synthetic_root, DATASET_DIR, split, name)).shape[:2]
            m = _mask(synthetic_root, split, name)
            assert m.dtype == np.float16 and m.shape == (36, round(h / 8), round(w / 8)), (name, m.shape, h, w)
            assert m.min() >= 0 and m.max() <= 1 and m.max() > 0.5, name


def test_occlusion_hides_keypoints(synthetic_root):
    _, gallery = _new_benchmark(synthetic_root)
    shown = {label: [] for label in range(4)}
    for path, label in gallery.items():
        shown[label].append(_visible_keypoints(_mask(synthetic_root, *path.split("/"))))
    # Holistic images show every keypoint but the face seen from behind (nose and eyes).
    assert min(shown[3]) >= 14
    assert np.mean(shown[1]) < np.mean(shown[3]) - 1.5  # hidden by persons
    assert np.mean(shown[2]) < np.mean(shown[3]) - 1.5  # hidden by objects


@pytest.mark.parametrize("occlusion", [OBJECT, PERSON])
def test_fields_vanish_under_the_occluder(occlusion):
    hidden_cells = 0
    for i in range(8):
        out = render(ImageSpec(f"0001_c1_f{i:07d}.jpg", 1, 1, ("query",), occlusion), seed=0, heights=(150, 300))
        h, w = out.fields.shape[1:]
        covered = cv2.resize(out.occluder, (w, h), interpolation=cv2.INTER_AREA) == 255
        assert out.occluder.any()
        assert np.all(out.fields[:, covered] == 0)
        hidden_cells += int(covered.sum())
        holistic = render(ImageSpec(f"0001_c1_f{i:07d}.jpg", 1, 1, ("query",), NONE), seed=0, heights=(150, 300))
        assert not holistic.occluder.any()
        assert _part_coverage(out.fields) < _part_coverage(holistic.fields)
    assert hidden_cells > 0


def test_new_benchmark_lists(synthetic_root):
    queries, gallery = _new_benchmark(synthetic_root)
    query_files = _names(synthetic_root, "query")
    # De-duplicated union of query/ and bounding_box_test/ (files in both are listed as query/).
    expected = {f"query/{n}" for n in query_files} | {
        f"bounding_box_test/{n}" for n in _names(synthetic_root, "bounding_box_test") if n not in query_files}
    assert set(gallery) == expected
    assert set(gallery.values()) == {0, 1, 2, 3}
    assert len(set(queries)) == len(queries) and all(gallery.get(q) == 3 for q in queries)
    query_ids = {_pid_cam(n)[0] for n in query_files}
    assert {_pid_cam(q)[0] for q in queries} <= query_ids
    # Positives per metric (TSD_REFERENCE §7.3): same id, other camera, label 1/2 (ALL), 2 (NPO), 1 (NTP).
    valid = {"ALL": 0, "NPO": 0, "NTP": 0}
    for q in queries:
        pid, cam = _pid_cam(q)
        labels = {lab for path, lab in gallery.items() if _pid_cam(path)[0] == pid and _pid_cam(path)[1] != cam}
        valid["ALL"] += bool(labels & {1, 2})
        valid["NPO"] += 2 in labels
        valid["NTP"] += 1 in labels
    assert valid["ALL"] == len(queries) and valid["NPO"] >= len(queries) // 2 and valid["NTP"] >= len(queries) // 2


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_workers(synthetic_root, tmp_path):
    cli = tmp_path / "cli"
    subprocess.run([sys.executable, "tools/make_synthetic_data.py", "--root", str(cli), "--scale", "tiny",
                    "--seed", "0", "--workers", "2"], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    reference = _tree_hash(synthetic_root)
    assert _tree_hash(str(cli)) == reference
    other = str(tmp_path / "other")
    generate(other, scale="tiny", seed=1)
    assert _tree_hash(other) != reference
    # Regenerating over an earlier synthetic set replaces it completely.
    generate(other, scale="tiny", seed=0)
    assert _tree_hash(other) == reference


def test_refuses_to_overwrite_foreign_data(tmp_path):
    os.makedirs(tmp_path / DATASET_DIR / "query")
    with pytest.raises(DataError, match="not made by this generator"):
        generate(str(tmp_path), scale="tiny")


def test_argument_errors(tmp_path):
    with pytest.raises(ConfigError, match="names-from"):
        generate(str(tmp_path), scale="full")
    with pytest.raises(ConfigError, match="unknown scale"):
        generate(str(tmp_path), scale="huge")
    names = tmp_path / "names"
    names.mkdir()
    for f in [f"{s}.list" for s in SPLITS] + [NEW_QUERY]:
        (names / f).write_text("")
    with pytest.raises(DataError, match="new_gallery.txt"):
        generate(str(tmp_path / "out"), scale="full", names_from=str(names))


def test_full_scale_mirrors_the_name_lists(synthetic_root, tmp_path):
    names = tmp_path / "names"
    names.mkdir()
    for split in SPLITS:
        (names / f"{split}.list").write_text("".join(f"{n}\n" for n in _names(synthetic_root, split)))
    for f in (NEW_QUERY, NEW_GALLERY):
        shutil.copyfile(os.path.join(synthetic_root, DATASET_DIR, f), names / f)
    out = str(tmp_path / "full")
    stats = generate(out, scale="full", seed=3, names_from=str(names))
    for split in SPLITS:
        assert _names(out, split) == _names(synthetic_root, split)
        assert stats["images"][split] == len(_names(out, split))
    for f in (NEW_QUERY, NEW_GALLERY):
        with open(names / f, "rb") as a, open(os.path.join(out, DATASET_DIR, f), "rb") as b:
            assert a.read() == b.read()
    # Occlusion follows split and label: query/ occluded, label 1 person, 2 object, 3 holistic.
    _, gallery = _new_benchmark(out)
    for spec in plan_full(str(names), seed=3).images:
        if "query" in spec.splits:
            assert spec.occlusion in (PERSON, OBJECT)
            label = gallery[f"query/{spec.name}"]
        else:
            label = gallery.get(f"bounding_box_test/{spec.name}", 0)
        expected = {1: PERSON, 2: OBJECT, 3: NONE}.get(label)
        assert expected is None or spec.occlusion == expected, spec


@pytest.mark.skipif(not os.path.isdir(REAL_LISTS), reason=f"real name lists not found at {REAL_LISTS}")
def test_full_plan_matches_real_occluded_duke_statistics():
    plan = plan_full(REAL_LISTS, seed=0)
    count = {s: sum(s in spec.splits for spec in plan.images) for s in SPLITS}
    ids = {s: len({spec.pid for spec in plan.images if s in spec.splits}) for s in SPLITS}
    assert count == {"bounding_box_train": 15618, "query": 2210, "bounding_box_test": 17661}
    assert ids == {"bounding_box_train": 702, "query": 519, "bounding_box_test": 1110}
    assert sum(len(spec.splits) == 2 for spec in plan.images) == 1870
    assert (len(plan.new_query), len(plan.new_gallery)) == (2538, 18001)
