"""Data sets, identity samplers, loaders and the user-facing data errors."""
from __future__ import annotations

import os
import re
import shutil
from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from config import get_cfg_defaults, validate_cfg
from datasets import (
    DATASET_FACTORY,
    ImageRecord,
    RandomIdentitySampler,
    RandomIdentitySamplerDDP,
    build_dataset,
    make_dataloader,
    make_test_loader,
    make_val_loader,
    preflight,
)
from datasets.masks import find_mask, mask_candidates
from utils.errors import ConfigError, DataError, user_message

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
NAME = re.compile(r"(\d+)_c(\d)")


def make_cfg(root: str, **overrides):
    """A small-image config on ``root`` (keys given as SECTION__KEY=value)."""
    cfg = get_cfg_defaults()
    cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR = "occ_duke", root
    cfg.INPUT.SIZE_TRAIN = cfg.INPUT.SIZE_TEST = [64, 32]
    cfg.DATALOADER.NUM_WORKERS, cfg.DATALOADER.SAMPLER, cfg.DATALOADER.NUM_INSTANCE = 0, "softmax_triplet", 2
    cfg.SOLVER.IMS_PER_BATCH, cfg.TEST.IMS_PER_BATCH, cfg.MODEL.DEVICE = 8, 16, "cpu"
    for key, value in overrides.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def occ(root: str, *parts: str) -> str:
    return os.path.join(root, "Occluded_Duke", *parts)


def write_image(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, np.full((24, 12, 3), 127, np.uint8))


# ----------------------------------------------------------------------------------------------
# Data sets
# ----------------------------------------------------------------------------------------------
def test_occ_duke_splits_and_sorted_relabelling(synthetic_root):
    ds = build_dataset("occ_duke", synthetic_root)
    raw_train = sorted({int(NAME.search(f).group(1)) for f in os.listdir(occ(synthetic_root, "bounding_box_train"))})
    for split, folder in SPLIT_DIRS.items():
        records = getattr(ds, split)
        files = sorted(f for f in os.listdir(occ(synthetic_root, folder)) if f.endswith(".jpg"))
        assert [os.path.basename(r.path) for r in records] == files
        for r in records:
            pid, cam = (int(g) for g in NAME.search(os.path.basename(r.path)).groups())
            assert r.camid == cam - 1 and r.viewid == 0 and r.occ_label is None
            assert r.pid == (raw_train.index(pid) if split == "train" else pid)
    assert ds.num_train_pids == len(raw_train)
    cams = {int(NAME.search(os.path.basename(r.path)).group(2)) for r in ds.train + ds.query + ds.gallery}
    assert ds.num_train_cams == max(cams) and ds.num_train_views == 1
    assert f"| {len(raw_train):>6} | {len(ds.train):>8} |" in ds.summary()
    again = build_dataset("occ_duke", synthetic_root)
    assert (again.train, again.query, again.gallery) == (ds.train, ds.query, ds.gallery)


def test_new_occ_duke_reads_both_lists(synthetic_root):
    ds = build_dataset("new_occ_duke", synthetic_root)
    assert ds.train == build_dataset("occ_duke", synthetic_root).train
    with open(occ(synthetic_root, "new_query.txt")) as f:
        query = [line.strip() for line in f if line.strip()]
    with open(occ(synthetic_root, "new_gallery.txt")) as f:
        gallery = [line.strip().split(",") for line in f if line.strip()]
    assert [r.path for r in ds.query] == [occ(synthetic_root, q) for q in query]
    assert all(r.occ_label == 0 for r in ds.query)
    assert [(r.path, r.occ_label) for r in ds.gallery] == [(occ(synthetic_root, p), int(lab)) for p, lab in gallery]
    assert all(r.pid == int(NAME.search(os.path.basename(r.path)).group(1)) for r in ds.query + ds.gallery)


def test_market1501_drops_junk_and_checks_cameras(tmp_path):
    base = tmp_path / "Market-1501"
    for name in ("0002_c1s1_000451_03.jpg", "0002_c6s1_000452_01.jpg", "0007_c2s1_000100_01.jpg"):
        write_image(str(base / "bounding_box_train" / name))
    write_image(str(base / "query" / "0002_c3s1_000500_00.jpg"))
    for name in ("-1_c1s1_000001_00.jpg", "0000_c1s1_000002_00.jpg", "0002_c2s1_000600_00.jpg"):
        write_image(str(base / "bounding_box_test" / name))
    ds = build_dataset("market1501", str(tmp_path))
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 5), (1, 1)]
    assert sorted(r.pid for r in ds.gallery) == [0, 2]  # junk -1 dropped, distractor 0 kept
    write_image(str(base / "query" / "0002_c7s1_000500_00.jpg"))
    with pytest.raises(DataError, match=r"camera c7, expected c1\.\.c6"):
        build_dataset("market1501", str(tmp_path))


