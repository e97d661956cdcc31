"""The lean training step: the AMP choice per device, and the event storage and its writers, which read
the device only when they write (same log lines as before)."""
from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest
import torch

from processor import trainer as trainer_mod
from processor.events import EventStorage
from processor.hooks import EvalHook, IterationTimer, LoggingHook, PeriodicWriter
from processor.trainer import amp_settings
from tools.bench_train import count_host_reads


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
    """What the logging hooks read from a :class:`processor.trainer.Trainer`."""

    lr = 0.004


def put_step(t: FakeTrainer, terms: dict[str, float] | None, acc: float | None = 0.5) -> None:
    """What ``Trainer.run_step`` leaves: the step's terms (None: a skipped step) on the trainer and in
    its event storage."""
    t.storage.iter = t.iter
    if terms is None:
        t.step_terms, t.step_accuracy = {}, None
        return
    t.step_terms = {k: torch.tensor(v) for k, v in terms.items()}
    t.step_terms["total"] = sum(t.step_terms.values())
    t.storage.put_scalars(**{f"loss/{k}": v for k, v in t.step_terms.items()})
    if acc is not None:
        t.step_accuracy = torch.tensor(acc)
        t.storage.put_scalar("acc", t.step_accuracy)
    t.storage.put_scalar("lr", t.lr, average=False)


def test_logging_hook_averages_device_sums_and_skips_skipped_steps(caplog):
    steps = [{"cls": 1.0, "tri": 0.5}, None, {"cls": 3.0, "tri": 1.5}, {"cls": 2.0, "tri": 1.0}]
    t = FakeTrainer(epoch=1, max_epochs=1, iters_per_epoch=4, batch_size=8, skipped_steps=1,
                    storage=EventStorage(4))
    timer, hook = IterationTimer(), LoggingHook(period=4, use_tqdm=False)
    timer.trainer = hook.trainer = t
    with caplog.at_level(logging.INFO, logger="tsd"), count_host_reads() as reads:
        for h in (timer, hook):
            h.before_train()
            h.before_epoch()
        for t.iter, terms in enumerate(steps):
            put_step(t, terms)
            for h in (timer, hook):
                h.after_step()
            if t.iter < 3:
                assert not reads  # nothing is read back between log lines
        for h in (timer, hook):
            h.after_epoch()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("Epoch[1] Iter[4/4] loss: 3.000 cls: 2.000 tri: 1.000 acc: 0.500 lr: 4.00e-03 ")
    assert lines[1].startswith("Epoch 1 done in ") and lines[1].endswith(
        "img/s), loss 3.000, acc 0.500, 1 skipped steps")
    assert sum(reads.values()) == 1  # one read for the log line; the epoch summary reuses it


def test_event_storage_means_over_windows_without_accuracy():
    """Means since the epoch began or since an earlier read; latest scalars only in the window they were
    put in; a new epoch starts afresh; a scalar never put (no accuracy function) is left out."""
    storage = EventStorage(iters_per_epoch=4)
    storage.put_scalar("loss/total", torch.tensor(2.0))
    storage.put_scalar("lr", 0.1, average=False)
    first = storage.read()
    assert storage.scalars() == {"loss/total": 2.0, "lr": 0.1}
    storage.put_scalar("loss/total", torch.tensor(4.0))
    storage.put_scalar("img_s", 10.0)  # a host number can be averaged too
    assert storage.scalars(since=first) == {"loss/total": 4.0, "img_s": 10.0}
    assert storage.scalars() == {"loss/total": 3.0, "img_s": 10.0, "lr": 0.1}
    assert "acc" not in storage.scalars() and storage.read() is storage.read()  # read once, then reused
    storage.begin_epoch(2)
    assert storage.scalars() == {} and storage.scalars(since=first) == {}
    assert storage.step == 5


def test_tensorboard_writer_writes_period_means(monkeypatch, tmp_path):
    """Every ``period`` steps (and at the epoch's end) the means since the last write; a resumed run
    purges the events after its checkpoint."""
    import types

    scalars, opened = [], []

    class Writer:
        def __init__(self, log_dir, purge_step=None):
            opened.append((log_dir, purge_step))

        def add_scalar(self, tag, value, step):
            scalars.append((tag, round(value, 6), step))

        def close(self):
            scalars.append("closed")

    # tensorboard is optional (not installed in CI): stand in for torch.utils.tensorboard.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    from processor.events import TensorboardWriter

    hook = PeriodicWriter([TensorboardWriter(str(tmp_path))], period=2)
    t = FakeTrainer(epoch=1, iters_per_epoch=3, storage=EventStorage(3))
    hook.trainer = t
    hook.before_train()
    for t.iter, loss in enumerate([1.0, 3.0, 5.0]):
        put_step(t, {"total": loss}, acc=0.25)
        hook.after_step()
    hook.after_epoch()
    hook.after_train()
    assert opened == [(str(tmp_path), None)]
    assert scalars == [("loss/total", 2.0, 1), ("acc", 0.25, 1), ("lr", 0.004, 1),
                       ("loss/total", 5.0, 2), ("acc", 0.25, 2), ("lr", 0.004, 2), "closed"]
    t.storage = EventStorage(3, epoch=3)
    hook.before_train()
    assert opened[-1] == (str(tmp_path), 6)


def test_eval_hook_puts_every_validation_number(tmp_path):
    """Validation metrics reach the writers as ``val/<split>/<metric>`` (per-part rows as
    ``val/<split>/<part>/<metric>``); lists (the CMC) are left out."""
    results = {"ALL": {"rank1": 0.5, "mAP": 0.25, "num_valid": 10, "cmc": [0.5, 1.0],
                       "per_part": {"head": {"mAP": 0.125, "num_valid": 4}}}}
    hook = EvalHook(1, lambda: results, lambda r, title: title, str(tmp_path), to_json=lambda r: r)
    hook.trainer = FakeTrainer(epoch=2, max_epochs=3, storage=EventStorage(4, epoch=2))
    hook.after_epoch()
    assert hook.trainer.storage.scalars() == {"val/ALL/rank1": 0.5, "val/ALL/mAP": 0.25, "val/ALL/num_valid": 10,
                                              "val/ALL/head/mAP": 0.125, "val/ALL/head/num_valid": 4}
    assert (tmp_path / "val_results.json").is_file()
