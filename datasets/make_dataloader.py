"""torch Datasets, collate functions and the train / evaluation DataLoaders."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import cv2
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils import comm
from utils.errors import ConfigError
from utils.misc import seed_worker

from .bases import ImageRecord, ReIDDataset
from .batch import EvalBatch, TrainBatch
from .batch_transforms import AugmentParams, BatchTrainTransform, batch_collate
from .cache import DecodedSource, open_cache
from .factory import build_dataset
from .masks import load_mask, require_mask
from .preflight import needs_masks, preflight
from .sampler import RandomIdentitySampler, RandomIdentitySamplerDDP, SeededSampler
from .transforms import TrainTransform, build_eval_transform, read_image

__all__ = ["TrainSet", "PreparedTrainSet", "EvalSet", "train_collate", "make_batch_transform", "eval_collate",
           "make_train_loader", "make_val_loader",
           "make_dataloader", "make_test_loader"]


class _SeededTrainSet(Dataset):
    """Training samples indexed by ``(index, sample_seed)`` pairs (:class:`datasets.sampler.SeededSampler`):
    the random augmentation of a sample runs under its own seed, so it is the same whichever process loads
    it. Subclasses say how a record is read (:meth:`_read`) and augmented (:meth:`_augment`)."""

    def __init__(self, records: Sequence[ImageRecord]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> tuple:
        index, sample_seed = item
        rec = self.records[index]
        image, masks = self._read(index, rec)
        with _seeded(sample_seed):
            image, *rest = self._augment(image, masks)
        return image, rec.pid, rec.camid, rec.viewid, *rest

    def _read(self, index: int, rec: ImageRecord) -> tuple:
        """``(image, masks or None)`` of one record, before augmentation (no random draws)."""
        raise NotImplementedError

    def _augment(self, image, masks) -> tuple:
        """``(image, masks or None, ...)`` after augmentation, under the sample's seed."""
        raise NotImplementedError


class TrainSet(_SeededTrainSet):
    """Training samples ``(image (3,H,W), pid, camid, viewid, masks (P+1,H,W) or None)`` read from the
    image (and mask) files, indexed by ``(index, sample_seed)``.

    Args:
        records: the training split.
        transform: a :class:`TrainTransform`; it receives the raw mask when ``with_masks``.
        with_masks: read each image's PifPaf mask (TSD); False for the ViT baseline.
        truncated: ``DATASETS.TRUNCATED_IMAGES`` (see :func:`datasets.transforms.check_truncated`).
    """

    def __init__(self, records: Sequence[ImageRecord], transform: TrainTransform, with_masks: bool,
                 truncated: str = "error"):
        super().__init__(records)
        self.transform, self.with_masks, self.truncated = transform, with_masks, truncated

    def _read(self, index: int, rec: ImageRecord) -> tuple:
        raw_mask = load_mask(require_mask(rec.path)) if self.with_masks else None
        return read_image(rec.path, self.truncated), raw_mask

    def _augment(self, image, masks) -> tuple:
        return self.transform(image, masks)