def test_dukemtmc_accepts_torchreid_nesting(tmp_path):
    base = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"
    for folder in SPLIT_DIRS.values():
        write_image(str(base / folder / "0005_c3_f0000123.jpg"))
    ds = build_dataset("dukemtmc", str(tmp_path))
    assert ds.dataset_dir == str(base) and [(r.pid, r.camid) for r in ds.query] == [(5, 2)]


def test_msmt17_lists(tmp_path):
    base = tmp_path / "MSMT17"
    lines = {"list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0"],
             "list_val.txt": ["0001/0001_000_15_0303morning_0016_0.jpg 1"],
             "list_query.txt": ["0100/0100_000_03_0303noon_0001_0.jpg 100"],
             "list_gallery.txt": ["0100/0100_001_04_0303noon_0002_0.jpg 100"]}
    for name, content in lines.items():
        (base / ("train" if "train" in name or "val" in name else "test")).mkdir(parents=True, exist_ok=True)
        (base / name).write_text("\n".join(content) + "\n")
    ds = build_dataset("msmt17", str(tmp_path))
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (1, 14)]
    assert ds.query[0].path == str(base / "test" / "0100" / "0100_000_03_0303noon_0001_0.jpg")
    (base / "list_query.txt").write_text("0100/0100_000_03_0303noon_0001_0.jpg 100\nbroken\n")
    with pytest.raises(DataError, match=r"list_query.txt:2: expected"):
        build_dataset("msmt17", str(tmp_path))


def test_occ_reid_is_evaluation_only(tmp_path):
    base = tmp_path / DATASET_FACTORY["occ_reid"].dataset_dir
    for sub in ("occluded_body_images", "whole_body_images"):
        for pid in (1, 2):
            write_image(str(base / sub / f"{pid:03d}" / f"{pid:03d}_01.jpg"))
    ds = build_dataset("occ_reid", str(tmp_path))
    assert ds.train == [] and [(r.pid, r.camid) for r in ds.query] == [(1, 0), (2, 0)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(1, 1), (2, 1)]
    cfg = make_cfg(str(tmp_path), DATASETS__NAMES="occ_reid")
    with pytest.raises(DataError, match="no training split"):
        preflight(cfg, ds)
    loader, num_query, num_classes, camera_num, _ = make_test_loader(cfg)
    assert (num_query, num_classes, camera_num, len(loader.dataset)) == (2, 0, 2, 4)


@pytest.mark.parametrize("name", sorted(DATASET_FACTORY))
def test_missing_dataset_folder_names_the_layout(name, tmp_path):
    with pytest.raises(DataError, match="not found; expected layout") as e:
        build_dataset(name, str(tmp_path))
    assert str(tmp_path) in str(e.value) and "make_synthetic_data" in str(e.value)


def test_missing_split_folder(data_copy):
    shutil.rmtree(occ(data_copy, "query"))
    with pytest.raises(DataError, match=re.escape(occ(data_copy, "query")) + " not found"):
        build_dataset("occ_duke", data_copy)


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="DATASETS.NAMES 'occduke'.*occ_duke"):
        build_dataset("occduke", "data")


def test_missing_new_benchmark_list(data_copy):
    os.remove(occ(data_copy, "new_gallery.txt"))
    with pytest.raises(DataError, match="new_gallery.txt not found.*TSD repository root"):
        build_dataset("new_occ_duke", data_copy)


@pytest.mark.parametrize("line, message", [
    ("bounding_box_test/0001_c1_f0000001.jpg", "expected 'relative/path.jpg,label'"),
    ("bounding_box_test/0001_c1_f0000001.jpg,7", "label '7' is not one of 0, 1, 2, 3"),
    ("bounding_box_test/nopid.jpg,1", "does not match '<pid>_c<camera>_...'"),
])
def test_malformed_new_gallery_line(data_copy, line, message):
    path = occ(data_copy, "new_gallery.txt")
    with open(path) as f:
        n = sum(1 for _ in f)
    with open(path, "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:{n + 1}: ") + ".*" + re.escape(message)):
        build_dataset("new_occ_duke", data_copy)


