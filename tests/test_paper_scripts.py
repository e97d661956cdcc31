"""The paper scripts ``run_tsd.sh`` (5 parts, tests epoch 90) and ``run_tsd_2.sh`` (3 parts, tests epoch
120): the same data checks with the same lines (one shared ``tools/paper_data.sh``), and the reference's
commands (§1.3) once the data are there."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("run_tsd.sh", "run_tsd_2.sh")


@pytest.fixture
def checkout(tmp_path) -> str:
    """The two scripts and their shared checks in a folder without data (they run where they lie)."""
    os.makedirs(tmp_path / "tools")
    for name in (*SCRIPTS, os.path.join("tools", "paper_data.sh")):
        shutil.copy(os.path.join(REPO, name), tmp_path / name)
    return str(tmp_path)


def run(checkout: str, script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", os.path.join(checkout, script)], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], **env})


def test_both_scripts_name_the_same_missing_data(checkout):
    data = os.path.join(checkout, "data", "Occluded_Duke")
    for step in ("nothing", "images and lists"):
        if step == "images and lists":
            for d in ("bounding_box_train", "query", "bounding_box_test"):
                os.makedirs(os.path.join(data, d))
            for f in ("new_query.txt", "new_gallery.txt"):
                open(os.path.join(data, f), "w").close()
        outputs = {}
        for script in SCRIPTS:
            r = run(checkout, script)
            assert r.returncode == 1 and r.stderr == "", (script, r.stderr)
            lines = r.stdout.splitlines()
            assert lines[-1] == (f"{script} needs the real data above. To run everything end to end on synthetic "
                                 f"data instead: make demo")
            outputs[script] = lines[:-1]
        assert outputs["run_tsd.sh"] == outputs["run_tsd_2.sh"], step
        missing = outputs["run_tsd.sh"]
        assert all(line.startswith("missing: ") for line in missing)
        if step == "nothing":
            assert len(missing) == 7 and missing[0] == (
                "missing: data/Occluded_Duke/bounding_box_train/ - Occluded-Duke images, made from DukeMTMC-reID by "
                "lightas' convert_duke_to_occduke.py (github.com/lightas/Occluded-DukeMTMC-Dataset)")
        else:
            assert [line.split(" - ")[0] for line in missing] == [
                "missing: data/Occluded_Duke/masks/pifpaf_maskrcnn_filtering/bounding_box_train/",
                "missing: logs/pretrain_model/jx_vit_base_p16_224-80ecf9dd.pth"]


def test_the_scripts_run_the_references_commands(checkout, tmp_path):
    """With the data in place: train, then test epoch 90 (5 parts) / epoch 120 (3 parts) on the new benchmark."""
    data = os.path.join(checkout, "data", "Occluded_Duke")
    for d in ("bounding_box_train", "query", "bounding_box_test", "masks/pifpaf_maskrcnn_filtering/bounding_box_train"):
        os.makedirs(os.path.join(data, d))
    for f in ("new_query.txt", "new_gallery.txt"):
        open(os.path.join(data, f), "w").close()
    os.makedirs(os.path.join(checkout, "logs", "pretrain_model"))
    open(os.path.join(checkout, "logs", "pretrain_model", "jx_vit_base_p16_224-80ecf9dd.pth"), "w").close()
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    weights = "MODEL.PRETRAIN_PATH logs/pretrain_model/jx_vit_base_p16_224-80ecf9dd.pth"
    for script, parts, n, out, epoch in (("run_tsd.sh", "five", 5, "tsd_5", 90),
                                         ("run_tsd_2.sh", "three", 3, "tsd_3", 120)):
        calls.write_text("")
        r = run(checkout, script, PYTHON=str(fake))
        assert r.returncode == 0, r.stdout + r.stderr
        train, test = calls.read_text().splitlines()
        assert train == (f"train.py --config_file configs/OCC_Duke/vit_base.yml INPUT.MASK_PREPROCESS {parts} "
                         f"MODEL.NUM_PARTS {n} SOLVER.BASE_LR 0.004 MODEL.DEVICE_ID 0 MODEL.WITH_FORE_HEAD True "
                         f"MODEL.WITH_DIVERSE_LOSS True {weights} OUTPUT_DIR logs/occ_duke/{out}")
        assert test == (f"test.py --config_file configs/OCC_Duke/vit_base.yml TEST.WEIGHT "
                        f"logs/occ_duke/{out}/transformer_{epoch}.pth INPUT.MASK_PREPROCESS {parts} "
                        f"MODEL.NUM_PARTS {n} "
                        f"MODEL.DEVICE_ID 0 MODEL.WITH_FORE_HEAD True DATASETS.NAMES new_occ_duke "
                        f"TEST.NEW_METRIC True OUTPUT_DIR logs/occ_duke/{out}")