@contextlib.contextmanager
def _seeded(sample_seed: int) -> Iterator[None]:
    """Run a sample's augmentation draws under its own seed.

    The v2 transforms draw from torch's global CPU RNG. Forking it keeps the caller's stream intact,
    which matters with NUM_WORKERS 0, where the caller is the training process (model noise).
    Seeding the CPU generator alone costs ~2 us; torch.manual_seed ~100 us.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(sample_seed)
        yield


class PreparedTrainSet(_SeededTrainSet):
    """Training samples from decoded (``source``) images and grouped masks: the cached and the batched paths.

    Indexed by ``(index, sample_seed)`` like :class:`TrainSet`, and the same augmentation draws. With
    ``transform`` (``DATALOADER.CACHE`` alone) samples are :class:`TrainSet`'s, augmented per sample;
    with ``params`` (``INPUT.BATCH_AUGMENT``) they are ``(uint8 image (3,H,W), pid, camid, viewid,
    parts (P,h,w) or None, augmentation parameters)`` for :func:`batch_collate` and
    :class:`BatchTrainTransform` after the transfer.

    Args:
        records: the training split; source: :class:`DecodedSource` or :class:`CachedSource` over it;
        transform: a :class:`TrainTransform`, or params: an :class:`AugmentParams` (exactly one).
    """

    def __init__(self, records: Sequence[ImageRecord], source, transform: TrainTransform | None = None,
                 params: AugmentParams | None = None):
        if (transform is None) == (params is None):
            raise ValueError("give exactly one of transform and params")
        super().__init__(records)
        self.source, self.transform, self.params = source, transform, params

    def _read(self, index: int, rec: ImageRecord) -> tuple:
        return self.source[index]

    def _augment(self, image, masks) -> tuple:
        if self.params is not None:  # drawn here, applied to the whole batch after the transfer
            return image, masks, self.params()
        return self.transform.augment(image, masks)


class EvalSet(Dataset):
    """Evaluation samples ``(image (3,H,W), pid, camid, occ_label (0 when absent), path)``; ``transform``
    makes the input of an image file (:class:`datasets.transforms.EvalTransform`)."""

    def __init__(self, records: Sequence[ImageRecord], transform: Callable[[str], Tensor]):
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        rec = self.records[index]
        occ = rec.occ_label if rec.occ_label is not None else 0
        return self.transform(rec.path), rec.pid, rec.camid, occ, rec.path


def train_collate(batch) -> TrainBatch:
    """A :class:`TrainBatch` of augmented samples: images (B,3,H,W) float32, masks (B,P+1,H,W) float32 or None."""
    imgs, pids, camids, viewids, masks = zip(*batch)
    return TrainBatch(torch.stack(imgs), torch.tensor(pids), torch.tensor(camids), torch.tensor(viewids),
                      None if masks[0] is None else torch.stack(masks))


def eval_collate(batch) -> EvalBatch:
    """An :class:`EvalBatch`: images (B,3,H,W) float32, pids, camids, occ_labels (B,) int64, paths."""
    imgs, pids, camids, occ, paths = zip(*batch)
    return EvalBatch(torch.stack(imgs), torch.tensor(pids), torch.tensor(camids), torch.tensor(occ), list(paths))


def _worker_init(worker_id: int) -> None:
    seed_worker(worker_id)
    cv2.setNumThreads(0)  # one decode per worker process; OpenCV's own thread pool only oversubscribes


def _loader_kwargs(cfg, persistent: bool) -> dict:
    workers = cfg.DATALOADER.NUM_WORKERS
    # A private generator: without it each new loader iterator draws the workers' base seed from the
    # global torch RNG, shifting the training stream depending on NUM_WORKERS / persistent workers.
    generator = torch.Generator().manual_seed(cfg.SOLVER.SEED)
    return dict(num_workers=workers, persistent_workers=persistent and workers > 0,
                pin_memory=cfg.MODEL.DEVICE == "cuda" and torch.cuda.is_available(),
                worker_init_fn=_worker_init if workers > 0 else None, generator=generator)


def make_train_loader(cfg, dataset: ReIDDataset) -> DataLoader:
    """The training loader of ``dataset`` per ``DATALOADER.SAMPLER`` (call :func:`preflight` first).

    'softmax' shuffles (``drop_last``: a trailing batch of one image would break BatchNorm);
    'softmax_triplet' / 'img_triplet' use the P x K identity sampler with K = ``NUM_INSTANCE``.
    Under torch.distributed, each rank loads ``IMS_PER_BATCH / world_size`` images per step
    (DistributedSampler or :class:`RandomIdentitySamplerDDP`). The order of epoch ``e`` and every
    augmentation are functions of ``(SOLVER.SEED, e)`` (:class:`SeededSampler`), independent of
    ``NUM_WORKERS`` and of resuming; call ``loader.sampler.set_epoch(e)`` before each epoch.
    Batches: see :func:`train_collate`; masks are None for ``MODEL.ARCH vit``. With
    ``INPUT.BATCH_AUGMENT`` they are :func:`batch_collate`'s, to be finished on the device by
    :func:`make_batch_transform`'s transform (the trainer's ``prepare_batch``). With ``DATALOADER.CACHE``
    the split is decoded once into the cache (:func:`datasets.cache.open_cache`).
    """
    world, rank = comm.get_world_size(), comm.get_rank()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be divisible by the number "
                          f"of processes ({world})")
    batch_size = cfg.SOLVER.IMS_PER_BATCH // world
    with_masks = needs_masks(cfg)
    train_set, collate = _train_set(cfg, dataset, with_masks)
    seed = cfg.SOLVER.SEED
    if cfg.DATALOADER.SAMPLER == "softmax":
        # Also for one process: its permutation is a function of (seed, epoch), unlike RandomSampler's.
        sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=seed, drop_last=True)
    elif world > 1:
        sampler = RandomIdentitySamplerDDP(dataset.train, batch_size, cfg.DATALOADER.NUM_INSTANCE, world, rank, seed)
    else:
        sampler = RandomIdentitySampler(dataset.train, batch_size, cfg.DATALOADER.NUM_INSTANCE, seed)
    return DataLoader(train_set, batch_size, sampler=SeededSampler(sampler, seed, rank), collate_fn=collate,
                      drop_last=cfg.DATALOADER.SAMPLER == "softmax", **_loader_kwargs(cfg, persistent=True))


def _train_set(cfg, dataset: ReIDDataset, with_masks: bool) -> tuple[Dataset, Callable]:
    """The training set and its collate function for ``DATALOADER.CACHE`` / ``INPUT.BATCH_AUGMENT``."""
    i = cfg.INPUT
    truncated = cfg.DATASETS.TRUNCATED_IMAGES
    if not cfg.DATALOADER.CACHE and not i.BATCH_AUGMENT:  # the reference's per-sample pipeline
        return (TrainSet(dataset.train, TrainTransform.from_cfg(cfg, with_masks), with_masks, truncated),
                train_collate)
    grouping = i.MASK_PREPROCESS if with_masks else None
    if cfg.DATALOADER.CACHE:
        source = open_cache(cfg, dataset.name, dataset.train, grouping)
    else:
        source = DecodedSource(dataset.train, i.SIZE_TRAIN, grouping, truncated)
    if i.BATCH_AUGMENT:
        params = AugmentParams(i.SIZE_TRAIN, i.PROB, i.PADDING, i.RE_PROB)
        return PreparedTrainSet(dataset.train, source, params=params), batch_collate
    return PreparedTrainSet(dataset.train, source, TrainTransform.from_cfg(cfg, with_masks)), train_collate


def make_batch_transform(cfg) -> BatchTrainTransform | None:
    """The transform the trainer applies to each training batch after the transfer to the device
    (``INPUT.BATCH_AUGMENT``), or None when the loader already yields augmented batches."""
    return BatchTrainTransform.from_cfg(cfg, needs_masks(cfg)) if cfg.INPUT.BATCH_AUGMENT else None


def make_val_loader(cfg, dataset: ReIDDataset, in_training: bool = False) -> DataLoader:
    """Query followed by gallery, ``TEST.IMS_PER_BATCH`` per batch, in order; see :func:`eval_collate`.

    ``in_training``: the evaluation during training, whose image path differs from the stand-alone
    evaluation's with ``TEST.IMAGE_LOADER auto`` (:func:`datasets.transforms.eval_image_loader`).
    Under torch.distributed, each rank loads only its contiguous shard (:func:`utils.comm.shard_range`);
    :func:`processor.inference.evaluate` gathers the features. Workers are not kept alive between
    evaluations (they run every ``EVAL_PERIOD`` epochs).
    """
    eval_set = EvalSet(dataset.query + dataset.gallery, build_eval_transform(cfg, in_training))
    return DataLoader(eval_set, cfg.TEST.IMS_PER_BATCH, sampler=comm.shard_range(len(eval_set)),
                      collate_fn=eval_collate, **_loader_kwargs(cfg, persistent=False))


def make_dataloader(cfg) -> tuple[DataLoader, DataLoader, int, int, int, int]:
    """Build ``DATASETS.NAMES`` under ``DATASETS.ROOT_DIR``, check it, and make both loaders.

    Returns:
        ``(train_loader, val_loader, num_query, num_classes, camera_num, view_num)``: the number of
        training identities and the SIE camera / view table sizes (see :class:`ReIDDataset`).
    """
    dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    preflight(cfg, dataset)
    return (make_train_loader(cfg, dataset), make_val_loader(cfg, dataset, in_training=True), len(dataset.query),
            dataset.num_train_pids, dataset.num_train_cams, dataset.num_train_views)


def make_test_loader(cfg, dataset: ReIDDataset | None = None) -> tuple[DataLoader, int, int, int, int]:
    """The evaluation loader alone (no masks needed): ``(val_loader, num_query, num_classes,
    camera_num, view_num)``. ``num_classes`` is 0 for evaluation-only data sets (occ_reid)."""
    if dataset is None:
        dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    return (make_val_loader(cfg, dataset), len(dataset.query), dataset.num_train_pids, dataset.num_train_cams,
            dataset.num_train_views)
