"""End-to-end training on the tiny synthetic set: learning, exact resume, non-finite guard, test.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from config import load_cfg
from processor.trainer import HookBase, NonFiniteLossError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "demo", "tsd_tiny.yml")


def tiny_cfg(root: str, out: str, *opts: str):
    """The demo config shrunk to seconds: 128x64 inputs, 4 ids x 4 images per batch, no workers."""
    return load_cfg(DEMO_CFG, [
        "DATASETS.ROOT_DIR", root, "OUTPUT_DIR", out, "DATALOADER.NUM_WORKERS", "0",
        "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]", "SOLVER.IMS_PER_BATCH", "16",
        "SOLVER.MAX_EPOCHS", "4", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "0",
        "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.LOG_PERIOD", "2", "TEST.IMS_PER_BATCH", "64", *opts])


def run_training(cfg, resume: str | None = None, hooks=()):
    from processor.builder import build_trainer
    from utils.misc import set_seed

    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    set_seed(cfg.SOLVER.SEED)
    trainer = build_trainer(cfg, resume)
    trainer.register_hooks(hooks)
    trainer.train()
    return trainer


class StopAfter(HookBase):
    """Simulates a crash at the end of an epoch (after the checkpoint hook has run)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_epoch(self) -> None:
        if self.trainer.epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_is_bitwise_identical(synthetic_root, tmp_path):
    straight = run_training(tiny_cfg(synthetic_root, str(tmp_path / "straight")))
    cfg = tiny_cfg(synthetic_root, str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, hooks=[StopAfter(2)])
    assert os.path.isfile(tmp_path / "resumed" / "transformer_2.pth")
    resumed = run_training(cfg, resume=str(tmp_path / "resumed" / "last.pth"))
    assert resumed.start_epoch == 3
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert all(torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])) for k in sa[i]), i


