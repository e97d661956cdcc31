"""Seeding, device selection and atomic file writes."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import torch

from .logger import get_logger


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices).

    cuDNN autotuning stays on for speed (as in the reference); bitwise determinism is only
    guaranteed on CPU.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = True


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/Python seeds from the worker's torch seed.

    torch seeds each worker from the loader's base seed (drawn from the main process's torch RNG),
    so augmentations are reproducible from ``SOLVER.SEED`` and from a resumed RNG state.
    """
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def resolve_device(requested: str) -> str:
    """``'cuda'`` when asked for and available, else ``'cpu'`` (with a warning when CUDA was asked)."""
    if requested == "cuda" and not torch.cuda.is_available():
        get_logger().warning("MODEL.DEVICE is 'cuda' but no GPU is visible; running on the CPU")
        return "cpu"
    return requested


def apply_device_id(device_id: str) -> None:
    """Export ``MODEL.DEVICE_ID`` (``'0'``, ``'0,1'``: the config loader reads every written form as this
    text) as ``CUDA_VISIBLE_DEVICES`` (single-process runs, before CUDA init; a set variable wins)."""
    if "LOCAL_RANK" not in os.environ and device_id:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", device_id)


def atomic_write_json(obj, path: str) -> None:
    """Write ``obj`` as indented JSON to ``path`` through a temporary file in the same folder and
    ``os.replace``: a reader (``tools/summarize_runs.py`` while a run trains) or a crash never sees half
    a file, and the previous file stays whole until the new one is complete."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def set_tf32(enabled: bool, device: str) -> None:
    """``MODEL.TF32``: let CUDA float32 matrix products use TF32 tensor cores (on ``device`` 'cuda').

    Sets ``torch.backends.cuda.matmul.allow_tf32`` (CUDA only: not ``torch.set_float32_matmul_precision``,
    which would also lower oneDNN's CPU matmuls). Off leaves torch's default (full float32 matmuls;
    cuDNN convolutions use TF32 by default either way).
    """
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
