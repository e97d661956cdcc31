"""Parity of the stand-alone evaluation's input with the reference ``test_tsd.py`` (``test_transform_*.pt``,
parity README): the image files' bytes go through the loader that ``test.py`` uses, and every input
tensor must equal the reference's bit for bit. Size and normalisation come from each file's ``config``.
"""
from __future__ import annotations

import os

import pytest
import torch

from config import get_cfg_defaults
from datasets.bases import ImageRecord, ReIDDataset
from datasets.make_dataloader import make_val_loader
from tests.parity import load_fixture, parity_files


@pytest.fixture(params=parity_files("test_transform_*.pt"))
def fixture(request) -> dict:
    return load_fixture(request.param)


def expected_input(fx: dict, sample: dict) -> torch.Tensor:
    """The reference's network input: ``(resized_u8 / 255 - mean) / std`` (the fixture's ``expected_note``)."""
    mean = torch.tensor(fx["config"]["pixel_mean"], dtype=torch.float32)[:, None, None]
    std = torch.tensor(fx["config"]["pixel_std"], dtype=torch.float32)[:, None, None]
    return (sample["resized_u8"].float() / 255 - mean) / std


def loader_inputs(fx: dict, folder: str, image_loader: str = "auto", in_training: bool = False) -> list[torch.Tensor]:
    """Each sample's file written under its own name, read by the evaluation loader of a config with the
    fixture's ``SIZE_TEST`` / mean / std; the inputs in sample order."""
    c = fx["config"]
    assert c["kind"] == "test_transform"
    cfg = get_cfg_defaults()
    cfg.INPUT.SIZE_TEST = list(c["size_test"])
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = list(c["pixel_mean"]), list(c["pixel_std"])
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.IMAGE_LOADER = image_loader
    records = []
    for i, sample in enumerate(fx["samples"]):
        path = os.path.join(folder, str(i), sample["name"])  # a folder each: names may repeat
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(sample["file_bytes"].numpy().tobytes())
        records.append(ImageRecord(path, pid=-1, camid=0))
    loader = make_val_loader(cfg, ReIDDataset([], records, []), in_training=in_training)
    return [img for batch in loader for img in batch.images]


def test_stand_alone_evaluation_input_is_the_references_bit_for_bit(fixture, tmp_path):
    inputs = loader_inputs(fixture, str(tmp_path))
    assert len(inputs) == len(fixture["samples"]) > 0
    differ = [s["name"] for s, x in zip(fixture["samples"], inputs) if not torch.equal(x, expected_input(fixture, s))]
    assert not differ, f"{len(differ)} of {len(inputs)} inputs differ from test_tsd.py's: {differ[:5]}"


def test_the_training_evaluation_path_is_the_other_one(fixture, tmp_path):
    """'auto' in training and 'cv2' give the OpenCV path (the reference's in-training evaluation), which
    differs from test_tsd.py's on these images; 'pil' in training gives test_tsd.py's again."""
    expected = [expected_input(fixture, s) for s in fixture["samples"]]
    for image_loader, in_training in (("auto", True), ("cv2", False)):
        inputs = loader_inputs(fixture, str(tmp_path / f"{image_loader}_{in_training}"), image_loader, in_training)
        assert any(not torch.equal(x, e) for x, e in zip(inputs, expected)), image_loader
    inputs = loader_inputs(fixture, str(tmp_path / "pil_training"), "pil", in_training=True)
    assert all(torch.equal(x, e) for x, e in zip(inputs, expected))
