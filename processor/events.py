"""The trainer's events: an :class:`EventStorage` that the trainer and its hooks put scalars into, and
the writers that read it (the console, ``metrics.jsonl``, TensorBoard).

Modelled on detectron2's ``EventStorage`` / ``EventWriter``, without its host read per step: a scalar
put as a tensor (a loss term) is summed on its device, and a writer's read brings every sum back at
once, so the training step never waits for the GPU on account of logging
(``tests/test_gpu_recipe.py`` counts the reads of a step).

Names: ``loss/<term>`` (the loss terms by name, ``loss/total`` their sum) and ``acc`` are averaged over
steps; ``lr``, ``img_s`` (images per second this epoch), ``eta_seconds``, ``epoch_seconds``,
``skipped_steps`` and ``val/<split>/<metric>`` (validation, ``val/<split>/<part>/<metric>`` per part)
are the last value put.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os

import torch

from utils.logger import get_logger

__all__ = ["EventStorage", "Snapshot", "EventWriter", "ConsoleWriter", "JSONWriter", "TensorboardWriter"]

Number = int | float


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The averaged scalars' sums and step counts at one moment of an epoch, on the host
    (:meth:`EventStorage.read`); ``seq`` orders it against the puts, ``generation`` names the epoch
    (one per :meth:`EventStorage.begin_epoch`)."""

    generation: int
    seq: int
    sums: dict[str, float]
    counts: dict[str, int]


class EventStorage:
    """The scalars of a training run, by name, for the current epoch.

    Two kinds, chosen when put:

    * averaged (``put_scalar(name, value)``): one value per step, e.g. the loss terms. A tensor value
      stays on its device, added to the epoch's sum there (no host read); a number is summed on the host.
      :meth:`scalars` gives means over any window of steps between two reads.
    * latest (``put_scalar(name, value, average=False)``): a host number, e.g. the learning rate or a
      validation metric; :meth:`scalars` gives the last one put in the window.

    The sums start afresh with every epoch (:meth:`begin_epoch`), so float32 sums never grow long.

    Attributes:
        iters_per_epoch: steps of the current epoch; epoch: the current epoch (1-based); iter: 0-based
            index of the current step within it; steps_before_epoch: steps of the run before this epoch.
    """

    def __init__(self, iters_per_epoch: int = 0, epoch: int = 1):
        self.iters_per_epoch = iters_per_epoch
        self.iter = 0
        self.steps_before_epoch = 0
        self._seq = 0  # puts so far (both kinds)
        self._generation = 0
        self._latest: dict[str, tuple[int, Number]] = {}
        self.begin_epoch(epoch)

    @property
    def step(self) -> int:
        """Steps done since the run began (epoch 1), counting the current one."""
        return self.steps_before_epoch + self.iter + 1

    def begin_epoch(self, epoch: int, iters_per_epoch: int | None = None, steps_before: int | None = None) -> None:
        """Start ``epoch``, of ``iters_per_epoch`` steps (the same as before when None), after ``steps_before``
        steps of the run (by default ``(epoch - 1) * iters_per_epoch``; the identity sampler's epochs differ
        a little in length, so the trainer counts them): forget the averaged scalars' sums (the latest
        values stay)."""
        if iters_per_epoch is not None:
            self.iters_per_epoch = iters_per_epoch
        self.steps_before_epoch = (epoch - 1) * self.iters_per_epoch if steps_before is None else steps_before
        self.epoch, self.iter = epoch, 0
        self._generation += 1
        self._sums: dict[str, torch.Tensor | float] = {}
        self._counts: dict[str, int] = {}
        self._epoch_seq = self._seq
        self._snapshot: Snapshot | None = None  # the last read, valid while no averaged scalar is put

    def put_scalar(self, name: str, value: torch.Tensor | Number, average: bool = True) -> None:
        """Record ``value`` under ``name``: a 0-d tensor (averaged only; it stays on its device) or a number."""
        self._seq += 1
        if not average:
            self._latest[name] = (self._seq, value if isinstance(value, (int, float)) else float(value))
            return
        self._snapshot = None
        total = self._sums.get(name)
        if total is None:
            self._counts[name] = 1
            self._sums[name] = (value.detach().to(torch.float32, copy=True) if isinstance(value, torch.Tensor)
                                else float(value))
            return
        self._counts[name] += 1
        if isinstance(total, torch.Tensor):
            total.add_(value.detach() if value.requires_grad else value)  # type: ignore[union-attr]
        else:
            self._sums[name] = total + float(value)

    def put_scalars(self, average: bool = True, **values: torch.Tensor | Number) -> None:
        """:meth:`put_scalar` for each ``name=value``."""
        for name, value in values.items():
            self.put_scalar(name, value, average)

    def read(self) -> Snapshot:
        """The sums so far this epoch on the host: one device read for all of them, none when no averaged
        scalar was put since the last read."""
        if self._snapshot is not None:
            if self._snapshot.seq != self._seq:  # only latest scalars were put since
                self._snapshot = dataclasses.replace(self._snapshot, seq=self._seq)
            return self._snapshot
        sums = {k: v for k, v in self._sums.items() if not isinstance(v, torch.Tensor)}
        by_device: dict[torch.device, list[str]] = {}
        for k, v in self._sums.items():
            if isinstance(v, torch.Tensor):
                by_device.setdefault(v.device, []).append(k)
        for names in by_device.values():
            sums.update(zip(names, torch.stack([self._sums[k] for k in names]).tolist()))
        self._snapshot = Snapshot(self._generation, self._seq, {k: sums[k] for k in self._sums}, dict(self._counts))
        return self._snapshot

    def scalars(self, since: Snapshot | None = None) -> dict[str, float]:
        """The averaged scalars' means over the steps after ``since`` (a :meth:`read` of this epoch; None
        or an earlier epoch's: since the epoch began), then the latest scalars put after it.

        A scalar with no step (or no put) in the window is left out.
        """
        now = self.read()
        if since is not None and since.generation != self._generation:
            since = None
        out = {}
        for k, total in now.sums.items():
            count = now.counts[k] - (since.counts.get(k, 0) if since else 0)
            if count > 0:
                out[k] = (total - (since.sums.get(k, 0.0) if since else 0.0)) / count
        after = since.seq if since is not None else self._epoch_seq
        out.update((k, v) for k, (seq, v) in self._latest.items() if seq > after)
        return out


