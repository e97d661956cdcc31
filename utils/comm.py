"""torch.distributed helpers; every function degrades to the single-process case."""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device: str) -> tuple[int, int]:
    """Join the process group set up by ``torchrun`` (env ``WORLD_SIZE`` > 1); no-op otherwise.

    NCCL on CUDA, gloo on CPU. Returns ``(rank, local_rank)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_dist():
        return get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), local_rank


def synchronize() -> None:
    """Barrier across ranks (no-op without a process group)."""
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank (a one-element list without a process group)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
