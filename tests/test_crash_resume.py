"""Crash safety: a failed save keeps the previous checkpoint and says so; a save killed half-way leaves
nothing behind; ``kill -9`` + ``--resume`` ends bitwise where an uninterrupted run ends; a NaN batch is
skipped without a trace."""
from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from processor.checkpointer import Checkpointer
from processor.trainer import HookBase
from tests.test_train import DEMO_CFG, REPO, run_training, tiny_cfg
from utils.errors import CheckpointError

EPOCHS = 3


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = Checkpointer(model, str(tmp_path), optimizer)
    path = ckpt.save_state("last.pth", epoch=1)
    saved = open(path, "rb").read()
    epoch1 = {k: v.clone() for k, v in model.state_dict().items()}
    real_save = torch.save

    def save_half_then_fail(obj, f):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {path} \\(No space left on device\\); "
                                              f"the previous last.pth is intact; free space in {tmp_path}"):
        ckpt.save_state("last.pth", epoch=2)
    monkeypatch.undo()

    assert open(path, "rb").read() == saved
    assert os.listdir(tmp_path) == ["last.pth"]  # the partial temporary file was removed
    assert ckpt.resume(path) == 1
    assert all(torch.equal(v, epoch1[k]) for k, v in model.state_dict().items())


def test_files_of_a_save_killed_half_way_are_removed(tmp_path):
    """``kill -9`` while writing leaves ``last.pth.tmp.<pid>``: the next run removes it at its start
    and before each save, but never the file of a process that still runs (another run saving)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = tmp_path / f"last.pth.tmp.{dead.pid}"
    stray.write_bytes(b"PK half a zip")
    live = tmp_path / f"transformer_2.pth.tmp.{os.getppid()}"
    live.write_bytes(b"being written")
    ckpt = Checkpointer(nn.Linear(2, 2), str(tmp_path))
    assert not stray.exists() and live.exists()
    stray.write_bytes(b"PK half a zip")
    ckpt.save_state("last.pth", epoch=1)
    assert sorted(os.listdir(tmp_path)) == ["last.pth", live.name]
    assert ckpt.resume(str(tmp_path / "last.pth")) == 1


def train_cmd(out: str, root: str, *extra: str) -> list[str]:
    """``train.py`` on the tiny config: 3 epochs of 2 ids x 4 images per step, a log line per step, the
    decoded-sample cache on (as in the demo config) in ``<out>_cache``: built by the run's first start."""
    return [sys.executable, os.path.join(REPO, "train.py"), "--config_file", DEMO_CFG, *extra,
            "DATASETS.ROOT_DIR", root, "OUTPUT_DIR", out, "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.CACHE", "True", "DATALOADER.CACHE_DIR", out + "_cache",
            "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]", "SOLVER.IMS_PER_BATCH", "8",
            "SOLVER.MAX_EPOCHS", str(EPOCHS), "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "0",
            "SOLVER.CHECKPOINT_PERIOD", str(EPOCHS), "SOLVER.LOG_PERIOD", "1"]


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(synthetic_root, tmp_path):
    """Each run builds its own cache in its first start (the killed run's second start reuses it).
    One thread per run keeps the two concurrent runs fast; that the build changes no thread count or
    random stream of a multi-threaded run is tests/test_cache.py's check."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    straight_dir, killed_dir = str(tmp_path / "straight"), str(tmp_path / "killed")
    straight = subprocess.Popen(train_cmd(straight_dir, synthetic_root), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(train_cmd(killed_dir, synthetic_root), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Epoch 1's last.pth is written before epoch 2 logs its first step; epoch 2 has several steps
    # left when that line arrives, so the kill lands mid-epoch (checked below).
    seen = []
    for line in victim.stdout:
        seen.append(line)
        if "Epoch[2] Iter[1/" in line:
            victim.send_signal(signal.SIGKILL)
            break
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    assert any("building the training-data cache" in line for line in seen), "".join(seen)[-3000:]
    state = torch.load(os.path.join(killed_dir, "last.pth"), weights_only=True)
    assert state["epoch"] == 1, "the kill came too late: epoch 2 had already been saved"

    resumed = subprocess.run(train_cmd(killed_dir, synthetic_root, "--resume"), cwd=REPO, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {killed_dir}/last.pth (epoch 1)" in resumed.stdout
    assert "using the training-data cache" in resumed.stdout
    assert straight.wait() == 0, straight.stderr.read()[-3000:]

    name = f"transformer_{EPOCHS}.pth"
    a = torch.load(os.path.join(straight_dir, name), weights_only=True)
    b = torch.load(os.path.join(killed_dir, name), weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(os.path.join(straight_dir, "last.pth"), weights_only=True)["optimizer"]["state"]
    sb = torch.load(os.path.join(killed_dir, "last.pth"), weights_only=True)["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])) for i in sa for k in sa[i])


def test_a_nan_batch_is_skipped_without_poisoning_the_model(synthetic_root, tmp_path):
    """NaN pixels (e.g. a broken decoder) make the loss NaN: the step is skipped and leaves no trace,
    BatchNorm running statistics included (its forward pass updates them before the loss is known)."""

    class PoisonSecondBatch(HookBase):
        def before_epoch(self) -> None:
            loader = self.trainer.train_loader
            self.trainer.train_loader = [b if i != 1 else dataclasses.replace(b, images=b.images * float("nan"))
                                         for i, b in enumerate(loader)]

    cfg = tiny_cfg(synthetic_root, str(tmp_path), "SOLVER.MAX_EPOCHS", "1")
    trainer = run_training(cfg, hooks=[PoisonSecondBatch()])
    assert trainer.skipped_steps == 1
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values() if v.is_floating_point())


def test_resume_config_check(tmp_path):
    """Places may change on resume, training keys only with --allow-config-change, model keys never."""
    from config import load_cfg
    from processor.run_folder import check_resume_config
    from train import parse_args

    path = str(tmp_path / "last.pth")
    torch.save({"model": {}, "epoch": 1, "config": load_cfg(DEMO_CFG).dump()}, path)
    check_resume_config(path, load_cfg(DEMO_CFG, ["DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", "elsewhere"]))
    # The speed switches compute the same numbers: a run may be resumed with them turned on or off.
    check_resume_config(path, load_cfg(DEMO_CFG, ["DATALOADER.CACHE", "False", "DATALOADER.CACHE_DIR", "/tmp/c",
                                                  "INPUT.BATCH_AUGMENT", "False", "SOLVER.COMPILE", "True",
                                                  "SOLVER.COMPILE_MODE", "max-autotune"]))
    lr = load_cfg(DEMO_CFG, ["SOLVER.BASE_LR", "0.01"])
    with pytest.raises(CheckpointError, match=r"SOLVER.BASE_LR 0.002 \(now 0.01\); .* add --allow-config-change"):
        check_resume_config(path, lr)
    check_resume_config(path, lr, allow_change=True)
    parts = load_cfg(DEMO_CFG, ["MODEL.NUM_PARTS", "3", "INPUT.MASK_PREPROCESS", "three"])
    with pytest.raises(CheckpointError, match="another model: MODEL.NUM_PARTS 5 \\(now 3\\)"):
        check_resume_config(path, parts, allow_change=True)
    for argv in (["--config_file", "c.yml", "--resume", "--allow-config-change", "SOLVER.BASE_LR", "0.01"],
                 ["--config_file", "c.yml", "SOLVER.BASE_LR", "0.01", "--resume", "--allow-config-change"],
                 ["--config_file", "c.yml", "SOLVER.BASE_LR", "0.01", "--allow-config-change", "--resume"]):
        assert parse_args(argv) == ("c.yml", ["SOLVER.BASE_LR", "0.01"], "auto", True, False), argv
    for argv in (["--config_file", "c.yml", "--overwrite", "SOLVER.BASE_LR", "0.01"],
                 ["--config_file", "c.yml", "SOLVER.BASE_LR", "0.01", "--overwrite"]):
        assert parse_args(argv) == ("c.yml", ["SOLVER.BASE_LR", "0.01"], None, False, True), argv


@pytest.mark.slow
def test_resume_keeps_every_validated_epoch(synthetic_root, tmp_path):
    """The validation history is EvalHook's state in last.pth: after --resume, val_results.json still holds
    the epochs evaluated before the interruption (it used to hold only the epochs after it)."""
    import json

    from tests.test_train import StopAfter

    opts = ("SOLVER.MAX_EPOCHS", "3", "SOLVER.EVAL_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", "0")
    cfg = tiny_cfg(synthetic_root, str(tmp_path / "run"), *opts)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, hooks=[StopAfter(2)])
    last = tmp_path / "run" / "last.pth"
    saved = torch.load(last, weights_only=True)
    assert sorted(saved["hooks"]["EvalHook"]["history"]) == ["1", "2"]
    before = json.loads((tmp_path / "run" / "val_results.json").read_text())
    run_training(cfg, resume=str(last))
    after = json.loads((tmp_path / "run" / "val_results.json").read_text())
    assert list(after) == ["1", "2", "3"] and {e: after[e] for e in before} == before
    assert not [n for n in os.listdir(tmp_path / "run") if ".tmp." in n]  # written through a temporary file

    # A last.pth written before hooks had state still resumes (its history starts empty).
    old = {k: v for k, v in saved.items() if k != "hooks"}
    torch.save(old, last)
    resumed = run_training(cfg, resume=str(last))
    assert resumed.start_epoch == 3
    assert list(json.loads((tmp_path / "run" / "val_results.json").read_text())) == ["3"]