def test_new_benchmark_image_missing(data_copy):
    with open(occ(data_copy, "new_query.txt"), "a") as f:
        f.write("bounding_box_test/0001_c1_f9999999.jpg\n")
    with pytest.raises(DataError, match=r"1 images listed in .*new_query.txt do not exist .*0001_c1_f9999999.jpg"):
        build_dataset("new_occ_duke", data_copy)


# ----------------------------------------------------------------------------------------------
# Masks and pre-flight checks
# ----------------------------------------------------------------------------------------------
def train_masks(root: str) -> list[str]:
    return [find_mask(r.path) for r in build_dataset("occ_duke", root).train]


def test_both_mask_suffixes_are_found(data_copy):
    masks = train_masks(data_copy)
    assert all(m is not None and m.endswith(".npy") for m in masks)
    records = build_dataset("occ_duke", data_copy).train
    for rec, mask in zip(records, masks):  # rename to bpbreid's naming
        os.rename(mask, mask_candidates(rec.path)[1])
    assert [find_mask(r.path) for r in records] == [mask_candidates(r.path)[1] for r in records]
    train_loader = make_dataloader(make_cfg(data_copy))[0]
    assert next(iter(train_loader)).masks.shape[1] == 6


def test_missing_masks_are_counted(data_copy):
    masks = train_masks(data_copy)
    for m in masks[:2]:
        os.remove(m)
    cfg = make_cfg(data_copy)
    with pytest.raises(DataError) as e:
        preflight(cfg, build_dataset("occ_duke", data_copy))
    msg = str(e.value)
    assert f"2 of {len(masks)} training images have no part mask" in msg and "bpbreid" in msg
    assert os.path.basename(masks[0]).split(".")[0] in msg and "\n" not in msg
    cfg.MODEL.ARCH = "vit"  # the baseline never reads masks
    shutil.rmtree(occ(data_copy, "masks"))
    batch = next(iter(make_dataloader(cfg)[0]))
    assert batch.masks is None and batch.images.shape == (8, 3, 64, 32)


# The first mask is read completely, the last one (always among the sampled) only by its header.
@pytest.mark.parametrize("which, shape", [(0, (17, 8, 4)), (-1, (17, 8, 4)), (0, (36, 8))])
def test_mask_with_wrong_shape(data_copy, which, shape):
    path = train_masks(data_copy)[which]
    np.save(path, np.zeros(shape, np.float16))
    with pytest.raises(DataError, match=re.escape(f"mask file {path} has shape {shape}, expected (36, h, w)")):
        preflight(make_cfg(data_copy), build_dataset("occ_duke", data_copy))


