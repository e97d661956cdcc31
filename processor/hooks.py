"""Hooks of :class:`processor.trainer.Trainer`: logging, evaluation, checkpoints, TensorBoard."""
from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Callable

import torch

from utils.logger import get_logger
from utils.misc import atomic_write_json

from .checkpointer import Checkpointer
from .trainer import HookBase


class StepMeter:
    """Sums of the trainer's per-step loss terms and accuracy, kept on the device.

    Adding a step is a few device additions (no host-device synchronisation); :meth:`mean` reads all
    the sums back at once. Skipped steps (no terms) are not counted.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every added step."""
        self._sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, trainer) -> None:
        """Accumulate the last step of ``trainer`` (``step_terms`` + ``'acc'``)."""
        if not trainer.step_terms:
            return
        values = dict(trainer.step_terms)
        acc = trainer.step_accuracy
        values["acc"] = acc if acc is not None else torch.full_like(values["total"], float("nan"))
        for k, v in values.items():
            self._sums[k] = self._sums[k] + v if k in self._sums else v.float().clone()
        self.count += 1

    def mean(self) -> dict[str, float]:
        """Per-term means over the added steps (one synchronisation); empty when none was added."""
        if not self.count:
            return {}
        return dict(zip(self._sums, (torch.stack(list(self._sums.values())) / self.count).tolist()))


class LoggingHook(HookBase):
    """Logs running epoch averages of every loss term (by name), accuracy, lr, images/s and ETA.

    Every ``period`` iterations a log line; a tqdm bar instead of nothing in between when stdout is
    a terminal (its loss figure refreshed at the log period); an epoch summary at the end of each
    epoch. The averages are accumulated on the device and only read back when printed.
    """

    def __init__(self, period: int, use_tqdm: bool | None = None):
        self.period = max(1, period)
        self.use_tqdm = sys.stdout.isatty() if use_tqdm is None else use_tqdm
        self._meter = StepMeter()
        self._bar = None

    def before_train(self) -> None:
        self._train_start = time.perf_counter()
        self._done_iters = 0

    def before_epoch(self) -> None:
        self._meter.reset()
        self._images = 0
        self._epoch_start = time.perf_counter()
        if self.use_tqdm:
            from tqdm import tqdm

            self._bar = tqdm(total=self.trainer.iters_per_epoch, desc=f"epoch {self.trainer.epoch}", leave=False)

    def after_step(self) -> None:
        t = self.trainer
        if t.step_terms:
            self._meter.add(t)
            self._images += t.batch_size
            self._done_iters += 1
        if self._bar is not None:
            self._bar.update(1)
        if (t.iter + 1) % self.period == 0 and self._meter.count:
            avg = self._meter.mean()
            if self._bar is not None:
                self._bar.set_postfix(loss=f"{avg['total']:.3f}")
            elapsed = time.perf_counter() - self._epoch_start
            remaining_iters = (t.iters_per_epoch - t.iter - 1) + t.iters_per_epoch * (t.max_epochs - t.epoch)
            per_iter = (time.perf_counter() - self._train_start) / max(1, self._done_iters)
            eta = datetime.timedelta(seconds=int(per_iter * remaining_iters))
            terms = " ".join(f"{k}: {v:.3f}" for k, v in avg.items() if k not in ("total", "acc"))
            get_logger().info(
                f"Epoch[{t.epoch}] Iter[{t.iter + 1}/{t.iters_per_epoch}] loss: {avg['total']:.3f} {terms} "
                f"acc: {avg['acc']:.3f} lr: {t.lr:.2e} {self._images / elapsed:.1f} img/s eta: {eta}")

    def after_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        t = self.trainer
        elapsed = time.perf_counter() - self._epoch_start
        avg = self._meter.mean()
        get_logger().info(
            f"Epoch {t.epoch} done in {elapsed:.1f}s ({self._images / max(elapsed, 1e-9):.1f} img/s), "
            f"loss {avg.get('total', float('nan')):.3f}, acc {avg.get('acc', float('nan')):.3f}"
            + (f", {t.skipped_steps} skipped steps" if t.skipped_steps else ""))


