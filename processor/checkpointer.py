"""Checkpoints: the reference's plain weight files and full training states for exact resume.

* ``{MODEL.NAME}_{epoch}.pth`` — a flat ``state_dict`` exactly like the reference writes, so the
  reference (and ``test.py``) can load it.
* ``last.pth`` — model + optimizer + scheduler + GradScaler + epoch + every RNG state (Python,
  NumPy, torch CPU/CUDA) of every rank + the hooks' states (the validation history) + the config, so
  ``--resume`` continues bit for bit, also under DDP (each rank restores its own streams).

Both are written to a temporary file ``<name>.tmp.<pid>`` in the same folder and renamed, so a crash
while saving leaves the previous checkpoint intact; temporary files left by a killed process are
removed at the next start and before every save. A failed write (full disk) raises a
:class:`CheckpointError` that says the previous file is intact. What a run's folder may hold and
under which config a run continues or a weight file is evaluated: :mod:`processor.run_folder`.
"""
from __future__ import annotations

import glob
import os
import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from solver import init_momentum_buffers, regroup_state
from utils import comm
from utils.errors import CheckpointError
from utils.logger import get_logger

_TMP_NAME = re.compile(r".*\.tmp\.(\d+)$")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under a DDP / DataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def remove_stale_tmp_files(folder: str) -> list[str]:
    """Delete ``*.tmp.<pid>`` files in ``folder`` left by a process that no longer runs (``kill -9``
    while saving); returns their paths. Files of a live process (another run saving) are kept."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.tmp.*")):
        m = _TMP_NAME.match(path)
        if m is None or (int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1)))):
            continue
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:  # its owner renamed or removed it meanwhile
            pass
    if removed:
        get_logger().info(f"removed {len(removed)} partial checkpoint file(s) of an interrupted save: "
                          f"{', '.join(removed)}")
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` via a temporary file + ``os.replace`` (atomic on POSIX).

    Raises:
        CheckpointError: the file could not be written (full disk, permissions); ``path`` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        previous = (f"the previous {os.path.basename(path)} is intact" if os.path.exists(path)
                    else f"no earlier {os.path.basename(path)} existed")
        raise CheckpointError(f"cannot write checkpoint {path} ({e.strerror or e}); {previous}; free space in "
                              f"{folder} (or fix its permissions) and continue with --resume") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def rng_state() -> dict:
    """Every RNG state that influences training, in ``weights_only``-loadable types."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # This process's GPU only: under torchrun every rank saves its own (``rng_per_rank``), and a
        # run resumed with fewer visible GPUs (a 4-GPU torchrun continued in one process, a SLURM
        # task that sees one GPU) has no device to restore the others' states to.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved (the CUDA state onto this process's current GPU)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # earlier versions saved every visible GPU's state
            device = torch.cuda.current_device()
            if device >= len(cuda):
                get_logger().warning(f"the checkpoint holds the CUDA random state of {len(cuda)} GPU(s), none for "
                                     f"GPU {device}: its CUDA random stream starts afresh")
                return
            cuda = cuda[device]
        torch.cuda.set_rng_state(cuda)


def read_state(path: str, mmap: bool = False) -> dict:
    """Load a training state written by :meth:`Checkpointer.save_state` (``weights_only``: no code runs).

    With ``mmap`` the tensors stay on disk: a cheap look at the epoch and the config.

    Raises:
        CheckpointError: missing, unreadable, or a weights-only file.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot resume: {path} does not exist (it is written at the end of every epoch)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # truncated / not a torch file / pickled code
        raise CheckpointError(
            f"cannot resume from {path}: the file is unreadable ({type(e).__name__}); start again, or fine-tune "
            f"the weights of an OUTPUT_DIR/<MODEL.NAME>_<epoch>.pth with MODEL.PRETRAIN_CHOICE self "
            f"MODEL.PRETRAIN_PATH <that file> (the optimizer state is lost)") from e
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path} is a weights-only checkpoint, not a training state; "
                              f"resume from OUTPUT_DIR/last.pth or use MODEL.PRETRAIN_CHOICE self")
    return state


def hook_keys(hooks: Sequence) -> list[tuple[str, Any]]:
    """``(key, hook)`` pairs that name each hook's state in ``last.pth``: its class name, with ``#2``,
    ``#3`` ... for further hooks of one class (stable when other hooks are added or removed)."""
    seen: dict[str, int] = {}
    out = []
    for h in hooks:
        name = type(h).__name__
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", h))
    return out


