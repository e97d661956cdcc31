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
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_dist() else 1


def backend() -> str | None:
    """The process group's backend ('nccl', 'gloo'), None without one."""
    return dist.get_backend() if is_dist() else None


def is_main_process() -> bool:
    """True on rank 0, the process that logs, writes checkpoints and computes the metrics."""
    return get_rank() == 0


def init_distributed(device: str) -> tuple[int, int]:
    """Join the process group set up by ``torchrun`` (env ``WORLD_SIZE``, set by any launcher, even
    for one process, so that a one-process ``torchrun`` run exercises the backend); no-op otherwise.

    NCCL on CUDA, gloo on CPU. Returns ``(rank, local_rank)``.
    """
    if "WORLD_SIZE" not in os.environ or is_dist():
        return get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    # One collective now: an unreachable rank or a broken NCCL / network set-up fails here, at start-up,
    # not at the first gradient all-reduce (NCCL creates its communicator lazily).
    dist.barrier(device_ids=[local_rank] if device == "cuda" else None)
    return dist.get_rank(), local_rank


def synchronize() -> None:
    """Barrier across ranks (no-op without a process group)."""
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def all_true(flag: torch.Tensor) -> bool:
    """Whether the boolean scalar ``flag`` (on this rank's device) is True on every rank."""
    if is_dist() and get_world_size() > 1:
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank (a one-element list without a process group)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Gather a picklable object from every rank on rank ``dst``: the list in rank order there, None
    elsewhere (``[obj]`` without a process group). Only ``dst`` receives the data, unlike
    :func:`all_gather_object`."""
    if not is_dist():
        return [obj]
    out: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Overwrite every buffer of ``module`` (e.g. BatchNorm running statistics) with rank ``src``'s."""
    if is_dist():
        for buf in module.buffers():
            dist.broadcast(buf, src)


def shard_range(n: int) -> range:
    """This rank's contiguous slice of ``range(n)``: consecutive ranks get adjacent slices whose sizes
    differ by at most one, so concatenating the slices in rank order restores ``range(n)``."""
    rank, world = get_rank(), get_world_size()
    return range(n * rank // world, n * (rank + 1) // world)


def cleanup() -> None:
    """Leave the process group (no-op without one)."""
    if is_dist():
        dist.destroy_process_group()
