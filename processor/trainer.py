"""The training loop: one loop for single-process and DDP runs, extended through hooks.

Modelled on detectron2's ``TrainerBase``: :class:`Trainer` owns the model, the optimizer, the
scheduler and the AMP machinery and runs epochs of steps; everything else (logging, evaluation,
checkpoints, TensorBoard) is a :class:`HookBase` called at fixed points.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable

import torch
from torch import nn

from utils import comm
from utils.errors import TSDError
from utils.logger import get_logger


class NonFiniteLossError(TSDError):
    """Training diverged: the loss was NaN/inf for too many consecutive iterations."""


class HookBase:
    """A callback of :class:`Trainer`; ``self.trainer`` is set when the hook is registered."""

    trainer: "Trainer"

    def before_train(self) -> None: ...
    def before_epoch(self) -> None: ...
    def after_step(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_train(self) -> None: ...


def amp_settings(enabled: bool, dtype_name: str, device: str) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use GradScaler)`` for ``SOLVER.AMP`` / ``SOLVER.AMP_DTYPE`` on ``device``.

    float16 needs a GradScaler and is only used on CUDA; on the CPU it falls back to bfloat16.
    """
    if not enabled:
        return None, False
    dtype = torch.float16 if dtype_name == "float16" else torch.bfloat16
    if device == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16
    return dtype, dtype == torch.float16


class Trainer:
    """Trains ``model`` with ``loss_fn`` over epochs ``start_epoch..max_epochs`` (1-based, inclusive).

    Per epoch: ``scheduler.step(epoch)`` first (as the reference), then one step per batch
    ``(imgs, pids, camids, viewids, masks)``. A step whose loss is not finite is skipped (no update)
    and counted; ``max_nonfinite`` consecutive ones abort with :class:`NonFiniteLossError`.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer, scheduler,
                 train_loader: Iterable, device: str, max_epochs: int, amp_dtype: torch.dtype | None = None,
                 use_scaler: bool = False, max_nonfinite: int = 5, start_epoch: int = 1,
                 accuracy_fn: Callable | None = None, batch_transform: Callable | None = None):
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.device = device
        self.max_epochs = max_epochs
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(device, enabled=use_scaler)
        self.max_nonfinite = max_nonfinite
        self.start_epoch = start_epoch
        self.accuracy_fn = accuracy_fn
        self.batch_transform = batch_transform
        self.hooks: list[HookBase] = []
        # State visible to hooks.
        self.epoch = start_epoch
        self.iter = 0  # 0-based index of the last step within the epoch
        self.iters_per_epoch = len(train_loader)  # type: ignore[arg-type]
        self.batch_size = 0
        self.losses: dict[str, float] = {}
        self.accuracy = float("nan")
        self.skipped_steps = 0
        self._nonfinite_run = 0

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        for h in hooks:
            if h is not None:
                h.trainer = self
                self.hooks.append(h)

    def _call(self, name: str) -> None:
        for h in self.hooks:
            getattr(h, name)()

    def train(self) -> None:
        """Run the remaining epochs, calling the hooks."""
        try:
            self._call("before_train")
            for self.epoch in range(self.start_epoch, self.max_epochs + 1):
                self.scheduler.step(self.epoch)
                # DDP identity sampler: a different (but rank-consistent) plan every epoch.
                set_epoch = getattr(getattr(self.train_loader, "sampler", None), "set_epoch", None)
                if set_epoch is not None:
                    set_epoch(self.epoch)
                self.model.train()
                self._call("before_epoch")
                for self.iter, batch in enumerate(self.train_loader):
                    self.run_step(batch)
                    self._call("after_step")
                self._call("after_epoch")
            self._call("after_train")
        finally:
            # Persistent loader workers would otherwise live until the garbage collector frees the
            # trainer (it and its hooks refer to each other), and their shutdown would then block
            # whatever code runs at that moment (tens of seconds in the test suite).
            iterator = getattr(self.train_loader, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()
                self.train_loader._iterator = None

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.amp_dtype)

    def prepare_batch(self, batch):
        """A loader batch on the device: every tensor moved (non-blocking; the loader pins memory on
        CUDA), then ``batch_transform`` (``INPUT.BATCH_AUGMENT``) if given.

        Returns:
            ``(imgs, pids, camids, viewids, masks or None)`` on ``self.device``.
        """
        def to_device(x):
            if isinstance(x, torch.Tensor):
                return x.to(self.device, non_blocking=True)
            if isinstance(x, dict):
                return {k: to_device(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return type(x)(to_device(v) for v in x)
            return x

        batch = to_device(batch)
        return self.batch_transform(batch) if self.batch_transform is not None else batch

    def run_step(self, batch) -> None:
        """One optimisation step on ``batch`` (forward + losses under autocast, scaled backward)."""
        imgs, pids, camids, viewids, masks = self.prepare_batch(batch)
        self.optimizer.zero_grad(set_to_none=True)
        # The forward pass updates BatchNorm running statistics before the loss is known to be finite:
        # keep a copy (a few KB) so that a skipped step leaves no trace.
        buffers = [b.clone() for b in self.model.buffers()]
        with self._autocast():
            outputs = self.model(imgs, pids, masks, cam_label=camids, view_label=viewids)
            terms = self.loss_fn(outputs, pids)
        total = sum(terms.values())
        self.batch_size = imgs.shape[0]
        # Under DDP all ranks skip together: a rank that went on to backward() would wait forever for
        # the gradients of one that skipped.
        if not comm.all_true(torch.isfinite(total.detach())):
            with torch.no_grad():
                for buf, saved in zip(self.model.buffers(), buffers):
                    buf.copy_(saved)
            self._skip_step(terms)
            return
        self._nonfinite_run = 0
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.losses = {k: float(v.detach()) for k, v in terms.items()}
        self.losses["total"] = float(total.detach())
        if self.accuracy_fn is not None:
            self.accuracy = float(self.accuracy_fn(outputs, pids))

    def _skip_step(self, terms: dict[str, torch.Tensor]) -> None:
        self.skipped_steps += 1
        self._nonfinite_run += 1
        bad = [k for k, v in terms.items() if not math.isfinite(float(v.detach()))] or ["on another rank"]
        get_logger().warning(f"epoch {self.epoch} iter {self.iter + 1}: non-finite loss ({', '.join(bad)}); "
                             f"step skipped ({self._nonfinite_run} in a row, {self.skipped_steps} in total)")
        self.optimizer.zero_grad(set_to_none=True)
        if self._nonfinite_run >= self.max_nonfinite:
            raise NonFiniteLossError(
                f"the loss was non-finite ({', '.join(bad)}) for {self._nonfinite_run} consecutive iterations at "
                f"epoch {self.epoch}; lower SOLVER.BASE_LR, check the data, or resume from OUTPUT_DIR/last.pth")

    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group (the reference logs the same)."""
        return self.optimizer.param_groups[0]["lr"]
