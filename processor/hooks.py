"""Hooks of :class:`processor.trainer.Trainer`: timing, event writers (console, ``metrics.jsonl``,
TensorBoard), evaluation, checkpoints."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from utils.logger import get_logger
from utils.misc import atomic_write_json

from .checkpointer import Checkpointer
from .events import ConsoleWriter, EventWriter
from .trainer import HookBase


def _due(epoch: int, period: int, max_epochs: int) -> bool:
    """Whether an every-``period``-epochs job runs after ``epoch``: every ``period``-th epoch and the last
    one; never when ``period`` <= 0."""
    return period > 0 and (epoch % period == 0 or epoch == max_epochs)


class IterationTimer(HookBase):
    """Puts the run's pace into the event storage: every step ``img_s`` (images per second since the
    epoch began) and ``eta_seconds`` (the remaining steps at the mean step time since the run began);
    at the end of every epoch its ``epoch_seconds``, final ``img_s`` and the trainer's ``skipped_steps``.

    Place it first: the epoch's time then excludes the other hooks' work (validation, checkpoints).
    Skipped steps count neither images nor time per step.
    """

    def before_train(self) -> None:
        self._train_start = time.perf_counter()
        self._done_iters = 0

    def before_epoch(self) -> None:
        self._images = 0
        self._epoch_start = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        if t.step_terms:
            self._images += t.batch_size
            self._done_iters += 1
        now = time.perf_counter()
        remaining_iters = (t.iters_per_epoch - t.iter - 1) + t.iters_per_epoch * (t.max_epochs - t.epoch)
        per_iter = (now - self._train_start) / max(1, self._done_iters)
        t.storage.put_scalars(average=False, img_s=self._images / max(now - self._epoch_start, 1e-9),
                              eta_seconds=per_iter * remaining_iters)

    def after_epoch(self) -> None:
        t = self.trainer
        elapsed = time.perf_counter() - self._epoch_start
        t.storage.put_scalars(average=False, epoch_seconds=elapsed, img_s=self._images / max(elapsed, 1e-9),
                              skipped_steps=t.skipped_steps)


class PeriodicWriter(HookBase):
    """Calls its :class:`processor.events.EventWriter` s every ``period`` steps and at the end of every
    epoch; its state (``last.pth``) is theirs (e.g. :class:`processor.events.JSONWriter`'s position).

    Where it stands among the hooks decides what an epoch's write holds: after :class:`EvalHook`, the
    validation metrics of that epoch; before :class:`CheckpointHook`, so that the saved position covers
    every line of the epoch.
    """

    def __init__(self, writers: Iterable[EventWriter | None], period: int):
        self.writers = [w for w in writers if w is not None]
        self.period = max(1, period)

    def before_train(self) -> None:
        for w in self.writers:
            w.open(self.trainer.storage)

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self.period == 0:
            for w in self.writers:
                w.write(self.trainer.storage, epoch_end=False)

    def after_epoch(self) -> None:
        for w in self.writers:
            w.write(self.trainer.storage, epoch_end=True)

    def after_train(self) -> None:
        for w in self.writers:
            w.close()

    def state_dict(self) -> dict:
        """``{writer class name: its state}`` for the writers that have one."""
        return {type(w).__name__: state for w in self.writers if (state := w.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        for w in self.writers:
            if type(w).__name__ in state:
                w.load_state_dict(state[type(w).__name__])


class LoggingHook(PeriodicWriter):
    """The console (:class:`processor.events.ConsoleWriter`): running epoch means of every loss term (by
    name), accuracy, lr, images/s and ETA every ``period`` iterations, and an epoch summary.

    When stdout is a terminal, a tqdm bar in between (its loss figure refreshed at the log period, from
    the read the log line made). Place it before :class:`EvalHook`: an epoch's summary line then precedes
    its validation table.
    """

    def __init__(self, period: int, use_tqdm: bool | None = None):
        super().__init__([ConsoleWriter()], period)
        self.use_tqdm = sys.stdout.isatty() if use_tqdm is None else use_tqdm
        self._bar = None

    def before_epoch(self) -> None:
        if self.use_tqdm:
            from tqdm import tqdm

            self._bar = tqdm(total=self.trainer.iters_per_epoch, desc=f"epoch {self.trainer.epoch}", leave=False)

    def after_step(self) -> None:
        super().after_step()
        if self._bar is not None:
            self._bar.update(1)
            if (self.trainer.iter + 1) % self.period == 0 and "loss/total" in (s := self.trainer.storage.scalars()):
                self._bar.set_postfix(loss=f"{s['loss/total']:.3f}")

    def after_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        super().after_epoch()


class CheckpointHook(HookBase):
    """After every epoch ``last.pth`` (full state); every ``period`` epochs ``{prefix}_{epoch}.pth``."""

    def __init__(self, checkpointer: Checkpointer, period: int, prefix: str, extra: dict | None = None):
        self.checkpointer = checkpointer
        self.period = period
        self.prefix = prefix
        self.extra = extra or {}

    def after_epoch(self) -> None:
        epoch = self.trainer.epoch
        if _due(epoch, self.period, self.trainer.max_epochs):
            path = self.checkpointer.save_weights(f"{self.prefix}_{epoch}.pth")
            get_logger().info(f"saved {path}")
        self.checkpointer.save_state("last.pth", epoch, hooks=self.trainer.hooks, trainer=self.trainer.state_dict(),
                                     **self.extra)


class EvalHook(HookBase):
    """Every ``period`` epochs (and after the last) calls ``eval_fn()`` → results; logs and stores them.

    With ``to_json``, every number of the results goes into the event storage as ``val/<split>/<metric>``
    (``val/<split>/<part>/<metric>`` for per-part rows; lists such as the CMC are left out).

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
        if not _due(epoch, self.period, self.trainer.max_epochs):
            return
        results = self.eval_fn()
        if results is None:  # non-zero ranks in DDP
            return
        self.history[epoch] = self.to_json(results) if self.to_json is not None else results
        get_logger().info(self.formatter(results, f"Validation results - epoch {epoch}"))
        if self.to_json is not None:
            self.trainer.storage.put_scalars(average=False, **_flatten_numbers(self.history[epoch], "val/"))
            if self.output_dir:
                atomic_write_json({str(e): r for e, r in sorted(self.history.items())},
                                  os.path.join(self.output_dir, "val_results.json"))

    def state_dict(self) -> dict:
        """``{'history': {epoch (str): results}}``: JSON types, so ``last.pth`` stays ``weights_only``-loadable."""
        return {"history": {str(e): r for e, r in self.history.items()}} if self.to_json is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self.history = {int(e): r for e, r in state.get("history", {}).items()}
        if self.history:
            get_logger().info(f"validation history restored: epoch(s) {', '.join(map(str, sorted(self.history)))}")


def _flatten_numbers(tree: dict[str, Any], prefix: str) -> dict[str, int | float]:
    """``{'ALL': {'mAP': 0.5, 'per_part': {'head': {'mAP': 0.4}}}}`` -> ``{prefix + 'ALL/mAP': 0.5,
    prefix + 'ALL/head/mAP': 0.4}``: the numbers of nested dicts (``per_part`` levels skipped), lists left out."""
    out: dict[str, int | float] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten_numbers(v, prefix if k == "per_part" else f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out
