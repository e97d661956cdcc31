"""torch.distributed helpers; every function degrades to the single-process case."""
from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from .errors import TSDError

# The config key that sets the collectives' timeout (named in the timeout error).
TIMEOUT_KEY = "SOLVER.DIST_TIMEOUT_MINUTES"
_timeout_minutes: float | None = None


class DistTimeoutError(TSDError):
    """A collective (barrier, all-reduce, gather) waited longer than the process group's timeout."""


_SLOW_RANK_HINT = (f"if a rank is just slow (rank 0 computing the metrics or re-ranking, local rank 0 building "
                   f"DATALOADER.CACHE) raise {TIMEOUT_KEY}, else see the other ranks' OUTPUT_DIR/train_log.txt.rank<N> "
                   f"for why they stopped")


@contextlib.contextmanager
def collective(what: str, hint: str = _SLOW_RANK_HINT) -> Iterator[None]:
    """Turn the timeout of the collectives inside into a :class:`DistTimeoutError` that says where
    this rank waited, which key sets the limit and ``hint``; other errors pass unchanged.

    gloo (and NCCL with ``TORCH_NCCL_BLOCKING_WAIT=1``) raise such a timeout in the waiting call. NCCL's
    default watchdog instead aborts the process with "Watchdog caught collective operation timeout ...
    Timeout(ms)=..."; ``train_log.txt`` names the limit and the key at start-up for that case.
    """
    try:
        yield
    except (RuntimeError, dist.DistError) as e:  # DistBackendError, DistStoreError, gloo's RuntimeError
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "timed out" not in text.lower() and "timeout" not in text.lower():
            raise
        limit = f"{_timeout_minutes:g} min" if _timeout_minutes is not None else "torch's default"
        rank = get_rank() if is_dist() else os.environ.get("RANK", "?")
        raise DistTimeoutError(f"rank {rank} waited longer than the process group's timeout ({limit}, {TIMEOUT_KEY}) "
                               f"for the other ranks at {what} ({text}); {hint}") from e


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


def init_distributed(device: str, timeout_minutes: float = 60.0) -> tuple[int, int]:
    """Join the process group set up by ``torchrun`` (env ``WORLD_SIZE``, set by any launcher, even
    for one process, so that a one-process ``torchrun`` run exercises the backend); no-op otherwise.

    NCCL on CUDA, gloo on CPU. Each process uses GPU ``LOCAL_RANK % device_count()``: all of the node's
    GPUs when every process sees them (torchrun), its own when the launcher gives each process one
    (SLURM with ``--gpus-per-task``). Every collective waits at most ``timeout_minutes``
    (``SOLVER.DIST_TIMEOUT_MINUTES``; torch's NCCL default of 10 minutes is shorter than rank 0's
    evaluation of an MSMT17-size set). Returns ``(rank, local_rank)``.
    """
    global _timeout_minutes
    if "WORLD_SIZE" not in os.environ or is_dist():
        return get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" else "gloo"
    gpu = None
    if device == "cuda":
        gpu = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(gpu)
    _timeout_minutes = timeout_minutes
    with collective("start-up (joining the process group)",
                    "check that every node started the same torchrun command and reaches the rendezvous endpoint "
                    "(MASTER_ADDR:MASTER_PORT)"):
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        # One collective now: an unreachable rank or a broken NCCL / network set-up fails here, at
        # start-up, not at the first gradient all-reduce (NCCL creates its communicator lazily).
        dist.barrier(device_ids=[gpu] if gpu is not None else None)
    return dist.get_rank(), local_rank



def synchronize(what: str = "a barrier") -> None:
    """Barrier across ranks (no-op without a process group); ``what`` names it in a timeout error."""
    if is_dist() and get_world_size() > 1:
        with collective(what):
            dist.barrier()


def all_true(flag: torch.Tensor) -> bool:
    """Whether the boolean scalar ``flag`` (on this rank's device) is True on every rank.

    One host read of the (reduced) flag: the only host-device synchronisation of a training step.
    """
    if is_dist() and get_world_size() > 1:
        flag = flag.to(torch.int32)
        with collective("the training step's non-finite check (all-reduce)"):
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Gather a picklable object from every rank on rank ``dst``: the list in rank order there, None
    elsewhere (``[obj]`` without a process group). Only ``dst`` receives the data."""
    if not is_dist():
        return [obj]
    out: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    with collective(f"a gather to rank {dst}"):
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
