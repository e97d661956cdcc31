"""Reproducibility on the CPU: ``SOLVER.SEED`` fixes the per-step losses bit for bit, whatever
``DATALOADER.NUM_WORKERS`` is and across an interrupted + resumed run with persistent workers."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from processor.trainer import HookBase
from tests.test_train import StopAfter, run_training, tiny_cfg


class RecordLosses(HookBase):
    """Collects every loss term of every step."""

    def __init__(self):
        self.losses: list[dict[str, float]] = []

    def after_step(self) -> None:
        self.losses.append(dict(self.trainer.losses))


def step_losses(root: str, out: str, *opts: str) -> list[dict[str, float]]:
    """Per-step loss terms of a 2-epoch tiny training."""
    record = RecordLosses()
    run_training(tiny_cfg(root, out, "SOLVER.MAX_EPOCHS", "2", "SOLVER.CHECKPOINT_PERIOD", "0", *opts),
                 hooks=[record])
    return record.losses


@pytest.fixture(scope="module")
def reference_losses(synthetic_root, tmp_path_factory) -> list[dict[str, float]]:
    return step_losses(synthetic_root, str(tmp_path_factory.mktemp("ref")))


def test_same_seed_gives_identical_losses(synthetic_root, tmp_path, reference_losses):
    assert len(reference_losses) >= 4
    assert step_losses(synthetic_root, str(tmp_path)) == reference_losses


def test_losses_do_not_depend_on_the_number_of_workers(synthetic_root, tmp_path, reference_losses):
    assert step_losses(synthetic_root, str(tmp_path), "DATALOADER.NUM_WORKERS", "2") == reference_losses


def test_per_sample_data_path_gives_identical_losses(synthetic_root, tmp_path, reference_losses):
    """The reference's per-sample augmentation in the workers trains bit for bit like the demo config's
    cached + batched path (DATALOADER.CACHE, INPUT.BATCH_AUGMENT; batch transform in the trainer)."""
    assert step_losses(synthetic_root, str(tmp_path / "run"), "DATALOADER.CACHE", "False", "INPUT.BATCH_AUGMENT",
                       "False", "DATALOADER.NUM_WORKERS", "2") == reference_losses


def test_another_seed_gives_other_losses(synthetic_root, tmp_path, reference_losses):
    other = step_losses(synthetic_root, str(tmp_path), "SOLVER.SEED", "7")
    assert len(other) == len(reference_losses) and other != reference_losses


def test_augmentation_is_a_function_of_seed_epoch_and_position(synthetic_root, tmp_path):
    """The same epoch drawn twice (fresh loader vs. one that already ran other epochs) is identical."""
    from datasets import make_dataloader

    cfg = tiny_cfg(synthetic_root, str(tmp_path), "DATALOADER.NUM_WORKERS", "1")
    fresh, used = make_dataloader(cfg)[0], make_dataloader(cfg)[0]
    for epoch in (1, 2):
        used.sampler.set_epoch(epoch)
        list(used)
    fresh.sampler.set_epoch(2)
    used.sampler.set_epoch(2)
    for a, b in zip(fresh, used, strict=True):
        a, b = batch_leaves(a), batch_leaves(b)  # the batched path's batches hold their augmentation (and host ints)
        assert len(a) == len(b) and all(torch.equal(x, y) if torch.is_tensor(x) else x == y for x, y in zip(a, b))


def batch_leaves(batch) -> list:
    """Every field of a batch dataclass, nested ones (the augmentation parameters) flattened, in order."""
    out = []
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        out += batch_leaves(value) if dataclasses.is_dataclass(value) else [value]
    return out


@pytest.mark.slow
def test_resume_with_persistent_workers_is_bitwise_identical(synthetic_root, tmp_path):
    """tests/test_train.py's resume check with NUM_WORKERS 2: restarted workers must not change the run."""
    opts = ("DATALOADER.NUM_WORKERS", "2", "SOLVER.MAX_EPOCHS", "3", "SOLVER.CHECKPOINT_PERIOD", "0")
    straight = run_training(tiny_cfg(synthetic_root, str(tmp_path / "straight"), *opts))
    cfg = tiny_cfg(synthetic_root, str(tmp_path / "resumed"), *opts)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, hooks=[StopAfter(1)])
    resumed = run_training(cfg, resume=os.path.join(cfg.OUTPUT_DIR, "last.pth"))
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