@pytest.mark.slow
def test_training_reduces_the_loss_and_writes_reference_checkpoints(synthetic_root, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(synthetic_root, str(out), "SOLVER.MAX_EPOCHS", "6", "SOLVER.EVAL_PERIOD", "6")
    first = {}

    class Record(HookBase):
        def after_step(self):
            if not first:
                first.update(self.trainer.losses)

    trainer = run_training(cfg, hooks=[Record()])
    names = set(first) - {"total"}
    assert {"cls_global", "tri_global", "mimic", "mask_parsing_ce", "visibility_focal", "div_aux"} <= names
    assert trainer.losses["total"] < first["total"]
    sd = torch.load(out / "transformer_6.pth", weights_only=True)
    assert "part_decoder.cross_attention.q_proj.weight" in sd and "base.fc.weight" in sd  # reference layout
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["epoch"] == 6 and {"optimizer", "scheduler", "scaler", "rng"} <= set(state)


def test_vit_baseline_trains_without_masks(synthetic_root, tmp_path):
    cfg = tiny_cfg(synthetic_root, str(tmp_path / "vit"), "MODEL.ARCH", "vit", "SOLVER.MAX_EPOCHS", "1")
    trainer = run_training(cfg)
    assert set(trainer.losses) == {"cls_global", "tri_global", "total"}


def test_non_finite_losses_are_skipped_then_abort(synthetic_root, tmp_path):
    cfg = tiny_cfg(synthetic_root, str(tmp_path / "nan"), "SOLVER.MAX_NONFINITE", "3", "SOLVER.MAX_EPOCHS", "2")
    from processor.builder import build_trainer
    from utils.misc import set_seed

    set_seed(0)
    trainer = build_trainer(cfg)
    loss_fn = trainer.loss_fn
    calls = {"n": 0}

    def poisoned(outputs, labels):
        terms = loss_fn(outputs, labels)
        calls["n"] += 1
        if calls["n"] == 2:  # one isolated NaN: skipped, training goes on
            terms["mimic"] = terms["mimic"] * float("nan")
        if calls["n"] >= 4:  # then diverges for good
            terms["cls_global"] = terms["cls_global"] + float("inf")
        return terms

    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.loss_fn = poisoned
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        trainer.train()
    assert trainer.skipped_steps == 4
    after = trainer.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the finite steps did train


@pytest.mark.slow
@pytest.mark.parametrize("new_metric", [False, True])
def test_test_py_evaluates_a_training_checkpoint(synthetic_root, tmp_path, new_metric):
    from model import make_model

    cfg = tiny_cfg(synthetic_root, str(tmp_path))
    model = make_model(cfg, 12, 8, 1)
    weight = tmp_path / "transformer_1.pth"
    torch.save(model.state_dict(), weight)
    opts = ["DATASETS.ROOT_DIR", synthetic_root, "TEST.WEIGHT", str(weight), "OUTPUT_DIR", str(tmp_path / "test"),
            "INPUT.SIZE_TEST", "[128, 64]", "INPUT.SIZE_TRAIN", "[128, 64]", "DATALOADER.NUM_WORKERS", "0"]
    if new_metric:
        opts += ["DATASETS.NAMES", "new_occ_duke", "TEST.NEW_METRIC", "True"]
    r = subprocess.run([sys.executable, os.path.join(REPO, "test.py"), "--config_file", DEMO_CFG, *opts],
                       capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(tmp_path / "test" / "results.json"))["results"]
    assert set(res) == ({"ALL", "NPO", "NTP"} if new_metric else {"ALL"})
    assert all(0 <= v["mAP"] <= 1 and v["num_valid"] > 0 for v in res.values())
    assert "Rank-1" in r.stdout


@pytest.mark.slow
def test_saved_config_round_trip_and_a_one_key_ablation(synthetic_root, tmp_path):
    """train.py with MODEL.NUM_PARTS 3 alone trains the 3-part model (the grouping follows) and writes
    config.yaml; test.py evaluates the checkpoint from TEST.WEIGHT alone (the run's config.yaml: model,
    data folder, device) and with --config_file config.yaml; a checkpoint without config.yaml beside it
    needs --config_file, which one error line says."""
    run = tmp_path / "tsd_three"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    train = [sys.executable, os.path.join(REPO, "train.py"), "--config_file", DEMO_CFG,
             "DATASETS.ROOT_DIR", synthetic_root,
             "OUTPUT_DIR", str(run), "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[128, 64]",
             "INPUT.SIZE_TEST", "[128, 64]", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCHS", "1",
             "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1",
             "TEST.IMS_PER_BATCH", "64", "MODEL.NUM_PARTS", "3", "MODEL.DEVICE_ID", "0,1"]
    r = subprocess.run(train, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    saved = load_cfg(str(run / "config.yaml"))
    assert (saved.MODEL.NUM_PARTS, saved.INPUT.MASK_PREPROCESS, saved.MODEL.DEVICE_ID) == (3, "three", "0,1")
    weight = run / "transformer_1.pth"
    assert torch.load(weight, weights_only=True)["query_embedding.weight"].shape[0] == 1 + 3  # background + 3 parts

    def test_py(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, os.path.join(REPO, "test.py"), *args], capture_output=True, text=True,
                              cwd=str(tmp_path), env=env, timeout=600)

    r = test_py("TEST.WEIGHT", str(weight))  # the one command
    assert r.returncode == 0, r.stderr[-2000:]
    one = json.load(open(run / "test_occ_duke" / "results.json"))
    assert one["weight"] == str(weight) and set(one["results"]) == {"ALL"}
    r = test_py("--config_file", str(run / "config.yaml"), "TEST.WEIGHT", str(weight),
                "OUTPUT_DIR", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.load(open(tmp_path / "t" / "results.json"))
    assert again["results"]["ALL"]["mAP"] == one["results"]["ALL"]["mAP"] > 0
    r = test_py("TEST.WEIGHT", str(weight), "DATASETS.NAMES", "new_occ_duke", "TEST.NEW_METRIC", "True")
    assert r.returncode == 0, r.stderr[-2000:]
    assert set(json.load(open(run / "test_new_occ_duke" / "results.json"))["results"]) == {"ALL", "NPO", "NTP"}

    bare = tmp_path / "downloaded" / "tsd.pth"  # e.g. a checkpoint of the original code: no config.yaml
    bare.parent.mkdir()
    bare.write_bytes(weight.read_bytes())
    r = test_py("TEST.WEIGHT", str(bare))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {bare} has no config.yaml beside it (train.py writes one into every run folder; a checkpoint of "
        "the original TSD code has none): add --config_file with the config it was trained with, e.g. "
        "--config_file configs/OCC_Duke/vit_base.yml"]


def test_train_py_reports_config_typo_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--config_file", DEMO_CFG,
                        "SOLVER.BASE_LRR", "0.1"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: unknown config key 'SOLVER.BASE_LRR' in the command line; "
                                "did you mean 'SOLVER.BASE_LR'?")