def test_unreadable_mask(data_copy):
    path = train_masks(data_copy)[0]
    with open(path, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(DataError, match=re.escape(f"cannot read mask file {path}")):
        preflight(make_cfg(data_copy), build_dataset("occ_duke", data_copy))


def test_num_parts_must_match_grouping(synthetic_root):
    """Checked once, by the config validator (the loaders trust a loaded config)."""
    cfg = make_cfg(synthetic_root, INPUT__MASK_PREPROCESS="three")  # NUM_PARTS stays 5, config not validated
    with pytest.raises(ConfigError, match="MODEL.NUM_PARTS is 5 but INPUT.MASK_PREPROCESS 'three' makes 3 parts"):
        validate_cfg(cfg)


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------
def fake_records(counts: list[int]) -> list[ImageRecord]:
    return [ImageRecord(f"{pid}_{i}.jpg", pid, 0) for pid, n in enumerate(counts) for i in range(n)]


COUNTS = [1, 2, 3, 4, 5, 6, 7, 9, 12, 3, 4, 8, 2, 5]


def test_identity_sampler_batches_and_exact_length():
    records = fake_records(COUNTS)
    sampler = RandomIdentitySampler(records, batch_size=8, num_instances=2, seed=3)
    lengths = set()
    for _ in range(4):
        expected = len(sampler)
        indices = list(sampler)
        assert len(indices) == expected and expected % 8 == 0 and expected > 0
        lengths.add(expected)
        for b in range(0, len(indices), 8):
            pids = Counter(records[i].pid for i in indices[b:b + 8])
            assert len(pids) == 4 and set(pids.values()) == {2}
        per_pid = Counter(records[i].pid for i in indices)
        assert all(per_pid[p] <= max(n - n % 2, 2) for p, n in enumerate(COUNTS))
    # the single-image identity is drawn with replacement: the same index twice
    sampler.set_epoch(0)
    plan = sampler.plan_epoch(0)
    assert any(batch.count(0) == 2 for batch in plan)
    assert list(sampler) == [i for batch in plan for i in batch]


def test_identity_sampler_epochs_are_reproducible():
    records = fake_records(COUNTS)
    a, b = (RandomIdentitySampler(records, 8, 2, seed=0) for _ in range(2))
    first = list(a)
    assert first == list(b) and list(a) != first  # same seed same plan; next epoch differs
    b.set_epoch(0)
    assert list(b) == first


def test_identity_sampler_needs_enough_identities():
    with pytest.raises(ConfigError, match="has 3 identities but a batch needs 4"):
        RandomIdentitySampler(fake_records([4, 4, 4]), 8, 2)


def test_ddp_sampler_ranks_get_disjoint_batches():
    records = fake_records(COUNTS * 3)
    world = 3
    samplers = [RandomIdentitySamplerDDP(records, 8, 2, num_replicas=world, rank=r, seed=5) for r in range(world)]
    full = RandomIdentitySampler(records, 8, 2, seed=5).plan_epoch(7)
    for s in samplers:
        s.set_epoch(7)
    per_rank = [[tuple(x[i:i + 8]) for i in range(0, len(x), 8)] for x in (list(s) for s in samplers)]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(full) // world
    assert all(s.epoch == 8 for s in samplers)
    flat = [b for r in per_rank for b in r]
    assert len(set(flat)) == len(flat) and set(flat) <= {tuple(b) for b in full}
    assert [len(s) for s in samplers] == [len(per_rank[0]) * 8] * world


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------
def test_train_and_val_loader_batches(synthetic_root):
    cfg = make_cfg(synthetic_root)
    train_loader, val_loader, num_query, num_classes, camera_num, view_num = make_dataloader(cfg)
    ds = build_dataset("occ_duke", synthetic_root)
    assert (num_query, num_classes, camera_num, view_num) == (len(ds.query), ds.num_train_pids, ds.num_train_cams, 1)
    expected_batches = len(train_loader)
    batches = list(train_loader)
    assert len(batches) == expected_batches
    first = batches[0]
    imgs, pids, camids, viewids, masks = first.images, first.pids, first.camids, first.viewids, first.masks
    assert first.augment is None and len(first) == 8
    assert imgs.shape == (8, 3, 64, 32) and imgs.dtype == torch.float32
    assert all(t.shape == (8,) and t.dtype == torch.int64 for t in (pids, camids, viewids))
    assert masks.shape == (8, 6, 64, 32) and masks.dtype == torch.float32
    torch.testing.assert_close(masks.sum(1), torch.ones(8, 64, 32), atol=1e-6, rtol=0)
    assert sorted(Counter(pids.tolist()).values()) == [2, 2, 2, 2]
    records = val_loader.dataset.records
    assert records == ds.query + ds.gallery
    batch = next(iter(val_loader))
    imgs, pids, camids, occ_labels, paths = batch.images, batch.pids, batch.camids, batch.occ_labels, batch.paths
    n = min(16, len(records))
    assert imgs.shape == (n, 3, 64, 32) and pids.dtype == camids.dtype == occ_labels.dtype == torch.int64
    assert paths == [r.path for r in records[:n]] and occ_labels.tolist() == [0] * n


def test_softmax_sampler_and_new_benchmark_labels(synthetic_root):
    cfg = make_cfg(synthetic_root, DATALOADER__SAMPLER="softmax", DATASETS__NAMES="new_occ_duke")
    train_loader, val_loader, *_ = make_dataloader(cfg)
    ds = build_dataset("new_occ_duke", synthetic_root)
    assert len(train_loader) == len(ds.train) // 8
    labels = torch.cat([batch.occ_labels for batch in val_loader])
    assert labels.tolist() == [r.occ_label for r in ds.query + ds.gallery]


def test_corrupt_image_in_a_worker_is_one_line(data_copy):
    ds = build_dataset("occ_duke", data_copy)
    bad = ds.gallery[3].path
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8 damaged \xff\xd9")
    loader = make_val_loader(make_cfg(data_copy, DATALOADER__NUM_WORKERS=1), ds)
    with pytest.raises(DataError) as e:
        list(loader)
    assert "worker process" in str(e.value)
    assert user_message(e.value) == f"cannot read image {bad} (missing, truncated or not an image); " \
                                    f"replace the file or delete it from its split folder"
    with open(bad, "wb") as f:  # cut mid-stream: named as such (DATASETS.TRUNCATED_IMAGES error)
        f.write(open(ds.gallery[4].path, "rb").read()[:600])
    with pytest.raises(DataError) as e:
        list(loader)
    assert user_message(e.value).startswith(f"image {bad} is truncated (a JPEG cut mid-stream")
