"""The trainer's events on real tiny trainings: ``metrics.jsonl`` across a kill and a resume, the hooks'
states in ``last.pth``, and hooks that do not keep their trainer (and its loader workers) alive."""
from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import shutil
import weakref

import pytest
import torch

import model  # noqa: F401  (see test_a_dropped_trainer_takes_its_loader_workers_with_it)
from processor.trainer import HookBase
from tests.test_train import run_training, tiny_cfg

# Figures of the machine's pace, which differ between any two runs.
TIMING = ("img_s", "eta_seconds", "epoch_seconds")


def metrics_lines(folder) -> list[dict]:
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_timing(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


class KeepThenKill(HookBase):
    """Copies ``last.pth`` after epoch ``keep`` (an older checkpoint to resume from), then raises in epoch
    ``kill`` after its step ``at`` (0-based) was written: the metrics file then holds lines of epochs
    after the copy's."""

    def __init__(self, out: str, keep: int, kill: int, at: int):
        self.out, self.keep, self.kill, self.at = out, keep, kill, at

    def after_epoch(self) -> None:
        if self.trainer.epoch == self.keep:
            shutil.copy(os.path.join(self.out, "last.pth"), os.path.join(self.out, f"epoch{self.keep}.pth"))

    def after_step(self) -> None:
        if self.trainer.epoch == self.kill and self.trainer.iter == self.at:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_metrics_jsonl_of_a_killed_and_resumed_run_equals_a_straight_run(synthetic_root, tmp_path, caplog):
    """Killed in epoch 3, resumed from a checkpoint of epoch 1: the lines of epochs 2 and 3 that the killed
    run wrote are cut and written again, so the file is line for line the straight run's (timing aside;
    the losses are bitwise the same), validation metrics included."""
    opts = ("SOLVER.MAX_EPOCHS", "3", "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.LOG_PERIOD", "1",
            "SOLVER.EVAL_PERIOD", "2")
    run_training(tiny_cfg(synthetic_root, str(tmp_path / "straight"), *opts))
    straight = metrics_lines(tmp_path / "straight")
    n = 3  # steps per epoch of the tiny config
    assert [(x["kind"], x["epoch"], x["iter"], x["step"]) for x in straight] == [
        (kind, e, i, (e - 1) * n + i) for e in (1, 2, 3) for kind, i in [("iter", 1), ("iter", 2), ("iter", 3),
                                                                         ("epoch", 3)]]
    epoch_lines = [x for x in straight if x["kind"] == "epoch"]
    assert [sorted(k for k in x if k.startswith("val/ALL/")) for x in epoch_lines] == [
        [], *[[f"val/ALL/{m}" for m in sorted(("mAP", "mINP", "num_valid", "rank1", "rank10", "rank5"))]] * 2]
    assert all({"loss/total", "loss/cls_global", "acc", "lr", *TIMING} <= set(x) for x in epoch_lines)
    assert epoch_lines[0]["skipped_steps"] == 0

    cfg = tiny_cfg(synthetic_root, str(tmp_path / "killed"), *opts)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, hooks=[KeepThenKill(cfg.OUTPUT_DIR, keep=1, kill=3, at=1)])
    killed = metrics_lines(tmp_path / "killed")
    assert [(x["epoch"], x["iter"]) for x in killed][-2:] == [(3, 1), (3, 2)]
    with caplog.at_level(logging.INFO, logger="tsd"):
        resumed = run_training(cfg, resume=str(tmp_path / "killed" / "epoch1.pth"))
    assert resumed.start_epoch == 2
    assert "removed the 6 line(s) written by the interrupted run after its checkpoint" in caplog.text
    assert without_timing(metrics_lines(tmp_path / "killed")) == without_timing(straight)

    # The writer's position is its hook's state in last.pth, beside the validation history.
    state = torch.load(tmp_path / "killed" / "last.pth", weights_only=True)["hooks"]
    assert state["PeriodicWriter"] == {"JSONWriter": {"offset": os.path.getsize(tmp_path / "killed" / "metrics.jsonl")}}
    assert sorted(state["EvalHook"]["history"]) == ["2", "3"]

    # A checkpoint without the writer's state (written before it had one): the lines of the epochs before
    # the resumed one are kept, the rest written again.
    old = torch.load(tmp_path / "killed" / "epoch1.pth", weights_only=True)
    del old["hooks"]["PeriodicWriter"]
    torch.save(old, tmp_path / "killed" / "old.pth")
    run_training(cfg, resume=str(tmp_path / "killed" / "old.pth"))
    assert without_timing(metrics_lines(tmp_path / "killed")) == without_timing(straight)