class CheckpointHook(HookBase):
    """After every epoch ``last.pth`` (full state); every ``period`` epochs ``{prefix}_{epoch}.pth``."""

    def __init__(self, checkpointer: Checkpointer, period: int, prefix: str, extra: dict | None = None):
        self.checkpointer = checkpointer
        self.period = period
        self.prefix = prefix
        self.extra = extra or {}

    def after_epoch(self) -> None:
        epoch = self.trainer.epoch
        if self.period > 0 and (epoch % self.period == 0 or epoch == self.trainer.max_epochs):
            path = self.checkpointer.save_weights(f"{self.prefix}_{epoch}.pth")
            get_logger().info(f"saved {path}")
        self.checkpointer.save_state("last.pth", epoch, hooks=self.trainer.hooks, **self.extra)


class EvalHook(HookBase):
    """Every ``period`` epochs (and after the last) calls ``eval_fn()`` → results; logs and stores them.

    ``history`` maps each evaluated epoch to its results (``to_json``'s form when given), also those of
    the epochs before a ``--resume`` (it is the hook's state in ``last.pth``); ``val_results.json``
    holds all of them and is replaced atomically.
    """

    def __init__(self, period: int, eval_fn: Callable[[], dict], formatter: Callable[[dict, str], str],
                 output_dir: str | None = None, to_json: Callable[[dict], dict] | None = None):
        self.period = period
        self.eval_fn = eval_fn
        self.formatter = formatter
        self.output_dir = output_dir
        self.to_json = to_json
        self.history: dict[int, dict] = {}

    def after_epoch(self) -> None:
        epoch = self.trainer.epoch
        if self.period <= 0 or not (epoch % self.period == 0 or epoch == self.trainer.max_epochs):
            return
        results = self.eval_fn()
        if results is None:  # non-zero ranks in DDP
            return
        self.history[epoch] = self.to_json(results) if self.to_json is not None else results
        get_logger().info(self.formatter(results, f"Validation results - epoch {epoch}"))
        if self.output_dir and self.to_json is not None:
            atomic_write_json({str(e): r for e, r in sorted(self.history.items())},
                              os.path.join(self.output_dir, "val_results.json"))

    def state_dict(self) -> dict:
        """``{'history': {epoch (str): results}}``: JSON types, so ``last.pth`` stays ``weights_only``-loadable."""
        return {"history": {str(e): r for e, r in self.history.items()}} if self.to_json is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self.history = {int(e): r for e, r in state.get("history", {}).items()}
        if self.history:
            get_logger().info(f"validation history restored: epoch(s) {', '.join(map(str, sorted(self.history)))}")


class TensorboardHook(HookBase):
    """Writes the loss terms, accuracy and lr to ``log_dir`` (needs ``tensorboard``): every ``period``
    iterations (and at the end of an epoch) the means since the last write, accumulated on the device
    so that the steps in between do not wait for the GPU."""

    def __init__(self, log_dir: str, period: int = 1):
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: optional dependency

        self.writer = SummaryWriter(log_dir)
        self.period = max(1, period)
        self._meter = StepMeter()

    def _write(self) -> None:
        t = self.trainer
        step = (t.epoch - 1) * t.iters_per_epoch + t.iter
        for k, v in self._meter.mean().items():
            self.writer.add_scalar("acc" if k == "acc" else f"loss/{k}", v, step)
        self.writer.add_scalar("lr", t.lr, step)
        self._meter.reset()

    def after_step(self) -> None:
        self._meter.add(self.trainer)
        if (self.trainer.iter + 1) % self.period == 0:
            self._write()

    def after_epoch(self) -> None:
        if self._meter.count:
            self._write()

    def after_train(self) -> None:
        self.writer.close()
