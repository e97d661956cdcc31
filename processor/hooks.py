"""Hooks of :class:`processor.trainer.Trainer`: logging, evaluation, checkpoints, TensorBoard."""
from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections import defaultdict
from typing import Callable

from utils.logger import get_logger

from .checkpointer import Checkpointer
from .trainer import HookBase


class LoggingHook(HookBase):
    """Logs running epoch averages of every loss term (by name), accuracy, lr, images/s and ETA.

    Every ``period`` iterations a log line; a tqdm bar instead of nothing in between when stdout is
    a terminal; an epoch summary at the end of each epoch.
    """

    def __init__(self, period: int, use_tqdm: bool | None = None):
        self.period = max(1, period)
        self.use_tqdm = sys.stdout.isatty() if use_tqdm is None else use_tqdm
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._bar = None

    def before_train(self) -> None:
        self._train_start = time.perf_counter()
        self._done_iters = 0

    def before_epoch(self) -> None:
        self._sums.clear()
        self._count = 0
        self._images = 0
        self._epoch_start = time.perf_counter()
        if self.use_tqdm:
            from tqdm import tqdm

            self._bar = tqdm(total=self.trainer.iters_per_epoch, desc=f"epoch {self.trainer.epoch}", leave=False)

    def _avg(self) -> dict[str, float]:
        return {k: v / max(1, self._count) for k, v in self._sums.items()}

    def after_step(self) -> None:
        t = self.trainer
        if not t.losses:
            return
        for k, v in t.losses.items():
            self._sums[k] += v
        self._sums["acc"] += t.accuracy
        self._count += 1
        self._images += t.batch_size
        self._done_iters += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{self._sums['total'] / self._count:.3f}")
        if (t.iter + 1) % self.period == 0:
            avg = self._avg()
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
        avg = self._avg()
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
        self.checkpointer.save_state("last.pth", epoch, **self.extra)


class EvalHook(HookBase):
    """Every ``period`` epochs (and after the last) calls ``eval_fn()`` → results; logs and stores them."""

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
        self.history[epoch] = results
        get_logger().info(self.formatter(results, f"Validation results - epoch {epoch}"))
        if self.output_dir and self.to_json is not None:
            with open(os.path.join(self.output_dir, "val_results.json"), "w") as f:
                json.dump({str(e): self.to_json(r) for e, r in self.history.items()}, f, indent=1)


class TensorboardHook(HookBase):
    """Writes the per-iteration loss terms, accuracy and lr to ``log_dir`` (needs ``tensorboard``)."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: optional dependency

        self.writer = SummaryWriter(log_dir)

    def after_step(self) -> None:
        t = self.trainer
        step = (t.epoch - 1) * t.iters_per_epoch + t.iter
        for k, v in t.losses.items():
            self.writer.add_scalar(f"loss/{k}", v, step)
        self.writer.add_scalar("acc", t.accuracy, step)
        self.writer.add_scalar("lr", t.lr, step)

    def after_train(self) -> None:
        self.writer.close()
