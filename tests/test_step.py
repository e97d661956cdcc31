"""The lean training step: the AMP choice per device, and loss logging that reads the device only
when it prints (same log lines as before)."""
from __future__ import annotations

import logging
import math
import sys
from types import SimpleNamespace

import pytest
import torch

from processor import trainer as trainer_mod
from processor.hooks import LoggingHook, StepMeter
from processor.trainer import amp_settings


@pytest.mark.parametrize("native", [True, False])
def test_cpu_autocasts_to_bf16_only_where_it_is_native(monkeypatch, caplog, native):
    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.INFO, logger="tsd"):
        for name in ("float16", "bfloat16"):
            assert amp_settings(True, name, "cpu") == ((torch.bfloat16, False) if native else (None, False))
    assert ("no native bfloat16" in caplog.text) == (not native)
    assert amp_settings(False, "bfloat16", "cpu") == (None, False)


def test_cuda_keeps_fp16_with_grad_scaler(monkeypatch):
    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: False)  # irrelevant on CUDA
    assert amp_settings(True, "float16", "cuda") == (torch.float16, True)
    assert amp_settings(True, "bfloat16", "cuda") == (torch.bfloat16, False)
    assert amp_settings(False, "float16", "cuda") == (None, False)


def test_capability_check_reads_torch_cpu_capabilities(monkeypatch):
    for caps, expected in [({"avx512_bf16": True}, True), ({"amx_bf16": True, "avx512_bf16": False}, True),
                           ({"avx512_bf16": False, "amx_bf16": False}, False), ({}, False)]:
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda caps=caps: caps)
        assert trainer_mod.cpu_has_native_bf16() is expected


class FakeTrainer(SimpleNamespace):
    """What the logging hook reads from a :class:`processor.trainer.Trainer`."""

    lr = 0.004


def test_logging_hook_averages_device_sums_and_skips_skipped_steps(caplog):
    steps = [{"cls": 1.0, "tri": 0.5}, None, {"cls": 3.0, "tri": 1.5}, {"cls": 2.0, "tri": 1.0}]
    t = FakeTrainer(epoch=1, max_epochs=1, iters_per_epoch=4, batch_size=8, skipped_steps=1)
    hook = LoggingHook(period=4, use_tqdm=False)
    hook.trainer = t
    with caplog.at_level(logging.INFO, logger="tsd"):
        hook.before_train()
        hook.before_epoch()
        for t.iter, terms in enumerate(steps):
            if terms is None:  # a skipped step leaves nothing to count
                t.step_terms, t.step_accuracy = {}, None
            else:
                t.step_terms = {k: torch.tensor(v) for k, v in terms.items()}
                t.step_terms["total"] = sum(t.step_terms.values())
                t.step_accuracy = torch.tensor(0.5)
            hook.after_step()
        hook.after_epoch()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("Epoch[1] Iter[4/4] loss: 3.000 cls: 2.000 tri: 1.000 acc: 0.500 lr: 4.00e-03 ")
    assert lines[1].startswith("Epoch 1 done in ") and lines[1].endswith(
        "img/s), loss 3.000, acc 0.500, 1 skipped steps")


def test_step_meter_without_accuracy_reports_nan():
    meter = StepMeter()
    meter.add(SimpleNamespace(step_terms={"total": torch.tensor(2.0)}, step_accuracy=None))
    mean = meter.mean()
    assert mean["total"] == 2.0 and math.isnan(mean["acc"])
    meter.reset()
    assert meter.mean() == {}


def test_tensorboard_hook_writes_period_means(monkeypatch, tmp_path):
    """Every ``period`` steps (and at the epoch's end) the means since the last write."""
    import types

    scalars = []

    class Writer:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, round(value, 6), step))

        def close(self):
            scalars.append("closed")

    # tensorboard is optional (not installed in CI): stand in for torch.utils.tensorboard.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    from processor.hooks import TensorboardHook

    hook = TensorboardHook(str(tmp_path), period=2)
    t = FakeTrainer(epoch=1, iters_per_epoch=3)
    hook.trainer = t
    for t.iter, loss in enumerate([1.0, 3.0, 5.0]):
        t.step_terms, t.step_accuracy = {"total": torch.tensor(loss)}, torch.tensor(0.25)
        hook.after_step()
    hook.after_epoch()
    hook.after_train()
    assert scalars == [("loss/total", 2.0, 1), ("acc", 0.25, 1), ("lr", 0.004, 1),
                       ("loss/total", 5.0, 2), ("acc", 0.25, 2), ("lr", 0.004, 2), "closed"]
