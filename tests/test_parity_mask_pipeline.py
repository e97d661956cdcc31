"""Parity of the mask pipeline with the reference (``mask_pipeline_*.pt``, parity README).

Every fixture file is checked with the settings stored in it: output size, grouping, background
threshold, softmax weight and patch grid.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from config.parts import PART_GROUPINGS, PIFPAF_PARTS, part_names
from datasets.masks import group_parts
from datasets.transforms import TrainTransform, make_resize
from model.targets import mask_targets
from tests.parity import load_fixture, parity_files


def gather(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The reference's nearest-neighbour resize expressed by its source indices."""
    return x[:, rows][:, :, cols]


@pytest.fixture(params=parity_files("mask_pipeline_*.pt"))
def fixture(request) -> dict:
    return load_fixture(request.param)


def deterministic_transform(fx: dict) -> TrainTransform:
    """Our training pipeline with every random step off (no flip, padding, erasing)."""
    return TrainTransform(fx["config"]["img_size"], mean=[0.5] * 3, std=[0.5] * 3, flip_p=0.0, padding=0,
                          erase_p=0.0, grouping=fx["grouping_used"], bg_threshold=fx["bg_threshold"],
                          softmax_weight=fx["softmax_weight"])


def test_channel_names_and_groupings(fixture):
    assert list(PIFPAF_PARTS) == fixture["channel_names"]
    assert {name: {part: list(ch) for part, ch in groups.items()} for name, groups in PART_GROUPINGS.items()} \
        == fixture["groupings"]
    assert part_names(fixture["grouping_used"]) == fixture["part_names"]


def test_nearest_resize_and_grouping_are_exact(fixture):
    size = fixture["config"]["img_size"]
    for s in fixture["samples"]:
        rows, cols = s["rows"], s["cols"]
        resized = make_resize(size)(tv_tensors.Mask(s["raw"])).as_subclass(torch.Tensor)
        assert torch.equal(resized, gather(s["raw"], rows, cols)), s["variant"]
        grouped_src = group_parts(s["raw"], fixture["grouping_used"])
        assert torch.equal(grouped_src, s["grouped_src"]), s["variant"]
        grouped = make_resize(size)(tv_tensors.Mask(grouped_src)).as_subclass(torch.Tensor)
        assert torch.equal(grouped, gather(s["grouped_src"], rows, cols)), s["variant"]


def test_soft_masks_targets_and_visibility(fixture):
    c = fixture["config"]
    transform = deterministic_transform(fixture)
    height, width = c["img_size"]
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    for s in fixture["samples"]:
        _, soft = transform(image, s["raw"].numpy())
        expected = s["soft"] if s["soft"] is not None else gather(s["soft_src"], s["rows"], s["cols"])
        torch.testing.assert_close(soft, expected, atol=1e-7, rtol=0, msg=s["variant"])
        down = F.interpolate(soft[None], (c["num_y"], c["num_x"]), mode="bilinear", align_corners=True)[0]
        torch.testing.assert_close(down, s["downsampled"], atol=1e-6, rtol=0, msg=s["variant"])
        targets, visibility = mask_targets(soft[None], c["num_y"], c["num_x"])
        assert targets.dtype == torch.int64 and targets.shape == (1, c["num_y"] * c["num_x"])
        assert torch.equal(targets[0], s["targets"]), s["variant"]
        assert torch.equal(visibility[0], s["visibility_with_bg"].bool()), s["variant"]
        assert torch.equal(visibility[0, 1:].float(), s["visibility"]), s["variant"]
