"""The decoded-sample cache (DATALOADER.CACHE): exact values, reuse, invalidation, DDP build, bad files."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

import datasets.cache as cache_mod
from datasets import build_dataset
from datasets.cache import CachedSource, DecodedSource, build_cache, cache_folder, open_cache
from datasets.masks import find_mask
from tests.test_datasets import make_cfg
from utils.errors import ConfigError, DataError, user_message


def cfg_for(root: str, cache_dir: str, **overrides):
    return make_cfg(root, DATALOADER__CACHE=True, DATALOADER__CACHE_DIR=cache_dir, **overrides)


def open_for(cfg, grouping: str | None = "five") -> CachedSource:
    ds = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    return open_cache(cfg, ds.name, ds.train, grouping)


def test_cached_samples_equal_decoded_ones(synthetic_root, tmp_path):
    cfg = cfg_for(synthetic_root, str(tmp_path / "cache"))
    cached = open_for(cfg)
    decoded = DecodedSource(build_dataset("occ_duke", synthetic_root).train, cfg.INPUT.SIZE_TRAIN, "five")
    assert len(cached) == len(decoded) > 0 and cached.meta["mask_dtype"] == "float16"
    for i in range(len(decoded)):
        (img, parts), (img2, parts2) = decoded[i], cached[i]
        assert img2.dtype == torch.uint8 and torch.equal(img2, img)
        assert parts2.dtype == torch.float16 and torch.equal(parts2.float(), parts)


def test_masks_that_are_not_float16_stay_float32(data_copy, tmp_path):
    ds = build_dataset("occ_duke", data_copy)
    path = find_mask(ds.train[0].path)
    np.save(path, np.full((36, 8, 4), 1 / 3, np.float32))  # 1/3 has no exact float16
    cached = open_for(cfg_for(data_copy, str(tmp_path / "cache")))
    assert cached.meta["mask_dtype"] == "float32"
    assert torch.equal(cached[0][1], DecodedSource(ds.train, [64, 32], "five")[0][1])


def test_cache_is_reused(synthetic_root, tmp_path, monkeypatch):
    cfg = cfg_for(synthetic_root, str(tmp_path / "cache"))
    first = open_for(cfg)
    monkeypatch.setattr(cache_mod, "build_cache", lambda *a, **k: pytest.fail("the cache was rebuilt"))
    second = open_for(cfg)
    assert second.folder == first.folder and len(os.listdir(tmp_path / "cache")) == 1


@pytest.mark.parametrize("change", ["image", "mask", "size", "grouping"])
def test_cache_is_rebuilt_when_a_source_or_key_changes(data_copy, tmp_path, change):
    cfg = cfg_for(data_copy, str(tmp_path / "cache"))
    before = open_for(cfg)
    ds = build_dataset("occ_duke", data_copy)
    grouping = "five"
    if change == "image":  # same size and content class, new mtime
        path = ds.train[3].path
        os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns + 10**9))
    elif change == "mask":
        path = find_mask(ds.train[3].path)
        np.save(path, np.zeros_like(np.load(path)))
    elif change == "size":
        cfg = cfg_for(data_copy, str(tmp_path / "cache"), INPUT__SIZE_TRAIN=[32, 16])
    else:
        grouping = "three"
    after = open_for(cfg, grouping)
    assert after.folder != before.folder and sorted(os.listdir(tmp_path / "cache")) == sorted(
        [os.path.basename(before.folder), os.path.basename(after.folder)])
    if change == "mask":
        assert float(after[3][1].abs().sum()) == 0 < float(before[3][1].abs().sum())
    if change == "size":
        assert after[0][0].shape == (3, 32, 16)
    if change == "grouping":
        assert after[0][1].shape[0] == 3


def test_only_local_rank_0_builds_and_the_others_wait(synthetic_root, tmp_path, monkeypatch):
    """Unit-level DDP: a rank with LOCAL_RANK > 0 never builds; it opens what rank 0 built during the
    barrier, and fails with a DataError when nothing was built."""
    cfg = cfg_for(synthetic_root, str(tmp_path / "cache"))
    ds = build_dataset("occ_duke", synthetic_root)
    monkeypatch.setenv("LOCAL_RANK", "1")
    built = []
    real_build = cache_mod.build_cache

    def rank0_builds_during_the_barrier():
        folder, key = cache_folder(str(tmp_path / "cache"), ds.name, ds.train, cfg.INPUT.SIZE_TRAIN, "five")
        real_build(folder, ds.train, cfg.INPUT.SIZE_TRAIN, "five", key)
        built.append(folder)

    monkeypatch.setattr(cache_mod, "build_cache", lambda *a, **k: pytest.fail("a rank > 0 built the cache"))
    monkeypatch.setattr(cache_mod.comm, "synchronize", lambda: None)
    with pytest.raises(DataError, match="local rank 0 builds it"):
        open_cache(cfg, ds.name, ds.train, "five")
    monkeypatch.setattr(cache_mod.comm, "synchronize", rank0_builds_during_the_barrier)
    assert open_cache(cfg, ds.name, ds.train, "five").folder == built[0]


def test_concurrent_builders_leave_one_valid_cache(synthetic_root, tmp_path):
    ds = build_dataset("occ_duke", synthetic_root)
    folder, key = cache_folder(str(tmp_path / "cache"), ds.name, ds.train, [64, 32], "five")
    build_cache(folder, ds.train, [64, 32], "five", key, workers=2)
    build_cache(folder, ds.train, [64, 32], "five", key)  # the loser of the rename discards its copy
    assert os.listdir(tmp_path / "cache") == [os.path.basename(folder)]
    assert torch.equal(CachedSource(folder)[1][0], DecodedSource(ds.train, [64, 32], None)[1][0])


@pytest.mark.parametrize("victim", ["images.npy", "masks.npy", "mask_index.npy", "meta.json"])
def test_a_bad_cache_file_is_a_data_error_naming_it(synthetic_root, tmp_path, victim):
    folder = open_for(cfg_for(synthetic_root, str(tmp_path / "cache"))).folder
    path = os.path.join(folder, victim)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(DataError) as err:
        open_for(cfg_for(synthetic_root, str(tmp_path / "cache")))
    msg = user_message(err.value)
    assert path in msg and "delete the folder" in msg and "\n" not in msg


def test_cache_dir_default_is_beside_the_runs(synthetic_root, tmp_path, monkeypatch):
    cfg = make_cfg(synthetic_root)
    cfg.OUTPUT_DIR = str(tmp_path / "logs" / "run1")
    assert cache_mod.cache_dir(cfg) == str(tmp_path / "logs" / "data_cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.cache_dir(make_cfg(synthetic_root)) == str(tmp_path / "xdg" / "tsd")


def test_unwritable_cache_dir_is_a_config_error(synthetic_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="DATALOADER.CACHE_DIR"):
        open_for(cfg_for(synthetic_root, str(blocker / "cache")))


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_building_the_cache_changes_no_number_of_the_run(synthetic_root, tmp_path, workers):
    """A run that builds the cache, one that reuses it and one without it end with bitwise-equal
    weights: the build touches no random stream and no thread count of the training process (it used
    to leave ``torch.set_num_threads(1)`` behind when built in-process, and 69 of 123 tensors
    differed after one epoch)."""
    from tests.test_train import run_training, tiny_cfg

    threads = torch.get_num_threads()
    try:
        weights, after = {}, {}
        for name, cache in (("built", "True"), ("reused", "True"), ("off", "False")):
            torch.set_num_threads(2)  # as a fresh process would have it; the bug showed only with > 1 thread
            cfg = tiny_cfg(synthetic_root, str(tmp_path / name), "SOLVER.MAX_EPOCHS", "1", "SOLVER.SEED", "7",
                           "SOLVER.CHECKPOINT_PERIOD", "0", "DATALOADER.NUM_WORKERS", workers,
                           "DATALOADER.CACHE", cache, "DATALOADER.CACHE_DIR", str(tmp_path / "cache"))
            assert (name == "built") == (cache == "True" and not (tmp_path / "cache").exists())
            weights[name] = run_training(cfg).model.state_dict()
            after[name] = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    for other in ("reused", "off"):
        differ = [k for k in weights["built"] if not torch.equal(weights["built"][k], weights[other][k])]
        assert not differ, f"built vs {other}: {len(differ)} of {len(weights['built'])} tensors differ"
    assert after == {"built": 2, "reused": 2, "off": 2}
