"""Training / evaluation transforms and mask helpers (reference §3.5, §3.6)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from config import get_cfg_defaults
from config.parts import flip_permutation
from datasets.masks import add_background, group_parts
from datasets.transforms import (
    PairedHorizontalFlip,
    PairedRandomErasing,
    TrainTransform,
    build_eval_transform,
    file_is_truncated,
    make_resize,
    read_image,
    read_pil_image,
)
from model.targets import mask_targets
from utils.errors import DataError, user_message

H, W = 64, 32


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 with structure at several scales (a resize has something to interpolate)."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (5, 5), 1.5)


def test_image_resize_matches_cv2_inter_linear():
    for h, w in ((150, 61), (41, 19), (64, 32)):
        img = smooth_image(h, w)
        ours = make_resize((H, W))(tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1))).permute(1, 2, 0).numpy()
        ref = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
        assert np.abs(ours.astype(int) - ref).max() <= 1


def test_mask_resize_matches_cv2_inter_nearest():
    rng = np.random.default_rng(1)
    for h, w in ((16, 8), (37, 19), (100, 50)):
        mask = rng.random((5, h, w), dtype=np.float32)
        ours = make_resize((H, W))(tv_tensors.Mask(torch.from_numpy(mask))).numpy()
        ref = np.stack([cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST) for m in mask])
        assert np.array_equal(ours, ref)


def test_paired_erasing_zeroes_mask_exactly_in_the_noise_rectangle():
    erase = PairedRandomErasing(p=1.0)
    for seed in range(20):
        torch.manual_seed(seed)
        img, mask = erase(tv_tensors.Image(torch.ones(3, H, W)), tv_tensors.Mask(torch.ones(5, H, W)))
        changed = (img != 1).any(0)
        zero = (mask == 0).all(0)
        assert torch.equal(changed, zero) and (mask[:, ~zero] == 1).all()
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        area = len(rows) * len(cols)
        assert zero.sum() == area  # one filled rectangle
        assert 0.02 * H * W * 0.8 <= area <= H * W / 3 * 1.2
        assert len(rows) < H and len(cols) < W


def test_erased_region_becomes_background():
    t = TrainTransform((H, W), [0.5] * 3, [0.5] * 3, flip_p=0, padding=0, erase_p=1.0, grouping="five")
    raw = torch.ones(36, H // 4, W // 4)
    torch.manual_seed(0)
    img, soft = t(torch.full((3, H, W), 128, dtype=torch.uint8), raw)
    erased = ~torch.isclose(img, torch.tensor(128 / 255 * 2 - 1), atol=1e-6, rtol=0).all(0)
    assert erased.any()
    assert (soft[0][erased] > 0.999).all() and (soft[0][~erased] < 1e-3).all()


def square_sample(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image with a white square on black, and a 36-channel mask that marks the same square."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.randint(0, H - 12, (1,), generator=g).item(), torch.randint(0, W - 8, (1,), generator=g).item()
    img = torch.zeros(3, H, W, dtype=torch.uint8)
    img[:, y:y + 12, x:x + 8] = 255
    raw = torch.zeros(36, H, W)
    raw[0, y:y + 12, x:x + 8] = 1.0  # nose -> head part
    return img, raw


def test_flip_and_crop_move_image_and_mask_together():
    t = TrainTransform((H, W), [0.5] * 3, [0.5] * 3, flip_p=0.5, padding=6, erase_p=0.0, grouping="five")
    positions = set()
    for seed in range(30):
        img, raw = square_sample(seed % 3)
        torch.manual_seed(seed)
        out, soft = t(img, raw)
        bright = out[0] > 0
        assert torch.equal(bright, soft.argmax(0) == 1)
        ys, xs = bright.nonzero(as_tuple=True)
        positions.add((seed % 3, ys.min().item() if len(ys) else -1, xs.min().item() if len(xs) else -1))
    assert len(positions) > 10  # the crop offsets and flips really vary


def test_soft_masks_are_distributions():
    t = TrainTransform((H, W), [0.5] * 3, [0.5] * 3, grouping="eight")
    raw = torch.rand(36, 16, 8) ** 3
    for seed in range(5):
        torch.manual_seed(seed)
        img, soft = t(torch.from_numpy(smooth_image(90, 40)).permute(2, 0, 1), raw.numpy())
        assert img.shape == (3, H, W) and img.dtype == torch.float32
        assert soft.shape == (9, H, W) and soft.dtype == torch.float32
        assert (soft >= 0).all()
        torch.testing.assert_close(soft.sum(0), torch.ones(H, W), atol=1e-6, rtol=0)


def test_no_mask_gives_image_only():
    t = TrainTransform((H, W), [0.5] * 3, [0.5] * 3, grouping=None)
    img, soft = t(torch.zeros(3, 20, 10, dtype=torch.uint8))
    assert img.shape == (3, H, W) and soft is None


def test_flip_swaps_left_right_parts_only_when_asked():
    assert flip_permutation("eight") == [0, 2, 1, 3, 5, 4, 7, 6]
    assert all(flip_permutation(g) is None for g in ("five", "three", "one"))
    mask = tv_tensors.Mask(torch.rand(8, H, W))
    swapped = PairedHorizontalFlip(p=1.0, mask_permutation=flip_permutation("eight"))(mask)
    plain = PairedHorizontalFlip(p=1.0)(mask)
    assert torch.equal(plain, mask.flip(-1))
    assert torch.equal(swapped, mask.flip(-1)[[0, 2, 1, 3, 5, 4, 7, 6]])


def test_grouping_is_max_then_clamp():
    raw = torch.zeros(36, 2, 2)
    raw[5, 0, 0], raw[6, 0, 0] = 0.4, 0.7  # both arms
    raw[21, 1, 1] = 1.5  # hip-hip belongs to torso and leg; clamp to 1
    parts = group_parts(raw, "five")
    assert parts.shape == (5, 2, 2)
    assert parts[1, 0, 0] == pytest.approx(0.7) and parts[2, 1, 1] == 1 and parts[3, 1, 1] == 1
    assert parts.sum() == pytest.approx(0.7 + 2)


def test_background_threshold_is_strict_and_ties_go_to_lower_part():
    parts = torch.zeros(5, 1, 3)
    parts[:, 0, 0] = 0.29
    parts[2, 0, 1] = torch.tensor(0.3, dtype=torch.float32)  # exactly the threshold: foreground
    parts[2:4, 0, 2] = 0.8  # torso / leg tie (hip-hip field)
    soft = add_background(parts, 0.3, 15.0)
    assert soft.argmax(0).tolist() == [[0, 3, 3]]
    targets, visibility = mask_targets(soft[None], 1, 3)
    assert targets.tolist() == [[0, 3, 3]]
    assert visibility.tolist() == [[True, False, False, True, False, False]]
    normalised = add_background(parts, 0.3, 0.0)  # weight 0: divide by the channel sum
    torch.testing.assert_close(normalised.sum(0), torch.ones(1, 3))


@pytest.mark.parametrize("image_loader, in_training, used", [("auto", False, "pil"), ("auto", True, "cv2"),
                                                             ("pil", True, "pil"), ("cv2", False, "cv2")])
def test_eval_transform_resizes_and_normalises(tmp_path, image_loader, in_training, used):
    """Both evaluation paths (TEST.IMAGE_LOADER; 'auto': PIL stand-alone, OpenCV during training)."""
    cfg = get_cfg_defaults()
    cfg.INPUT.SIZE_TEST = [H, W]
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    cfg.TEST.IMAGE_LOADER = image_loader
    path = str(tmp_path / "white.png")
    cv2.imwrite(path, np.full((100, 40, 3), 255, np.uint8))
    transform = build_eval_transform(cfg, in_training)
    assert transform.loader == used
    out = transform(path)
    assert type(out) is torch.Tensor and out.shape == (3, H, W) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones(3, H, W))


def test_read_image_rgb_and_corrupt(tmp_path):
    bgr = np.zeros((8, 4, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    good = str(tmp_path / "0001_c1_f0000001.png")
    cv2.imwrite(good, bgr)
    img = read_image(good)
    assert img.shape == (3, 8, 4) and img.dtype == torch.uint8 and (img[0] == 255).all() and (img[2] == 0).all()
    bad = tmp_path / "0001_c1_f0000002.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="0001_c1_f0000002.jpg"):
        read_image(str(bad))


def cut_jpeg(path, keep: float = 0.6) -> bytes:
    """Write a JPEG of a textured picture to ``path`` cut after ``keep`` of its bytes; returns the whole file."""
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 256, (64, 32, 3), dtype=np.uint8))
    data = buf.tobytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return data


@pytest.mark.parametrize("reader", [read_image, read_pil_image])
def test_a_truncated_jpeg_is_an_error_or_a_warning_naming_it(tmp_path, reader, caplog):
    """A JPEG cut mid-stream decodes to a partly grey picture: an error by default, a warning naming it
    with DATASETS.TRUNCATED_IMAGES warn, the reference's silence with 'ignore'. A complete JPEG, also
    with padding after its end marker, is not truncated."""
    path = tmp_path / "0001_c1_f0000003.jpg"
    whole = cut_jpeg(path)
    assert file_is_truncated(str(path))
    with pytest.raises(DataError) as e:
        reader(str(path))
    assert user_message(e.value) == (
        f"image {path} is truncated (a JPEG cut mid-stream: no end-of-image marker; decoded, its missing part "
        f"would be grey); replace the file or delete it from its split folder, or set DATASETS.TRUNCATED_IMAGES "
        f"warn (or ignore, the reference's behaviour) to use it as decoded")
    with caplog.at_level("WARNING", logger="tsd"):
        assert reader(str(path), "warn") is not None
        assert reader(str(path), "ignore") is not None
    assert [r.getMessage() for r in caplog.records] == [
        f"image {path} is truncated (a JPEG cut mid-stream); using it as decoded, its missing part grey "
        f"(DATASETS.TRUNCATED_IMAGES warn)"]
    for data in (whole, whole + b"\0" * 100):
        path.write_bytes(data)
        assert not file_is_truncated(str(path))
        reader(str(path))


def test_truncated_training_images_are_found_before_the_first_step(data_copy, caplog):
    """preflight reads every training JPEG's first and last bytes: one line naming the files."""
    from datasets import build_dataset, preflight
    from tests.test_datasets import make_cfg

    ds = build_dataset("occ_duke", data_copy)
    paths = [r.path for r in ds.train]
    for p in paths[3:5]:
        data = open(p, "rb").read()
        open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        preflight(make_cfg(data_copy), ds)
    assert user_message(e.value) == (
        f"2 of {len(paths)} training images are truncated JPEGs (cut mid-stream: no end-of-image marker; first: "
        f"{paths[3]}, {paths[4]}); replace the file or delete it from its split folder, or set "
        f"DATASETS.TRUNCATED_IMAGES warn (or ignore, the reference's behaviour) to use it as decoded")
    with caplog.at_level("WARNING", logger="tsd"):
        preflight(make_cfg(data_copy, DATASETS__TRUNCATED_IMAGES="warn"), ds)
        preflight(make_cfg(data_copy, DATASETS__TRUNCATED_IMAGES="ignore"), ds)
    assert sum("is truncated" in r.getMessage() for r in caplog.records) == 2