class Checkpointer:
    """Saves and restores the training state of one run.

    Every rank calls :meth:`save_state` (it gathers each rank's RNG state); rank 0 alone writes the
    files. Every rank reads in :meth:`resume` and restores its own RNG state.
    """

    def __init__(self, model: nn.Module, save_dir: str, optimizer=None, scheduler=None, scaler=None):
        self.model = model
        self.save_dir = save_dir
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        if comm.is_main_process():
            remove_stale_tmp_files(save_dir)

    def save_weights(self, filename: str) -> str:
        """Write the plain model ``state_dict`` (reference format) to ``save_dir/filename`` (rank 0)."""
        path = os.path.join(self.save_dir, filename)
        if comm.is_main_process():
            remove_stale_tmp_files(self.save_dir)
            atomic_save(unwrap(self.model).state_dict(), path)
        return path

    def save_state(self, filename: str, epoch: int, hooks: Sequence = (), **extra: Any) -> str:
        """Write the full training state after ``epoch`` to ``save_dir/filename``, with the state of each
        of the trainer's ``hooks`` (:meth:`processor.trainer.HookBase.state_dict`).

        A collective under DDP: every rank must call it (rank 0 writes ``rng_per_rank``, every rank's RNG state).
        """
        rngs = comm.gather_object(rng_state())
        path = os.path.join(self.save_dir, filename)
        if not comm.is_main_process():
            return path
        state = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": epoch,
            "rng": rngs[0],
            "rng_per_rank": rngs,
            "hooks": {key: state for key, h in hook_keys(hooks) if (state := h.state_dict())},
            **extra,
        }
        remove_stale_tmp_files(self.save_dir)
        atomic_save(state, path)
        return path

    def resume(self, path: str, hooks: Sequence = (), trainer: Any = None) -> int:
        """Load a state written by :meth:`save_state` (the ``hooks``' states too, and the ``trainer``'s
        counters saved as ``extra`` ``trainer=``; a ``last.pth`` written before hooks or the trainer had
        state has none, and they start afresh); returns the epoch it was saved after."""
        state = read_state(path)
        try:
            unwrap(self.model).load_state_dict(state["model"])
        except RuntimeError as e:  # size mismatch / missing keys: a state of another model
            lines = str(e).splitlines()  # "Error(s) in loading state_dict ...", then one line per problem
            first = lines[1].strip() if len(lines) > 1 else lines[0]
            raise CheckpointError(f"cannot resume from {path}: it does not fit the model ({first}); "
                                  f"start a new OUTPUT_DIR") from e
        self._load_solver(state, path)
        rank, world = comm.get_rank(), comm.get_world_size()
        per_rank = state.get("rng_per_rank")
        if per_rank is not None and len(per_rank) == world:
            set_rng_state(per_rank[rank])
        else:
            saved = "1 process" if per_rank is None else f"{len(per_rank)} processes"
            if world > 1 or per_rank is not None:
                get_logger().warning(f"{path} was saved by {saved}, this run has {world}: every rank restores "
                                     f"rank 0's random state, so the run does not continue bit for bit")
            set_rng_state(state["rng"])
        saved_hooks = state.get("hooks") or {}
        for key, hook in hook_keys(hooks):
            if key in saved_hooks:
                hook.load_state_dict(saved_hooks[key])
        if trainer is not None and state.get("trainer"):
            trainer.load_state_dict(state["trainer"])
        get_logger().info(f"resumed from {path} (epoch {state['epoch']})")
        return int(state["epoch"])

    def _load_solver(self, state: dict, path: str) -> None:
        """Optimizer, scheduler and GradScaler states of ``state`` into this run's objects.

        The optimizer state moves onto this run's parameter groups by parameter name
        (:func:`solver.regroup_state`: files of earlier versions hold one group per tensor). A scaler
        state saved with the scaler disabled (``{}``: fp32 or bf16, or a CPU run) leaves an enabled one
        at its initial scale, e.g. a CPU run continued on a GPU or AMP switched on at resume.
        """
        opt_state, sched_state = state.get("optimizer"), state.get("scheduler")
        if self.optimizer is not None and opt_state is not None:
            opt_state, sched_state = regroup_state(opt_state, sched_state, self.optimizer, path)
            try:
                self.optimizer.load_state_dict(opt_state)
            except ValueError as e:  # another optimizer class / parameter count
                raise CheckpointError(f"cannot resume from {path}: its optimizer state does not fit this run's "
                                      f"optimizer ({e}); resume with the config it was trained with") from e
            init_momentum_buffers(self.optimizer)
        if self.scheduler is not None and sched_state is not None:
            self.scheduler.load_state_dict(sched_state)
        scaler_state = state.get("scaler")
        if self.scaler is not None and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        elif self.scaler is not None and self.scaler.is_enabled() and scaler_state is not None:
            get_logger().info(f"{path} was saved without a GradScaler (no fp16): the loss scale starts at "
                              f"{self.scaler.get_scale():g}")