def test_a_new_run_starts_a_new_metrics_file(synthetic_root, tmp_path):
    """Lines of a run that ended before its first checkpoint (the folder then starts over as it is) do
    not stay in front of the new run's."""
    cfg = tiny_cfg(synthetic_root, str(tmp_path / "run"), "SOLVER.MAX_EPOCHS", "1", "SOLVER.LOG_PERIOD", "1")
    os.makedirs(cfg.OUTPUT_DIR)
    with open(os.path.join(cfg.OUTPUT_DIR, "metrics.jsonl"), "w") as f:
        f.write('{"kind": "iter", "epoch": 1, "iter": 1, "step": 1, "loss/total": 99.0}\n{"kind": "it')
    run_training(cfg)
    lines = metrics_lines(cfg.OUTPUT_DIR)
    assert [(x["kind"], x["step"]) for x in lines] == [("iter", 1), ("iter", 2), ("iter", 3), ("epoch", 3)]
    assert lines[0]["loss/total"] != 99.0


def test_a_dropped_trainer_takes_its_loader_workers_with_it(synthetic_root, tmp_path):
    """Hooks hold their trainer weakly: without the trainer <-> hooks reference cycle, a finished trainer
    is freed with its last reference, and its loader's persistent workers are shut down then, not at some
    later garbage collection, whose worker shutdown used to block an unrelated test (~5 s per worker).
    The garbage collector is off throughout: only reference counting frees anything here.

    ``model`` is imported with this module: timm's first import runs ``torch.fx.wrap``, whose frame keeps
    itself and its callers alive until a collection (pytorch/pytorch#195586); done inside ``build_trainer``
    it would hold that call's frame, and the trainer in it, whatever the hooks do.
    """
    cfg = tiny_cfg(synthetic_root, str(tmp_path / "run"), "DATALOADER.NUM_WORKERS", "2", "SOLVER.MAX_EPOCHS", "1",
                   "SOLVER.CHECKPOINT_PERIOD", "0")
    before = set(multiprocessing.active_children())
    gc.disable()
    try:
        trainer = run_training(cfg)
        workers = set(multiprocessing.active_children()) - before
        assert len(workers) == 2  # persistent: still there after the epoch
        alive = weakref.ref(trainer)
        del trainer
        assert alive() is None
        assert not [w for w in workers if w.is_alive()]
    finally:
        gc.enable()


class CountSkips(HookBase):
    """Counts two skipped steps in epoch 1 (as if their losses had been non-finite)."""

    def before_epoch(self) -> None:
        if self.trainer.epoch == 1:
            self.trainer.skipped_steps += 2


@pytest.mark.slow
def test_epochs_of_different_lengths_count_their_steps_across_a_resume(synthetic_root, tmp_path):
    """2 images of 4 identities a batch: the identity sampler's epochs hold 7, 8, 7 batches. Every line
    says its own epoch's length, the steps run 1, 2, ... without a gap or a repeat, and a run resumed
    from last.pth continues both counters (steps, skipped steps) where the checkpoint left them."""
    from tests.test_train import StopAfter

    opts = ("SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2", "SOLVER.MAX_EPOCHS", "3",
            "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.LOG_PERIOD", "1")
    straight = run_training(tiny_cfg(synthetic_root, str(tmp_path / "straight"), *opts), hooks=[CountSkips()])
    lines = metrics_lines(tmp_path / "straight")
    iters = [x for x in lines if x["kind"] == "iter"]
    assert [x["step"] for x in iters] == list(range(1, len(iters) + 1))
    lengths = [sum(x["epoch"] == e for x in iters) for e in (1, 2, 3)]
    assert lengths == [7, 8, 7]
    assert all(x["iters_per_epoch"] == lengths[x["epoch"] - 1] for x in lines)
    assert straight.state_dict() == {"steps_done": 22, "skipped_steps": 2}

    cfg = tiny_cfg(synthetic_root, str(tmp_path / "resumed"), *opts)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, hooks=[CountSkips(), StopAfter(2)])
    resumed = run_training(cfg, resume=str(tmp_path / "resumed" / "last.pth"))
    assert resumed.state_dict() == straight.state_dict()
    assert without_timing(metrics_lines(tmp_path / "resumed")) == without_timing(lines)

    # A last.pth saved before the trainer's counters were: the steps are estimated, the run goes on.
    old = torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)
    del old["trainer"]
    old["epoch"] = 2
    torch.save(old, tmp_path / "resumed" / "old.pth")
    assert run_training(cfg, resume=str(tmp_path / "resumed" / "old.pth")).skipped_steps == 0
