"""The training loop: one loop for single-process and DDP runs, extended through hooks.

Modelled on detectron2's ``TrainerBase``: :class:`Trainer` owns the model, the optimizer, the
scheduler and the AMP machinery and runs epochs of steps; everything else (logging, evaluation,
checkpoints, TensorBoard) is a :class:`HookBase` called at fixed points.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterable

import torch
from torch import nn

from utils import comm
from utils.errors import TSDError
from utils.logger import get_logger

from .events import EventStorage


class NonFiniteLossError(TSDError):
    """Training diverged: the loss was NaN/inf for too many consecutive iterations."""


class HookBase:
    """A callback of :class:`Trainer`; ``self.trainer`` is set when the hook is registered.

    ``self.trainer`` is a weak proxy (as in detectron2): the trainer holds its hooks, a hook does not keep
    its trainer alive. Without the reference cycle a dropped trainer is freed at once, and with it the
    loader's persistent worker processes, instead of at some later garbage collection whose worker
    shutdown would block whatever code runs then.

    A hook that keeps state across epochs (e.g. the validation history) returns it from
    :meth:`state_dict`; the checkpointer saves it in ``last.pth`` and hands it back to
    :meth:`load_state_dict` on ``--resume``. It must load with ``torch.load(weights_only=True)``:
    tensors, numbers, strings, lists and dicts.
    """

    trainer: Trainer

    def before_train(self) -> None: ...
    def before_epoch(self) -> None: ...
    def after_step(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_train(self) -> None: ...

    def state_dict(self) -> dict:
        """What the hook needs to continue after a resume (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (default: nothing to restore)."""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16).

    Without it oneDNN emulates bfloat16 and an autocast step is several times slower than float32
    (a ViT-B step over 10x on an AVX-512 EPYC without BF16), so autocast would only cost time.
    """
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def amp_settings(enabled: bool, dtype_name: str, device: str) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use GradScaler)`` for ``SOLVER.AMP`` / ``SOLVER.AMP_DTYPE`` on ``device``.

    CUDA: float16 with a GradScaler (the paper's setting) or bfloat16 without one. CPU: bfloat16
    (float16 is not a CPU autocast type) and only where :func:`cpu_has_native_bf16`; elsewhere float32,
    with one log line saying why: mixed precision must never make training slower.
    """
    if not enabled:
        return None, False
    dtype = torch.float16 if dtype_name == "float16" else torch.bfloat16
    if device == "cpu":
        if not cpu_has_native_bf16():
            get_logger().info(f"SOLVER.AMP: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native "
                              "bfloat16 (AVX512-BF16 / AMX), where autocast is slower than float32; training in "
                              "float32")
            return None, False
        dtype = torch.bfloat16
    return dtype, dtype == torch.float16


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """``torch.compile`` ``model`` in place (``SOLVER.COMPILE`` / ``SOLVER.COMPILE_MODE``) and return it.

    ``nn.Module.compile`` keeps the module object, so parameter names, ``state_dict`` keys and
    checkpoints are those of the eager model; training and eval forwards compile separately on first
    use. Shapes are static (``dynamic=False``): a new batch size compiles once more instead of every
    shape paying for a dynamic-shape graph. ``mode`` is one of torch.compile's modes
    (:data:`config.COMPILE_MODES`, checked by the config validator).
    """
    model.compile(mode=mode, dynamic=False)
    return model


class Trainer:
    """Trains ``model`` with ``loss_fn`` over epochs ``start_epoch..max_epochs`` (1-based, inclusive).

    Per epoch: ``scheduler.step(epoch)`` first (as the reference), then one step per batch (a
    :class:`datasets.batch.TrainBatch`). A step whose loss is not finite is skipped (no update)
    and counted; ``max_nonfinite`` consecutive ones abort with :class:`NonFiniteLossError`.

    With a GradScaler (fp16), a step whose scaled gradients overflow is skipped by the scaler (no
    update: the fused optimizers check inside their kernel) and its BatchNorm statistics are undone, so
    that it too leaves no trace; the scale backs off.

    The loss terms of a step stay on the device (``step_terms``, ``step_accuracy``): the only
    host-device synchronisation of a step is the finiteness check (``tests/test_gpu_recipe.py`` counts
    them). Each step puts them (``loss/<term>``, ``loss/total``, ``acc``) and the learning rate (``lr``)
    into :attr:`storage` (:class:`processor.events.EventStorage`), where hooks put theirs and writers read
    them all back at once when they write; :attr:`losses` / :attr:`accuracy` read one step back on demand.

    The run's counters (steps done, skipped steps) are :meth:`state_dict`, saved in ``last.pth``: the
    identity sampler's epochs differ a little in length, so the step of an epoch's first batch is counted,
    not computed.
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
        self.iters_per_epoch = len(train_loader)  # type: ignore[arg-type]  (this epoch's: set per epoch)
        self.steps_done: int | None = None  # steps of the run so far (None: not known before train())
        self.batch_size = 0
        # This step's detached loss terms (+ 'total') and accuracy, on the device; empty / None after
        # a skipped step.
        self.step_terms: dict[str, torch.Tensor] = {}
        self.step_accuracy: torch.Tensor | None = None
        self.skipped_steps = 0
        self._nonfinite_run = 0
        self.storage = EventStorage(self.iters_per_epoch, start_epoch)

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        """Append ``hooks`` (None entries are skipped); they are called in this order."""
        for h in hooks:
            if h is not None:
                h.trainer = weakref.proxy(self)
                self.hooks.append(h)

    def _call(self, name: str) -> None:
        for h in self.hooks:
            getattr(h, name)()

    def state_dict(self) -> dict:
        """The run's counters: ``{'steps_done', 'skipped_steps'}``."""
        return {"steps_done": self.steps_done, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        """Continue the counters of :meth:`state_dict` (a resume)."""
        self.steps_done = int(state["steps_done"])
        self.skipped_steps = int(state["skipped_steps"])

    def train(self) -> None:
        """Run the remaining epochs, calling the hooks."""
        if self.steps_done is None:  # a new run, or a last.pth saved before the counters were: estimated
            self.steps_done = (self.start_epoch - 1) * self.iters_per_epoch
        # writers open at the run's first epoch (a resume's too)
        self.storage.begin_epoch(self.start_epoch, steps_before=self.steps_done)
        self._call("before_train")
        for epoch in range(self.start_epoch, self.max_epochs + 1):
            self.epoch = epoch  # hooks read the trainer's epoch and iteration
            self.scheduler.step(self.epoch)
            # DDP identity sampler: a different (but rank-consistent) plan every epoch.
            set_epoch = getattr(getattr(self.train_loader, "sampler", None), "set_epoch", None)
            if set_epoch is not None:
                set_epoch(self.epoch)
            self.iters_per_epoch = len(self.train_loader)  # type: ignore[arg-type]  (this epoch's plan)
            self.model.train()
            self.storage.begin_epoch(self.epoch, self.iters_per_epoch, self.steps_done)
            self._call("before_epoch")
            for it, batch in enumerate(self.train_loader):
                self.iter = it
                self.storage.iter = self.iter
                self.run_step(batch)
                self.steps_done += 1
                self._call("after_step")
            self._call("after_epoch")
        self._call("after_train")

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.amp_dtype)

    def prepare_batch(self, batch):
        """A loader batch (:class:`datasets.batch.TrainBatch`) on the device: moved non-blocking (the loader
        pins memory on CUDA), then finished by ``batch_transform`` (``INPUT.BATCH_AUGMENT``) if given."""
        batch = batch.to(self.device, non_blocking=True)
        return self.batch_transform(batch) if self.batch_transform is not None else batch

    def run_step(self, batch) -> None:
        """One optimisation step on ``batch`` (forward + losses under autocast, scaled backward)."""
        batch = self.prepare_batch(batch)
        self.optimizer.zero_grad(set_to_none=True)
        # The forward pass updates BatchNorm running statistics before the loss is known to be finite:
        # keep a copy (a few KB) so that a skipped step leaves no trace.
        buffers = [b.clone() for b in self.model.buffers()]
        with self._autocast():
            outputs = self.model(batch.images, batch.pids, batch.masks, cam_label=batch.camids,
                                 view_label=batch.viewids)
            terms = self.loss_fn(outputs, batch.pids)
        total = sum(terms.values())
        self.batch_size = len(batch)
        # Under DDP all ranks skip together: a rank that went on to backward() would wait forever for
        # the gradients of one that skipped.
        if not comm.all_true(torch.isfinite(total.detach())):
            self._restore_buffers(buffers)
            self._skip_step(terms)
            return
        self._nonfinite_run = 0
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        if self.scaler.is_enabled():
            # Overflowing fp16 gradients (routine while the loss scale settles): the scaler skipped the
            # update; undo the forward's BatchNorm statistics too, on the device (no host read).
            self._restore_buffers(buffers, self._scaler_found_inf())
        self.scaler.update()
        self.step_terms = {k: v.detach() for k, v in terms.items()}
        self.step_terms["total"] = total.detach()
        self.storage.put_scalars(**{f"loss/{k}": v for k, v in self.step_terms.items()})
        if self.accuracy_fn is not None:
            self.step_accuracy = self.accuracy_fn(outputs, batch.pids).detach()
            self.storage.put_scalar("acc", self.step_accuracy)
        self.storage.put_scalar("lr", self.lr, average=False)

    @torch.no_grad()
    def _restore_buffers(self, saved: list[torch.Tensor], where: torch.Tensor | None = None) -> None:
        """Copy ``saved`` back into the model's buffers; with ``where`` (a 0-d bool on the device) only
        where it is True, selected on the device."""
        for buf, old in zip(self.model.buffers(), saved):
            buf.copy_(old if where is None else torch.where(where, old, buf))

    def _scaler_found_inf(self) -> torch.Tensor:
        """0-d bool on the device: whether this step's GradScaler found inf/NaN gradients (and so
        skipped the update). Read from the record ``GradScaler.step`` keeps for ``update()`` to back the
        scale off (no public accessor; tests/test_gpu_recipe.py runs this path on the CPU)."""
        found = self.scaler._per_optimizer_states[id(self.optimizer)]["found_inf_per_device"]
        return sum(found.values()).reshape(()) > 0

    def _skip_step(self, terms: dict[str, torch.Tensor]) -> None:
        self.step_terms, self.step_accuracy = {}, None
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
    def losses(self) -> dict[str, float]:
        """The last step's loss terms and ``'total'`` as floats (empty after a skipped step); synchronises."""
        if not self.step_terms:
            return {}
        return dict(zip(self.step_terms, torch.stack(list(self.step_terms.values())).tolist()))

    @property
    def accuracy(self) -> float:
        """The last step's training accuracy (NaN when unknown); synchronises."""
        return float("nan") if self.step_accuracy is None else float(self.step_accuracy)

    @property
    def lr(self) -> float:
        """Learning rate of the first parameter group (the reference logs the same)."""
        return self.optimizer.param_groups[0]["lr"]
