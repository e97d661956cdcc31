"""Checkpoints: the reference's plain weight files and full training states for exact resume.

* ``{MODEL.NAME}_{epoch}.pth`` — a flat ``state_dict`` exactly like the reference writes, so the
  reference (and ``test.py``) can load it.
* ``last.pth`` — model + optimizer + scheduler + GradScaler + epoch + every RNG state (Python,
  NumPy, torch CPU/CUDA) + the config, so ``--resume`` continues bit for bit.

Both are written to a temporary file in the same folder and renamed, so a crash while saving leaves
the previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.errors import CheckpointError
from utils.logger import get_logger


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under a DDP / DataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` via a temporary file + ``os.replace`` (atomic on POSIX)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves and restores the training state of one run (rank 0 writes, every rank reads)."""

    def __init__(self, model: nn.Module, save_dir: str, optimizer=None, scheduler=None, scaler=None):
        self.model = model
        self.save_dir = save_dir
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler

    def save_weights(self, filename: str) -> str:
        """Write the plain model ``state_dict`` (reference format) to ``save_dir/filename``."""
        path = os.path.join(self.save_dir, filename)
        atomic_save(unwrap(self.model).state_dict(), path)
        return path

    def save_state(self, filename: str, epoch: int, **extra: Any) -> str:
        """Write the full training state after ``epoch`` to ``save_dir/filename``."""
        state = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": epoch,
            "rng": rng_state(),
            **extra,
        }
        path = os.path.join(self.save_dir, filename)
        atomic_save(state, path)
        return path

    def resume(self, path: str) -> int:
        """Load a state written by :meth:`save_state`; returns the epoch it was saved after."""
        if not os.path.isfile(path):
            raise CheckpointError(f"cannot resume: {path} does not exist (it is written at the end of every epoch)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated / not a torch file
            raise CheckpointError(
                f"cannot resume from {path}: the file is unreadable ({type(e).__name__}); start again, or fine-tune "
                f"the weights of an OUTPUT_DIR/<MODEL.NAME>_<epoch>.pth with MODEL.PRETRAIN_CHOICE self "
                f"MODEL.PRETRAIN_PATH <that file> (the optimizer state is lost)") from e
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise CheckpointError(f"{path} is a weights-only checkpoint, not a training state; "
                                  f"resume from OUTPUT_DIR/last.pth or use MODEL.PRETRAIN_CHOICE self")
        unwrap(self.model).load_state_dict(state["model"])
        for obj, key in ((self.optimizer, "optimizer"), (self.scheduler, "scheduler"), (self.scaler, "scaler")):
            if obj is not None and state.get(key) is not None:
                obj.load_state_dict(state[key])
        set_rng_state(state["rng"])
        get_logger().info(f"resumed from {path} (epoch {state['epoch']})")
        return int(state["epoch"])
