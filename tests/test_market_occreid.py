"""The paper's second protocol: synthetic Market-1501 and Occluded-REID in their real layouts, train on
Market-1501, evaluate the checkpoint on Occluded-REID and on Market-1501 (test.py, end to end)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from config import load_cfg
from datasets.factory import build_dataset
from datasets.masks import find_mask
from tools.synthetic.market1501 import MARKET_DIR, plan_market
from tools.synthetic.occ_reid import OCC_REID_DIR, OCC_REID_FOLDERS, plan_occ_reid
from tools.synthetic.writer import generate
from utils.errors import ConfigError, DataError, user_message

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKET_CFG = os.path.join(REPO, "configs", "demo", "market_tiny.yml")
MARKET_NAME = re.compile(r"^(-1|\d{4})_c[1-6]s[1-6]_\d{6}_\d{2}\.jpg$")
OCC_REID_NAME = re.compile(r"^(\d{3})_\d{2}\.tif$")


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> str:
    """A tiny synthetic Market-1501 and Occluded-REID under one data root."""
    root = str(tmp_path_factory.mktemp("market_occreid"))
    generate(root, scale="tiny", seed=0, dataset="market1501")
    generate(root, scale="tiny", seed=0, dataset="occ_reid")
    return root


@pytest.mark.slow
def test_full_plans_have_the_real_statistics():
    market = plan_market("full", seed=0)
    splits = {s: [i for i in market.images if s in i.splits]
              for s in ("bounding_box_train", "query", "bounding_box_test")}
    assert len(splits["bounding_box_train"]) == 12936 and len({i.pid for i in splits["bounding_box_train"]}) == 751
    assert len(splits["query"]) == 3368 and len({i.pid for i in splits["query"]}) == 750
    gallery = splits["bounding_box_test"]
    assert len(gallery) == 19732 and sum(i.pid != -1 for i in gallery) == 15913
    assert sum(i.pid == 0 for i in gallery) == 2793
    assert len({i.name for i in market.images}) == len(market.images)
    assert not {i.pid for i in splits["bounding_box_train"]} & {i.pid for i in splits["query"] + gallery}
    occ = plan_occ_reid("full", seed=0)
    per_folder = Counter((i.splits[0].split("/")[0], i.pid) for i in occ.images)
    assert len(per_folder) == 400 and set(per_folder.values()) == {5}
    assert {i.pid for i in occ.images} == set(range(1, 201))


def test_market_layout_names_and_masks(two_sets):
    base = os.path.join(two_sets, MARKET_DIR)
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        names = os.listdir(os.path.join(base, split))
        assert names and all(MARKET_NAME.match(n) for n in names), split
    gallery = os.listdir(os.path.join(base, "bounding_box_test"))
    assert any(n.startswith("-1_") for n in gallery) and any(n.startswith("0000_") for n in gallery)
    ds = build_dataset("market1501", two_sets)
    assert all(find_mask(r.path) for r in ds.train)  # where bpbreid puts them, found by the loader
    assert ds.num_train_pids == 12 and {r.camid for r in ds.train} <= set(range(6))
    assert -1 not in {r.pid for r in ds.gallery} and 0 in {r.pid for r in ds.gallery}  # junk dropped, distractors kept
    gallery_cams = {(r.pid, r.camid) for r in ds.gallery}
    assert all(any(p == r.pid and c != r.camid for p, c in gallery_cams) for r in ds.query)


def test_occluded_reid_layout_and_loader(two_sets):
    base = os.path.join(two_sets, OCC_REID_DIR)
    for folder in OCC_REID_FOLDERS:
        for pid_dir in os.listdir(os.path.join(base, folder)):
            names = os.listdir(os.path.join(base, folder, pid_dir))
            assert len(names) == 3 and all(OCC_REID_NAME.match(n) and n[:3] == pid_dir for n in names)
    ds = build_dataset("occ_reid", two_sets)
    assert ds.train == [] and ds.num_train_pids == 0
    assert len(ds.query) == len(ds.gallery) == 24
    assert {r.camid for r in ds.query} == {0} and {r.camid for r in ds.gallery} == {1}
    assert all("occluded_body_images" in r.path for r in ds.query)
    assert {r.pid for r in ds.query} == {r.pid for r in ds.gallery} == set(range(1, 9))


def test_generator_arguments(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        generate(str(tmp_path), dataset="cuhk03")
    with pytest.raises(ConfigError, match="--names-from"):
        generate(str(tmp_path), scale="tiny", dataset="market1501", names_from=str(tmp_path))


def test_an_image_in_two_formats_is_an_error_naming_it(two_sets, tmp_path):
    """A converted .jpg beside its released .tif (the reference reads .jpg copies): each image would
    be a query or gallery image twice. An error naming the pair, not doubled counts."""
    import shutil

    import cv2

    root = str(tmp_path / "data")
    shutil.copytree(os.path.join(two_sets, OCC_REID_DIR), os.path.join(root, OCC_REID_DIR))
    folder = os.path.join(root, OCC_REID_DIR, "whole_body_images")
    tifs = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs)
    for tif in tifs[:2]:
        cv2.imwrite(tif[:-4] + ".jpg", cv2.imread(tif))
    stem = os.path.basename(tifs[0])[:-4]
    with pytest.raises(DataError) as e:
        build_dataset("occ_reid", root)
    assert user_message(e.value) == (
        f"image {stem} is in {os.path.dirname(tifs[0])} twice, as {stem}.jpg and {stem}.tif (and 1 more such "
        f"pair): it would be counted twice; keep one format (e.g. move the .jpg or the .tif files out of the folder)")
    for tif in tifs:
        os.remove(tif)  # converted copies alone are fine
    assert len(build_dataset("occ_reid", root).gallery) == 2


def test_empty_occluded_reid_folder_is_a_data_error(tmp_path):
    base = tmp_path / OCC_REID_DIR
    for folder in OCC_REID_FOLDERS:
        (base / folder).mkdir(parents=True)
    with pytest.raises(DataError, match="occluded_body_images has no images"):
        build_dataset("occ_reid", str(tmp_path))


@pytest.mark.slow
def test_train_on_market_evaluate_on_occluded_reid_and_market(two_sets, tmp_path):
    """The protocol end to end on the tiny sets: two epochs on Market-1501 (751 -> 12 classes here),
    then test.py on Occluded-REID (no classifier in the model: num_classes 0) and on Market-1501."""
    from processor.builder import build_trainer
    from utils.misc import set_seed

    small = ["DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]",
             "TEST.IMS_PER_BATCH", "64"]
    out = tmp_path / "market"
    cfg = load_cfg(MARKET_CFG, ["DATASETS.ROOT_DIR", two_sets, "OUTPUT_DIR", str(out), *small,
                                "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCHS", "2", "SOLVER.WARMUP_EPOCHS", "1",
                                "SOLVER.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.LOG_PERIOD", "2"])
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    set_seed(cfg.SOLVER.SEED)
    build_trainer(cfg, None).train()
    weight = str(out / "transformer_2.pth")
    # Occluded-REID through test.py: the model is built with 0 classes and loads the 12-class checkpoint
    test_out = tmp_path / "occ_reid"
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "test.py"), "--config_file", MARKET_CFG, "DATASETS.ROOT_DIR", two_sets,
         "DATASETS.NAMES", "occ_reid", "TEST.WEIGHT", weight, "OUTPUT_DIR", str(test_out), "TEST.PER_PART", "True",
         *small],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    log = r.stdout + r.stderr
    assert "Warning" not in log and "WARNING" not in log, log[-2000:]
    res = json.load(open(test_out / "results.json"))
    assert res["dataset"] == "occ_reid"
    top = res["results"]["ALL"]
    assert top["num_valid"] == 24 and 0 <= top["mAP"] <= 1  # every occluded query has whole-body matches
    assert list(top["per_part"]) == ["global", "head", "arm", "torso", "leg", "feet"]
    # Market-1501 itself, in process (the same calls as test.py)
    from datasets import make_test_loader
    from model import make_model
    from processor.inference import evaluate

    cfg = load_cfg(MARKET_CFG, ["DATASETS.ROOT_DIR", two_sets, "TEST.WEIGHT", weight, *small])
    val_loader, num_query, num_classes, cams, views = make_test_loader(cfg)
    assert (num_query, num_classes) == (12, 12)
    model = make_model(cfg, num_classes, cams, views)
    model.load_param(weight)
    results = evaluate(cfg, model, val_loader, num_query, "cpu")
    assert results["all"]["num_valid"] == 12 and 0 <= results["all"]["mAP"] <= 1