class EventWriter:
    """Reads an :class:`EventStorage` when :class:`processor.hooks.PeriodicWriter` calls it.

    A writer with a position to keep across ``--resume`` returns it from :meth:`state_dict`
    (saved in ``last.pth`` with its hook's state).
    """

    def open(self, storage: EventStorage) -> None:
        """Called before the first step of a run (or of a resumed run: ``storage.epoch`` is its first epoch)."""

    def write(self, storage: EventStorage, epoch_end: bool) -> None:
        """Write what is new: every log period (``epoch_end`` False) and at the end of every epoch."""
        raise NotImplementedError

    def close(self) -> None:
        """Called after the last epoch."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ConsoleWriter(EventWriter):
    """The training log lines: every log period the running means since the epoch began, and an epoch
    summary::

        Epoch[3] Iter[100/244] loss: 7.012 cls_global: 3.101 ... acc: 0.412 lr: 8.00e-03 312.4 img/s eta: 2:41:07
        Epoch 3 done in 48.9s (319.1 img/s), loss 6.840, acc 0.455, 2 skipped steps
    """

    def write(self, storage: EventStorage, epoch_end: bool) -> None:
        s = storage.scalars()
        nan = float("nan")
        if epoch_end:
            skipped = int(s.get("skipped_steps", 0))
            get_logger().info(
                f"Epoch {storage.epoch} done in {s.get('epoch_seconds', nan):.1f}s ({s.get('img_s', nan):.1f} img/s), "
                f"loss {s.get('loss/total', nan):.3f}, acc {s.get('acc', nan):.3f}"
                + (f", {skipped} skipped steps" if skipped else ""))
            return
        if "loss/total" not in s:  # every step of the epoch so far was skipped
            return
        terms = " ".join(f"{k[5:]}: {v:.3f}" for k, v in s.items() if k.startswith("loss/") and k != "loss/total")
        eta = datetime.timedelta(seconds=int(s.get("eta_seconds", 0)))
        get_logger().info(
            f"Epoch[{storage.epoch}] Iter[{storage.iter + 1}/{storage.iters_per_epoch}] loss: {s['loss/total']:.3f} "
            f"{terms} acc: {s.get('acc', nan):.3f} lr: {s.get('lr', nan):.2e} {s.get('img_s', nan):.1f} img/s "
            f"eta: {eta}")


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


class JSONWriter(EventWriter):
    """``OUTPUT_DIR/metrics.jsonl``: one JSON object per line, appended.

    * ``"kind": "iter"`` every log period: the means of the averaged scalars over the steps since the
      previous line, and the latest ``lr``, ``img_s``, ``eta_seconds``;
    * ``"kind": "epoch"`` at the end of every epoch: the means over the epoch, its ``epoch_seconds``,
      ``img_s``, ``skipped_steps`` and, when it was validated, the ``val/...`` metrics.

    Every line has ``epoch``, ``iter`` (1-based, within the epoch), ``iters_per_epoch`` and ``step``
    (steps since the run began). Non-finite values are written as ``null``.

    The state (:meth:`state_dict`, in ``last.pth``) is the file's length when the checkpoint was saved;
    a run starts by cutting the file there (0 for a new run): lines a killed run wrote after its last
    checkpoint are written again by the resumed run, and so stand once. Resumed from a checkpoint without
    that state, it keeps the lines of the epochs before the resumed one.
    """

    def __init__(self, path: str):
        self.path = path
        self._offset: int | None = None  # None: not restored from a checkpoint
        self._file = None
        self._last: Snapshot | None = None

    def _lines_before(self, epoch: int) -> int:
        """Bytes of the file's leading lines of epochs before ``epoch``."""
        offset = 0
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    if json.loads(line)["epoch"] >= epoch:
                        break
                except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                    break
                offset += len(line)
        return offset

    def open(self, storage: EventStorage) -> None:
        size = os.path.getsize(self.path) if os.path.isfile(self.path) else None
        if self._offset is None:
            self._offset = self._lines_before(storage.epoch) if size and storage.epoch > 1 else 0
        if size is not None and size > self._offset:
            with open(self.path, "rb+") as f:
                f.seek(self._offset)
                dropped = f.read().count(b"\n")
                f.truncate(self._offset)
            why = "an earlier run in this folder" if self._offset == 0 else "the interrupted run after its checkpoint"
            get_logger().info(f"{self.path}: removed the {dropped} line(s) written by {why}")
        elif size is not None and size < self._offset:
            get_logger().warning(f"{self.path} is shorter ({size} bytes) than when the checkpoint was saved "
                                 f"({self._offset} bytes): some of its lines are missing")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "a")
        self._last = None

    def _line(self, storage: EventStorage, kind: str, scalars: dict[str, float]) -> None:
        record = {"kind": kind, "epoch": storage.epoch, "iter": storage.iter + 1,
                  "iters_per_epoch": storage.iters_per_epoch, "step": storage.step,
                  **{k: _finite_or_none(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record) + "\n")  # type: ignore[union-attr]

    def write(self, storage: EventStorage, epoch_end: bool) -> None:
        if epoch_end:
            self._line(storage, "epoch", storage.scalars())
        else:
            window = storage.scalars(since=self._last)
            if "loss/total" in window:
                self._line(storage, "iter", window)
        self._last = storage.read()
        self._file.flush()  # type: ignore[union-attr]
        self._offset = self._file.tell()  # type: ignore[union-attr]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def state_dict(self) -> dict:
        """``{'offset': bytes written}``."""
        return {"offset": self._offset} if self._offset is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._offset = int(state.get("offset", 0))


class TensorboardWriter(EventWriter):
    """TensorBoard event files in ``log_dir`` (``SOLVER.TENSORBOARD``; needs ``tensorboard``): every
    scalar under its name, the averaged ones as means since the previous write, at the 0-based step
    index. A resumed run purges the events after its checkpoint (``purge_step``)."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter  # imported lazily: optional dependency

        self._summary_writer = SummaryWriter
        self.log_dir = log_dir
        self.writer = None
        self._last: Snapshot | None = None

    def open(self, storage: EventStorage) -> None:
        first = storage.steps_before_epoch
        self.writer = self._summary_writer(self.log_dir, purge_step=first if first > 0 else None)
        self._last = None

    def write(self, storage: EventStorage, epoch_end: bool) -> None:
        for k, v in storage.scalars(since=self._last).items():
            self.writer.add_scalar(k, v, storage.step - 1)  # type: ignore[union-attr]
        self._last = storage.read()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
