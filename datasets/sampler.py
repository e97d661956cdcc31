"""P x K identity samplers for the triplet losses (reference §3.7), single-process and DDP, and the
wrapper that attaches a per-sample augmentation seed to any sampler."""
from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from utils.errors import ConfigError

from .bases import ImageRecord

__all__ = ["RandomIdentitySampler", "RandomIdentitySamplerDDP", "SeededSampler"]


class RandomIdentitySampler(Sampler[int]):
    """Yields batches of P identities x K images (the reference's ``RandomIdentitySampler``).

    Each epoch, for every identity: take its image indices (drawn K times with replacement when it
    has fewer than K), shuffle, cut into chunks of K (dropping the remainder). Then, while at least P
    identities have chunks left, draw P distinct identities uniformly and emit the next chunk of each.

    The plan of epoch ``e`` is a function of ``(seed, e)``. Every ``__iter__`` runs the current epoch
    and advances it by one; :meth:`set_epoch` selects an epoch explicitly (resumed runs, DDP).
    ``len()`` is the exact number of indices the next ``__iter__`` yields (the plan is drawn once and
    cached); the reference's ``__len__`` overstates it by ~7 % (bug 9.15).

    Args:
        data_source: records with a ``pid`` attribute (the training split).
        batch_size: P x K indices per batch.
        num_instances: K, images per identity in a batch.
        seed: base seed of the per-epoch plans.
    """

    def __init__(self, data_source: Sequence[ImageRecord], batch_size: int, num_instances: int, seed: int = 0):
        if batch_size % num_instances:
            raise ConfigError(f"batch size {batch_size} must be a multiple of DATALOADER.NUM_INSTANCE "
                              f"({num_instances})")
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        index_dic: dict[int, list[int]] = defaultdict(list)
        for index, record in enumerate(data_source):
            index_dic[record.pid].append(index)
        self.index_dic = dict(index_dic)
        if len(self.index_dic) < self.num_pids_per_batch:
            raise ConfigError(
                f"the training split has {len(self.index_dic)} identities but a batch needs {self.num_pids_per_batch} "
                f"(SOLVER.IMS_PER_BATCH / DATALOADER.NUM_INSTANCE); lower SOLVER.IMS_PER_BATCH"
            )
        self.seed = seed
        self.epoch = 0
        self._plan: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``__iter__`` run epoch ``epoch``."""
        self.epoch = epoch

    def plan_epoch(self, epoch: int) -> list[list[int]]:
        """All P x K batches of ``epoch`` (lists of dataset indices), in order."""
        rng = np.random.default_rng([self.seed, epoch])
        k = self.num_instances
        chunks: dict[int, deque[list[int]]] = {}
        for pid, indices in self.index_dic.items():
            idxs = np.asarray(indices)
            if len(idxs) < k:
                idxs = rng.choice(idxs, size=k, replace=True)
            idxs = rng.permutation(idxs)
            usable = len(idxs) - len(idxs) % k
            chunks[pid] = deque(idxs[:usable].reshape(-1, k).tolist())
        available = list(self.index_dic)
        batches = []
        while len(available) >= self.num_pids_per_batch:
            picked = [available[i] for i in rng.choice(len(available), self.num_pids_per_batch, replace=False)]
            batch = []
            for pid in picked:
                batch.extend(chunks[pid].popleft())
                if not chunks[pid]:
                    available.remove(pid)
            batches.append(batch)
        return batches

    def _batches(self) -> list[list[int]]:
        """This process's batches of the current epoch (cached until the epoch changes)."""
        if self._plan is None or self._plan[0] != self.epoch:
            self._plan = (self.epoch, self._select(self.plan_epoch(self.epoch)))
        return self._plan[1]

    def _select(self, batches: list[list[int]]) -> list[list[int]]:
        """The batches this process iterates (all of them without DDP)."""
        return batches

    def __iter__(self) -> Iterator[int]:
        batches = self._batches()
        self.epoch += 1
        return (index for batch in batches for index in batch)

    def __len__(self) -> int:
        return len(self._batches()) * self.batch_size


class RandomIdentitySamplerDDP(RandomIdentitySampler):
    """The identity sampler for DistributedDataParallel: every rank gets different P x K batches.

    Every rank plans the same epoch from ``(seed, epoch)`` (so ``seed`` must be equal on all ranks and
    :meth:`set_epoch` must be called with the same epoch), keeps the first ``world * floor(n / world)``
    batches and takes every ``num_replicas``-th one starting at ``rank``. All ranks therefore run the
    same number of steps on disjoint batches. ``batch_size`` is the per-rank batch.

    Args:
        num_replicas: world size; rank: this process's rank (both from torch.distributed by default).
    """

    def __init__(self, data_source: Sequence[ImageRecord], batch_size: int, num_instances: int,
                 num_replicas: int | None = None, rank: int | None = None, seed: int = 0):
        super().__init__(data_source, batch_size, num_instances, seed)
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_replicas, self.rank = num_replicas, rank

    def _select(self, batches: list[list[int]]) -> list[list[int]]:
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[self.rank:usable:self.num_replicas]


class SeededSampler(Sampler[tuple[int, int]]):
    """Pairs every index of ``sampler`` with an augmentation seed: yields ``(index, sample_seed)``.

    The seeds of an epoch are a function of ``(seed, epoch, rank)`` and the position in the epoch, so
    a sample's random augmentation does not depend on which loader worker runs it, on the workers'
    RNG history (persistent workers), or on a resume (see :class:`datasets.make_dataloader.TrainSet`).
    Call :meth:`set_epoch` before every epoch (:class:`processor.trainer.Trainer` does); it is
    forwarded to ``sampler``.

    Args:
        sampler: yields dataset indices; its order must itself be a function of the seed and epoch.
        seed: ``SOLVER.SEED``; rank: this process's rank (its seeds differ from the other ranks').
    """

    def __init__(self, sampler: Sampler[int], seed: int, rank: int = 0):
        self.sampler, self.seed, self.rank = sampler, seed, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next ``__iter__`` (here and in the wrapped sampler)."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(self.sampler)
        seeds = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(len(indices))
        return zip(indices, seeds.tolist())

    def __len__(self) -> int:
        return len(self.sampler)
