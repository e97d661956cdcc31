"""Data pipeline: data sets, part masks, transforms, identity samplers and loaders.

Main entry points::

    train_loader, val_loader, num_query, num_classes, camera_num, view_num = make_dataloader(cfg)
    val_loader, num_query, num_classes, camera_num, view_num = make_test_loader(cfg)
    dataset = build_dataset("occ_duke", "data"); print(dataset.summary())
"""
from .bases import ImageRecord, ReIDDataset
from .factory import DATASET_FACTORY, build_dataset
from .make_dataloader import (make_batch_transform, make_dataloader, make_test_loader, make_train_loader,
                              make_val_loader)
from .masks import PART_GROUPINGS, PIFPAF_PARTS, mask_targets
from .preflight import preflight
from .sampler import RandomIdentitySampler, RandomIdentitySamplerDDP

__all__ = [
    "ImageRecord", "ReIDDataset", "DATASET_FACTORY", "build_dataset", "make_batch_transform", "make_dataloader",
    "make_test_loader",
    "make_train_loader", "make_val_loader", "PART_GROUPINGS", "PIFPAF_PARTS", "mask_targets", "preflight",
    "RandomIdentitySampler", "RandomIdentitySamplerDDP",
]
