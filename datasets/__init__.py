"""Data pipeline: data sets, part masks, transforms, identity samplers and loaders.

Main entry points::

    train_loader, val_loader, num_query, num_classes, camera_num, view_num = make_dataloader(cfg)
    val_loader, num_query, num_classes, camera_num, view_num = make_test_loader(cfg)
    dataset = build_dataset("occ_duke", "data"); print(dataset.summary())

The data set readers (``bases``, ``factory`` and the data sets) and ``mask_layout`` need no torch:
``tools/make_masks.py`` imports them in its own environment (``.venv-masks``), which has none; there
the loaders, transforms and samplers are not imported.
"""
from importlib.util import find_spec

from .bases import ImageRecord, ReIDDataset
from .factory import DATASET_FACTORY, build_dataset

__all__ = ["ImageRecord", "ReIDDataset", "DATASET_FACTORY", "build_dataset"]

if find_spec("torch") is not None:  # absent only in the mask maker's environment
    from .batch import BatchAugment, EvalBatch, TrainBatch
    from .make_dataloader import (
        make_batch_transform,
        make_dataloader,
        make_test_loader,
        make_train_loader,
        make_val_loader,
    )
    from .preflight import preflight
    from .sampler import RandomIdentitySampler, RandomIdentitySamplerDDP

    __all__ += ["TrainBatch", "EvalBatch", "BatchAugment", "make_batch_transform", "make_dataloader",
                "make_test_loader", "make_train_loader", "make_val_loader", "preflight", "RandomIdentitySampler",
                "RandomIdentitySamplerDDP"]
