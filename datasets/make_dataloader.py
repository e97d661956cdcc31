"""torch Datasets, collate functions and the train / evaluation DataLoaders."""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils import comm
from utils.errors import ConfigError, DataError
from utils.misc import seed_worker

from .bases import ImageRecord, ReIDDataset
from .factory import build_dataset
from .masks import find_mask, load_mask, mask_candidates
from .preflight import needs_masks, preflight
from .sampler import RandomIdentitySampler, RandomIdentitySamplerDDP
from .transforms import TrainTransform, build_eval_transform, read_image

__all__ = ["TrainSet", "EvalSet", "train_collate", "eval_collate", "make_train_loader", "make_val_loader",
           "make_dataloader", "make_test_loader"]

TrainBatch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]
EvalBatch = tuple[Tensor, Tensor, Tensor, Tensor, list]


class TrainSet(Dataset):
    """Training samples ``(image (3,H,W), pid, camid, viewid, masks (P+1,H,W) or None)``.

    Args:
        records: the training split.
        transform: a :class:`TrainTransform`; it receives the raw mask when ``with_masks``.
        with_masks: read each image's PifPaf mask (TSD); False for the ViT baseline.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: TrainTransform, with_masks: bool):
        self.records, self.transform, self.with_masks = records, transform, with_masks

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        rec = self.records[index]
        raw_mask = None
        if self.with_masks:
            path = find_mask(rec.path)
            if path is None:
                raise DataError(f"no part mask for {rec.path}; looked for {' and '.join(mask_candidates(rec.path))}")
            raw_mask = load_mask(path)
        image, masks = self.transform(read_image(rec.path), raw_mask)
        return image, rec.pid, rec.camid, rec.viewid, masks


class EvalSet(Dataset):
    """Evaluation samples ``(image (3,H,W), pid, camid, occ_label (0 when absent), path)``."""

    def __init__(self, records: Sequence[ImageRecord], transform: Callable[[Tensor], Tensor]):
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        rec = self.records[index]
        occ = rec.occ_label if rec.occ_label is not None else 0
        return self.transform(read_image(rec.path)), rec.pid, rec.camid, occ, rec.path


def train_collate(batch) -> TrainBatch:
    """``(imgs (B,3,H,W) float32, pids, camids, viewids (B,) int64, masks (B,P+1,H,W) float32 or None)``."""
    imgs, pids, camids, viewids, masks = zip(*batch)
    return (torch.stack(imgs), torch.tensor(pids), torch.tensor(camids), torch.tensor(viewids),
            None if masks[0] is None else torch.stack(masks))


def eval_collate(batch) -> EvalBatch:
    """``(imgs (B,3,H,W) float32, pids, camids, occ_labels (B,) int64, paths list[str])``."""
    imgs, pids, camids, occ, paths = zip(*batch)
    return torch.stack(imgs), torch.tensor(pids), torch.tensor(camids), torch.tensor(occ), list(paths)


def _worker_init(worker_id: int) -> None:
    seed_worker(worker_id)
    cv2.setNumThreads(0)  # one decode per worker process; OpenCV's own thread pool only oversubscribes


def _loader_kwargs(cfg, persistent: bool) -> dict:
    workers = cfg.DATALOADER.NUM_WORKERS
    return dict(num_workers=workers, persistent_workers=persistent and workers > 0,
                pin_memory=cfg.MODEL.DEVICE == "cuda" and torch.cuda.is_available(),
                worker_init_fn=_worker_init if workers > 0 else None)


def make_train_loader(cfg, dataset: ReIDDataset) -> DataLoader:
    """The training loader of ``dataset`` per ``DATALOADER.SAMPLER`` (call :func:`preflight` first).

    'softmax' shuffles (``drop_last``: a trailing batch of one image would break BatchNorm);
    'softmax_triplet' / 'img_triplet' use the P x K identity sampler with K = ``NUM_INSTANCE``.
    Under torch.distributed, each rank loads ``IMS_PER_BATCH / world_size`` images per step
    (DistributedSampler or :class:`RandomIdentitySamplerDDP`), seeded by ``SOLVER.SEED``.
    Batches: see :func:`train_collate`; masks are None for ``MODEL.ARCH vit``.
    """
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be divisible by the number "
                          f"of processes ({world})")
    batch_size = cfg.SOLVER.IMS_PER_BATCH // world
    with_masks = needs_masks(cfg)
    train_set = TrainSet(dataset.train, TrainTransform.from_cfg(cfg, with_masks), with_masks)
    seed = cfg.SOLVER.SEED
    if cfg.DATALOADER.SAMPLER == "softmax":
        sampler = DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=True) if world > 1 else None
        return DataLoader(train_set, batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                          collate_fn=train_collate, **_loader_kwargs(cfg, persistent=True))
    k = cfg.DATALOADER.NUM_INSTANCE
    if world > 1:
        sampler = RandomIdentitySamplerDDP(dataset.train, batch_size, k, world, comm.get_rank(), seed)
    else:
        sampler = RandomIdentitySampler(dataset.train, batch_size, k, seed)
    return DataLoader(train_set, batch_size, sampler=sampler, collate_fn=train_collate,
                      **_loader_kwargs(cfg, persistent=True))


def make_val_loader(cfg, dataset: ReIDDataset) -> DataLoader:
    """Query followed by gallery, ``TEST.IMS_PER_BATCH`` per batch, in order; see :func:`eval_collate`.

    Workers are not kept alive between evaluations (they run every ``EVAL_PERIOD`` epochs).
    """
    eval_set = EvalSet(dataset.query + dataset.gallery, build_eval_transform(cfg))
    return DataLoader(eval_set, cfg.TEST.IMS_PER_BATCH, shuffle=False, collate_fn=eval_collate,
                      **_loader_kwargs(cfg, persistent=False))


def make_dataloader(cfg) -> tuple[DataLoader, DataLoader, int, int, int, int]:
    """Build ``DATASETS.NAMES`` under ``DATASETS.ROOT_DIR``, check it, and make both loaders.

    Returns:
        ``(train_loader, val_loader, num_query, num_classes, camera_num, view_num)``: the number of
        training identities and the SIE camera / view table sizes (see :class:`ReIDDataset`).
    """
    dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    preflight(cfg, dataset)
    return (make_train_loader(cfg, dataset), make_val_loader(cfg, dataset), len(dataset.query),
            dataset.num_train_pids, dataset.num_train_cams, dataset.num_train_views)


def make_test_loader(cfg, dataset: ReIDDataset | None = None) -> tuple[DataLoader, int, int, int, int]:
    """The evaluation loader alone (no masks needed): ``(val_loader, num_query, num_classes,
    camera_num, view_num)``. ``num_classes`` is 0 for evaluation-only data sets (occ_reid)."""
    if dataset is None:
        dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    return (make_val_loader(cfg, dataset), len(dataset.query), dataset.num_train_pids, dataset.num_train_cams,
            dataset.num_train_views)
