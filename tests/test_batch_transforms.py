"""The batched, device-side training augmentation (INPUT.BATCH_AUGMENT) against the per-sample path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from datasets import build_dataset, make_batch_transform, make_train_loader
from datasets.batch_transforms import AugmentParams, BatchTrainTransform, batch_collate, nearest_source_index
from processor.trainer import Trainer
from tests.test_datasets import make_cfg


def loader_batches(cfg, epochs=(1, 2)):
    """Every training batch of ``epochs``, finished by the batch transform when there is one."""
    loader = make_train_loader(cfg, build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR))
    transform = make_batch_transform(cfg)
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out += [transform(b) if transform is not None else b for b in loader]
    return out


@pytest.mark.parametrize("overrides", [
    {},
    {"INPUT__MASK_PREPROCESS": "eight", "MODEL__NUM_PARTS": 8, "INPUT__FLIP_SWAP_LR": True, "INPUT__RE_PROB": 1.0},
    {"INPUT__PADDING": 0, "INPUT__PIXEL_MEAN": [0.485, 0.456, 0.406], "INPUT__PIXEL_STD": [0.229, 0.224, 0.225],
     "INPUT__MASK_SOFTMAX_WEIGHT": 0.0, "INPUT__MASK_BG_THRESHOLD": 0.5},
    {"MODEL__ARCH": "vit", "DATALOADER__CACHE": False},
    {"INPUT__BATCH_AUGMENT": False},
], ids=["five", "eight-swap-erase-always", "no-padding-imagenet-norm-no-softmax", "vit-no-masks-no-cache",
        "cache-only"])
@pytest.mark.slow
def test_batched_path_gives_the_per_sample_batches_bitwise(synthetic_root, tmp_path, overrides):
    """Same seed -> the same augmented images and soft masks, bit for bit (erasing noise included), for
    the cache + batched path and for each of the two alone."""
    base = make_cfg(synthetic_root, **overrides)
    new = make_cfg(synthetic_root, **{"DATALOADER__CACHE": True, "DATALOADER__CACHE_DIR": str(tmp_path),
                                      "INPUT__BATCH_AUGMENT": True, **overrides})
    expected, got = loader_batches(base), loader_batches(new)
    assert len(got) == len(expected) >= 4
    erased = 0
    for a, b in zip(expected, got):
        (img, pid, cam, view, mask), (img2, pid2, cam2, view2, mask2) = (
            (x.images, x.pids, x.camids, x.viewids, x.masks) for x in (a, b))
        assert a.augment is None and b.augment is None
        assert img2.dtype == torch.float32 and torch.equal(img2, img)
        assert torch.equal(pid2, pid) and torch.equal(cam2, cam) and torch.equal(view2, view)
        if base.MODEL.ARCH == "vit":
            assert mask is None and mask2 is None
        else:
            assert mask2.shape == mask.shape and torch.equal(mask2, mask)
        # Padding is exactly (0 - mean) / std; anything else off that grid is erasing noise.
        grid = (torch.arange(256.0) / 255 - torch.tensor(base.INPUT.PIXEL_MEAN)[:, None]) / torch.tensor(
            base.INPUT.PIXEL_STD)[:, None]
        off_grid = ~(img[:, :, :, :, None] - grid[None, :, None, None, :]).abs().lt(1e-6).any(-1)
        erased += int(off_grid.any(dim=(1, 2, 3)).sum())
    assert erased > 0  # the comparison covered erased samples


def test_vectorised_erasing_equals_the_cpu_loop(synthetic_root, tmp_path):
    """The accelerator code path (one masked pass) writes what the CPU loop writes."""
    cfg = make_cfg(synthetic_root, INPUT__BATCH_AUGMENT=True, INPUT__RE_PROB=1.0)
    dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    batch = next(iter(make_train_loader(cfg, dataset)))
    transform = make_batch_transform(cfg)
    loop = transform(batch)
    transform.vectorised_erasing = True
    vectorised = transform(batch)
    assert torch.equal(loop.images, vectorised.images) and torch.equal(loop.masks, vectorised.masks)


def test_erasing_noise_is_standard_normal():
    """Inside the rectangles the image is N(0, 1) noise in normalised space (the reference's DualRE)."""
    size = (64, 32)
    params, transform = AugmentParams(size, 0.5, 4, 1.0), BatchTrainTransform(size, [0.5] * 3, [0.5] * 3, 4)
    samples = []
    for seed in range(64):
        torch.manual_seed(seed)
        samples.append((torch.zeros(3, *size, dtype=torch.uint8), 0, 0, 0, None, params()))
    batch = batch_collate(samples)
    noise = batch.augment.noise
    img = transform(batch).images
    assert noise.numel() > 20000 and abs(float(noise.mean())) < 0.03 and abs(float(noise.std()) - 1) < 0.03
    # A black image normalises to -1 everywhere except in the rectangles, which hold the noise in order.
    assert torch.equal(img[img != -1].sort().values, noise[noise != -1].sort().values)


def test_nearest_index_matches_interpolate():
    """The gather index is exactly F.interpolate(mode='nearest')'s, for up- and downscaling."""
    for src in (1, 5, 16, 17, 37, 38, 64, 128, 300):
        for dst in (16, 32, 96, 128, 256, 384):
            x = torch.arange(src, dtype=torch.float32).view(1, 1, src, 1)
            expected = F.interpolate(x, size=(dst, 1), mode="nearest").view(-1).long()
            got = nearest_source_index(torch.arange(dst)[None], torch.tensor([src]), dst)[0]
            assert torch.equal(got, expected), (src, dst)


def test_trainer_prepare_batch_moves_and_transforms(synthetic_root):
    cfg = make_cfg(synthetic_root, INPUT__BATCH_AUGMENT=True)
    dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    batch = next(iter(make_train_loader(cfg, dataset)))
    model = torch.nn.Linear(1, 1)
    trainer = Trainer(model, None, torch.optim.SGD(model.parameters(), 0.1), None, [batch], "cpu", 1,
                      batch_transform=make_batch_transform(cfg))
    prepared = trainer.prepare_batch(batch)
    assert prepared.images.dtype == torch.float32 and prepared.images.shape == (8, 3, 64, 32)
    assert prepared.masks.shape == (8, 6, 64, 32) and torch.allclose(prepared.masks.sum(1), torch.ones(()))
    assert prepared.augment is None and torch.equal(prepared.pids, batch.pids)
    plain = Trainer(model, None, trainer.optimizer, None, [batch], "cpu", 1)
    assert plain.prepare_batch(prepared).images is prepared.images  # already on the device


def test_a_batch_is_pinned_and_moved_field_by_field(synthetic_root, monkeypatch):
    """DataLoader's pin-memory thread (``pin_memory=True`` on CUDA) calls the batch's own ``pin_memory``:
    every tensor, the nested augmentation parameters included, is pinned; host fields stay as they are.
    Pinning needs a GPU driver: the tensor method is stood in for, the dispatch is the loader's own."""
    from torch.utils.data._utils.pin_memory import pin_memory

    cfg = make_cfg(synthetic_root, INPUT__BATCH_AUGMENT=True)
    batch = next(iter(make_train_loader(cfg, build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR))))
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t.clone())
    out = pin_memory(batch)
    assert type(out) is type(batch) and type(out.augment) is type(batch.augment)
    tensors = [batch.images, batch.pids, batch.camids, batch.viewids, batch.augment.flip, batch.augment.crop,
               batch.augment.erase, batch.augment.noise, batch.augment.parts, batch.augment.part_sizes]
    assert len(pinned) == len(tensors) and all(any(p is t for p in pinned) for t in tensors)
    assert out.masks is None and out.augment.erase_boxes == batch.augment.erase_boxes
    assert torch.equal(out.augment.noise, batch.augment.noise) and out.images is not batch.images
    moved = batch.to("meta")
    assert moved.images.device.type == moved.augment.parts.device.type == "meta" and batch.images.device.type == "cpu"
