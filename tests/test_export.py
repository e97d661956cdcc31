"""ONNX export (processor/export.py, tools/export_onnx.py, tools/extract_features.py --onnx): the tiny TSD
and the ViT baseline, exported on the CPU and run by onnxruntime, give PyTorch's features and visibility."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

for _module in ("onnx", "onnxruntime", "onnxscript"):
    pytest.importorskip(_module, reason=f"{_module} is an optional dependency: "
                                        ".venv/bin/pip install -r requirements-export.txt")

from config import load_cfg  # noqa: E402
from datasets import build_dataset  # noqa: E402
from model import make_model  # noqa: E402
from processor.export import (  # noqa: E402
    FEATURE_TOL,
    EvalModel,
    ExportCheck,
    ExportError,
    _require,
    export_onnx,
    file_metadata,
    onnx_session,
    random_batches,
    verify_onnx,
)
from processor.inference import extract_features  # noqa: E402
from tests.parity import REPO  # noqa: E402
from tools import export_onnx as export_tool  # noqa: E402
from tools import extract_features as extract_tool  # noqa: E402
from tools._common import eval_loader, folder_records  # noqa: E402
from utils.errors import ConfigError  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "demo", "tsd_tiny.yml")


def tiny_cfg(root: str, *opts: str):
    return load_cfg(CONFIG, ["DATASETS.ROOT_DIR", root, "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
                             "MODEL.PRETRAIN_CHOICE", "none", *opts])


@pytest.fixture(scope="module")
def exported(synthetic_root, tmp_path_factory):
    """``(cfg, model, weight, onnx path)``: a random tiny TSD saved and exported by tools/export_onnx.py.

    The visibility classifier gets larger weights than its N(0, 0.001²) init so that visible and hidden
    parts both occur (logits far from the threshold)."""
    cfg = tiny_cfg(synthetic_root)
    torch.manual_seed(0)
    model = make_model(cfg, 5).eval()
    torch.nn.init.normal_(model.visb_pred.classifier.weight, std=1.0)
    folder = tmp_path_factory.mktemp("export")
    weight = str(folder / "tiny.pth")
    torch.save(model.state_dict(), weight)
    path = str(folder / "tiny.onnx")
    assert export_tool.main(["--config_file", CONFIG, "--output", path, "DATASETS.ROOT_DIR", synthetic_root,
                             "MODEL.DEVICE", "cpu", "TEST.WEIGHT", weight]) == 0
    return cfg, model, weight, path


@pytest.fixture(scope="module")
def images(synthetic_root, tmp_path_factory) -> str:
    """A folder of 7 query crops of the tiny synthetic data set."""
    folder = tmp_path_factory.mktemp("own_images")
    for r in build_dataset("occ_duke", synthetic_root).query[:7]:
        shutil.copy(r.path, folder / os.path.basename(r.path))
    return str(folder)


@pytest.mark.slow
def test_export_has_a_dynamic_batch_and_matches_pytorch(exported, images):
    cfg, model, _, path = exported
    session = onnx_session(path)
    (inp,), outs = session.get_inputs(), session.get_outputs()
    assert inp.name == "images" and inp.shape[0] == "batch" and inp.shape[1:] == [3, *cfg.INPUT.SIZE_TEST]
    assert [o.name for o in outs] == ["features", "visibility"]
    assert [o.shape[0] for o in outs] == ["batch", "batch"]  # dynamic on the outputs too, not the example's 2
    # Real crops through the eval transform, batch sizes 3 and 4 (export example: 2), plus random batches 1 and 5.
    loader_batches = [b.images for b in eval_loader(tiny_cfg("", "TEST.IMS_PER_BATCH", "4"), folder_records(images))]
    check = verify_onnx(model, session, loader_batches + random_batches(cfg), flip=False)
    assert check.batch_sizes == [4, 3, 1, 5] and check.images == 13
    assert check.max_abs_diff <= FEATURE_TOL and 0 < check.max_rel_diff < 1e-5
    assert check.vis_equal == check.vis_total == 13 * (1 + model.num_parts)
    assert check.ok
    # The check is not vacuous: hidden and visible parts both occur.
    _, vis = EvalModel(model)(torch.cat(loader_batches))
    assert {0.0, 1.0} <= set(vis[:, 1:].unique().tolist())


def test_metadata_tells_how_to_feed_the_file(exported):
    cfg, _, _, path = exported
    meta = file_metadata(onnx_session(path))
    assert meta["input_size"] == list(cfg.INPUT.SIZE_TEST)
    assert meta["pixel_mean"] == pytest.approx(list(cfg.INPUT.PIXEL_MEAN))
    assert meta["pixel_std"] == pytest.approx(list(cfg.INPUT.PIXEL_STD))
    assert meta["flip_feats"] is False and meta["feat_norm"] is True and meta["arch"] == "tsd"
    assert meta["tokens"] == ["global", "head", "arm", "torso", "leg", "feet"]


def test_extract_features_with_onnxruntime_matches_pytorch(exported, images, synthetic_root, tmp_path):
    cfg, model, _, path = exported
    out = tmp_path / "feats"
    # No TEST.WEIGHT: the ONNX file is the model.
    assert extract_tool.main(["--config_file", CONFIG, "--images", images, "--out", str(out), "--onnx", path,
                              "DATASETS.ROOT_DIR", synthetic_root, "DATALOADER.NUM_WORKERS", "0"]) == 0
    feats, vis = np.load(out / "features.npy"), np.load(out / "visibility.npy")
    want = extract_features(model, eval_loader(cfg, folder_records(images)), "cpu")
    assert (out / "paths.txt").read_text().splitlines() == want["paths"]
    assert np.abs(feats - want["feats"].numpy()).max() <= FEATURE_TOL
    np.testing.assert_array_equal(vis, want["vis"].numpy())


def test_onnx_user_errors(exported, images, synthetic_root, tmp_path):
    _, _, _, path = exported
    args = ["--config_file", CONFIG, "--images", images, "--out", str(tmp_path / "o")]
    with pytest.raises(ExportError, match="nope.onnx does not exist; write it with tools/export_onnx.py"):
        extract_tool.main(args + ["--onnx", str(tmp_path / "nope.onnx")])
    with pytest.raises(ConfigError,
                       match=r"takes 192x96 images but INPUT.SIZE_TEST is 256x128.*SIZE_TEST '\[192, 96\]'"):
        extract_tool.main(args + ["--onnx", path, "INPUT.SIZE_TEST", "[256, 128]"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("not a model")
    with pytest.raises(ExportError, match="garbage.onnx cannot be loaded by onnxruntime"):
        extract_tool.main(args + ["--onnx", str(garbage)])
    with pytest.raises(ExportError, match=r"no_such_package_xyz is not installed.*: "
                                          r"\.venv/bin/pip install -r requirements-export.txt"):
        _require("no_such_package_xyz")


@pytest.mark.slow
def test_vit_baseline_with_flip_exports(synthetic_root, tmp_path):
    """The baseline (P = 0) with TEST.FLIP_FEATS: the flip average is inside the graph."""
    cfg = tiny_cfg(synthetic_root, "MODEL.ARCH", "vit", "TEST.FLIP_FEATS", "True")
    torch.manual_seed(1)
    model = make_model(cfg, 5).eval()
    path = export_onnx(model, cfg, str(tmp_path / "vit.onnx"))
    session = onnx_session(path)
    assert file_metadata(session)["flip_feats"] is True and file_metadata(session)["tokens"] == ["global"]
    check = verify_onnx(model, session, random_batches(cfg, (3,)), flip=True)
    assert check.ok and check.vis_total == 3 and check.vis_margin == 0
    # Flip really in the graph: the export differs from the unflipped forward.
    x = random_batches(cfg, (2,), seed=3)[0]
    with torch.no_grad():
        plain = model(x)[0]
    flipped = torch.from_numpy(session.run(["features"], {"images": x.numpy()})[0])
    assert (flipped - plain).abs().max() > 1e3 * FEATURE_TOL


def test_visibility_on_the_margin_is_counted_not_failed(exported):
    """A zero visibility head puts every part logit exactly on the threshold: compared with the export of
    the original head, the parts that differ are all on the margin, so they are counted and allowed."""
    cfg, model, _, path = exported
    zero = make_model(cfg, 5).eval()
    zero.load_state_dict(model.state_dict())
    torch.nn.init.zeros_(zero.visb_pred.classifier.weight)
    batch = random_batches(cfg, (2,), seed=5)
    check = verify_onnx(zero, onnx_session(path), batch, flip=False)
    visible_in_export = int(EvalModel(model)(batch[0])[1][:, 1:].sum())
    assert visible_in_export > 0  # otherwise nothing differs and the test says nothing
    assert check.vis_margin == 2 * model.num_parts and check.vis_margin_differ == visible_in_export
    assert check.max_abs_diff <= FEATURE_TOL and check.ok


def test_export_check_decision():
    base = dict(images=2, batch_sizes=[2], vis_total=12, vis_margin=2)
    assert ExportCheck(max_abs_diff=1e-6, vis_equal=12, vis_margin_differ=0, **base).ok
    assert ExportCheck(max_abs_diff=1e-6, vis_equal=10, vis_margin_differ=2, **base).ok  # both on the margin
    assert not ExportCheck(max_abs_diff=1e-6, vis_equal=11, vis_margin_differ=0, **base).ok  # off the margin
    assert not ExportCheck(max_abs_diff=2e-4, vis_equal=12, vis_margin_differ=0, **base).ok
    assert ExportCheck(max_abs_diff=2e-4, vis_equal=12, vis_margin_differ=0, tolerance=5e-4, **base).ok  # --atol
