"""tools/vis_attn.py, tools/vis_rank.py and tools/extract_features.py on the tiny synthetic
Occluded-Duke with a randomly initialised tiny TSD checkpoint (CPU)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from config import load_cfg
from config.parts import part_abbrev
from datasets import build_dataset
from datasets.bases import parse_pid_cam
from datasets.transforms import build_eval_transform
from evaluation import ReidEvaluator
from model import make_model
from processor.inference import extract_features
from tests.parity import REPO
from tools import extract_features as extract_tool
from tools import vis_attn, vis_rank
from tools._common import eval_loader, query_names
from utils.errors import CheckpointError, ConfigError, DataError

CONFIG = os.path.join(REPO, "configs", "demo", "tsd_tiny.yml")


def overrides(root: str, weight: str, out: str) -> list[str]:
    return ["DATASETS.ROOT_DIR", root, "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
            "TEST.WEIGHT", weight, "OUTPUT_DIR", out]


@pytest.fixture(scope="module")
def tiny(synthetic_root, tmp_path_factory):
    """``(cfg, model, weight path)``: a random tiny TSD saved as a plain state_dict.

    The visibility classifier gets larger weights than its N(0, 0.001²) init so that the predicted
    visibilities spread over (0, 1) and both visible and hidden parts occur.
    """
    cfg = load_cfg(CONFIG, overrides(synthetic_root, "", "") + ["MODEL.PRETRAIN_CHOICE", "none"])
    dataset = build_dataset(cfg.DATASETS.NAMES, cfg.DATASETS.ROOT_DIR)
    torch.manual_seed(0)
    model = make_model(cfg, dataset.num_train_pids, dataset.num_train_cams, dataset.num_train_views)
    torch.nn.init.normal_(model.visb_pred.classifier.weight, std=1.0)
    weight = str(tmp_path_factory.mktemp("tools_ckpt") / "tiny.pth")
    torch.save(model.state_dict(), weight)
    return cfg, model.eval(), weight


def reference_visibility(model, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sigmoid(visb logits) (B, P) and the student cross-attention, computed from the model's parts."""
    with torch.no_grad():
        tokens, _ = model.encode(imgs)
        student, attn = model.part_decoder(*model.decoder_inputs(tokens))
        return model.visb_pred(student[:, 1:])[..., 0].sigmoid(), attn


def png_shape(path: str) -> tuple[int, ...]:
    image = cv2.imread(path)
    assert image is not None, f"{path} is not a readable image"
    return image.shape


# ------------------------------------------------------------------------------------------- vis_attn


def test_attention_titles_label_each_part_with_its_own_visibility():
    assert vis_attn.attention_titles(["head", "arm"], [0.25, 0.75]) == [
        "background\nbg", "head\nvis 0.25 hidden", "arm\nvis 0.75 visible"]
    # 0.50 on the picture: the verdict says on which side of the threshold the value lies
    assert vis_attn.attention_titles(["torso", "leg"], [0.4996, 0.5004]) == [
        "background\nbg", "torso\nvis 0.50 hidden", "leg\nvis 0.50 visible"]
    with pytest.raises(ValueError):
        vis_attn.attention_titles(["head"], [0.1, 0.2])


def test_attention_and_visibility_match_the_model(tiny, synthetic_root):
    cfg, model, _ = tiny
    paths = [r.path for r in build_dataset("occ_duke", synthetic_root).query[:4]]
    imgs = torch.stack([build_eval_transform(cfg)(p) for p in paths])
    attn, probs = vis_attn.attention_and_visibility(model, imgs)
    want_probs, want_attn = reference_visibility(model, imgs)
    torch.testing.assert_close(probs, want_probs)
    torch.testing.assert_close(attn, want_attn)
    _, vis = model(imgs)  # the evaluation's binary visibility is the same probability thresholded
    assert torch.equal(vis[:, 1:], (probs > 0.5).float())
    maps = vis_attn.head_mean_attention(attn, model.base.num_y, model.base.num_x)
    assert maps.shape == (4, model.num_parts + 1, model.base.num_y, model.base.num_x)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(4, model.num_parts + 1))


@pytest.mark.slow
def test_vis_attn_writes_one_png_per_image_and_the_true_visibilities(tiny, synthetic_root, tmp_path):
    cfg, model, weight = tiny
    assert vis_attn.main(["--config_file", CONFIG, "--num", "3",
                          *overrides(synthetic_root, weight, str(tmp_path))]) == 0
    out = tmp_path / "vis_attn"
    query = build_dataset("occ_duke", synthetic_root).query[:3]
    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png") and p != "index.png")
    assert pngs == [f"{i:03d}_{os.path.splitext(os.path.basename(r.path))[0]}.png" for i, r in enumerate(query)]
    h, w, _ = png_shape(str(out / pngs[0]))
    assert w > 2 * h  # image + 6 overlays side by side
    assert png_shape(str(out / "index.png"))[0] > 2 * h  # the 3 images stacked
    written = json.loads((out / "visibility.json").read_text())
    imgs = torch.stack([build_eval_transform(cfg)(r.path) for r in query])
    want = reference_visibility(model, imgs)[0].numpy()
    assert list(written) == [r.path for r in query]
    assert all(list(v) == ["head", "arm", "torso", "leg", "feet"] for v in written.values())
    np.testing.assert_allclose([list(v.values()) for v in written.values()], want, rtol=1e-5, atol=1e-7)
    assert (want > 0.5).any() and (want < 0.5).any()  # the check above tells parts apart


@pytest.mark.slow
def test_vis_attn_own_images_and_baseline_refused(tiny, synthetic_root, tmp_path):
    _, _, weight = tiny
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    src = build_dataset("occ_duke", synthetic_root).gallery[0].path
    shutil.copy(src, folder / "sub" / "b.jpg")
    cv2.imwrite(str(folder / "a.png"), cv2.imread(src))
    out = tmp_path / "attn"
    args = ["--config_file", CONFIG, "--images", str(folder), "--out", str(out), *overrides(synthetic_root, weight, "")]
    assert vis_attn.main(args) == 0
    assert (sorted(json.loads((out / "visibility.json").read_text()))
            == [str(folder / "a.png"), str(folder / "sub" / "b.jpg")])
    with pytest.raises(ConfigError, match="MODEL.ARCH vit"):
        vis_attn.main(args + ["MODEL.ARCH", "vit"])


# ------------------------------------------------------------------------------------------- vis_rank


def test_pick_queries_mixes_failures_and_successes():
    cmc = np.array([[1], [0], [1], [0], [1], [1], [0]])
    valid = np.array([True, True, True, True, True, True, False])
    assert vis_rank.pick_queries({"valid": valid, "cmc": cmc}, 4) == [0, 1, 3, 5]  # 2 misses + 2 hits, spread
    assert vis_rank.pick_queries({"valid": valid, "cmc": cmc}, 5) == [0, 1, 3, 4, 5]  # only 2 misses: 3 hits
    assert vis_rank.pick_queries({"valid": valid, "cmc": cmc}, 10) == [0, 1, 2, 3, 4, 5]


def test_ranked_gallery_skips_removed_entries_stably():
    dist = np.array([0.3, 0.1, 0.2, 0.1, 0.5])
    removed = np.array([False, True, False, False, False])
    assert vis_rank.ranked_gallery(dist, removed, 3).tolist() == [3, 2, 0]
    g_pids, g_cams = np.array([1, 1, 1, 2]), np.array([0, 1, 1, 0])
    assert vis_rank.protocol_removed(1, 0, g_pids, g_cams, np.zeros(4, bool)).tolist() == [True, False, False, False]
    assert (vis_rank.protocol_removed(1, 0, g_pids, g_cams, np.array([0, 1, 0, 1], bool)).tolist()
            == [True, True, False, False])


@pytest.mark.slow
def test_vis_rank_draws_the_evaluator_ranking(tiny, synthetic_root, tmp_path):
    cfg, model, weight = tiny
    args = ["--config_file", CONFIG, "--num-queries", "4", "--topk", "5",
            *overrides(synthetic_root, weight, str(tmp_path))]
    assert vis_rank.main(args) == 0
    out = tmp_path / "vis_rank"
    assert len([p for p in os.listdir(out) if p.endswith(".png")]) == 4
    rankings = json.loads((out / "ranking.json").read_text())
    assert len(rankings) == 4

    dataset = build_dataset("occ_duke", synthetic_root)
    data = extract_features(model, eval_loader(cfg, dataset.query, dataset.gallery), "cpu")
    evaluator = ReidEvaluator.from_cfg(cfg, len(dataset.query))
    evaluator.update(data["feats"], data["vis"], data["pids"], data["camids"])
    distmat = evaluator.compute(return_distmat=True)[1].numpy()
    gallery = [r.path for r in dataset.gallery]
    for q_path, entries in rankings.items():
        qi = [r.path for r in dataset.query].index(q_path)
        q_pid, q_cam = parse_pid_cam(q_path, 8)
        kept = [j for j, p in enumerate(gallery) if parse_pid_cam(p, 8) != (q_pid, q_cam)]
        want = sorted(kept, key=lambda j: (distmat[qi, j], j))[:5]
        assert [e["path"] for e in entries] == [gallery[j] for j in want]
        np.testing.assert_allclose([e["distance"] for e in entries], distmat[qi, want], rtol=1e-6)
        assert [e["match"] for e in entries] == [parse_pid_cam(gallery[j], 8)[0] == q_pid for j in want]


def test_plot_ranking_layout(synthetic_root):
    paths = [r.path for r in build_dataset("occ_duke", synthetic_root).gallery[:4]]
    query = vis_rank.RankedImage(paths[0], np.array([1, 0, 1, 0, 1.0]), "query")
    gallery = [vis_rank.RankedImage(p, np.ones(5), f"#{i}", m)
               for i, (p, m) in enumerate(zip(paths[1:], (True, False, None)))]
    fig = vis_rank.plot_ranking(query, gallery, ["head", "arm", "torso", "leg", "feet"], (256, 128), "t")
    assert len(fig.axes) == 5  # query, gap, 3 gallery images
    letters = [t.get_text() for t in fig.axes[0].texts]
    assert letters == ["H", "A", "T", "L", "F"]
    legend = fig.get_supxlabel()  # what the strip, the frames and the numbers mean
    assert "H head, A arm, T torso, L leg, F feet; coloured = predicted visible" in legend
    assert "green same identity, red other identity" in legend and "lower = closer" in legend
    unknown = vis_rank.plot_ranking(query, gallery[2:], ["head", "arm", "torso", "leg", "feet"], (256, 128))
    assert "grey gallery (identities unknown)" in unknown.get_supxlabel()
    assert "UB upper body, LB lower body" in vis_rank.ranking_legend(["head", "upper_body", "lower_body"], True)
    assert [part_abbrev(n) for n in ("left_arm", "upper_body", "fg")] == ["LA", "UB", "F"]


# ------------------------------------------------------------------------------------ extract_features


@pytest.fixture
def own_images(synthetic_root, tmp_path):
    """``(images dir, gallery dir)``: 3 query crops (one a PNG in a sub-folder) and 6 gallery crops."""
    dataset = build_dataset("occ_duke", synthetic_root)
    images, gallery = tmp_path / "images", tmp_path / "gallery"
    (images / "more").mkdir(parents=True)
    gallery.mkdir()
    for r in dataset.query[:2]:
        shutil.copy(r.path, images / os.path.basename(r.path))
    cv2.imwrite(str(images / "more" / "c.png"), cv2.imread(dataset.query[2].path))
    for r in dataset.gallery[:6]:
        shutil.copy(r.path, gallery / os.path.basename(r.path))
    return str(images), str(gallery)


def test_extract_features_saves_features_and_evaluator_ranking(tiny, synthetic_root, own_images, tmp_path):
    cfg, model, weight = tiny
    images, gallery = own_images
    out = tmp_path / "feats"
    args = ["--config_file", CONFIG, "--images", images, "--gallery", gallery, "--out", str(out), "--topk", "4",
            *overrides(synthetic_root, weight, "")]
    assert extract_tool.main(args) == 0
    feats, vis = np.load(out / "features.npy"), np.load(out / "visibility.npy")
    paths = (out / "paths.txt").read_text().splitlines()
    parts, dim = model.num_parts, model.embed_dim
    assert feats.shape == (3, 1 + parts, dim) and vis.shape == (3, 1 + parts)
    assert paths == sorted(paths) and len(paths) == 3 and paths[-1].endswith(os.path.join("more", "c.png"))
    assert np.all(vis[:, 0] == 1) and set(np.unique(vis)) <= {0.0, 1.0}
    imgs = torch.stack([build_eval_transform(cfg)(p) for p in paths])
    with torch.no_grad():
        want_feats, want_vis = model(imgs)
    np.testing.assert_allclose(feats, want_feats.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(vis, want_vis.numpy())

    g_feats, g_vis = np.load(out / "gallery_features.npy"), np.load(out / "gallery_visibility.npy")
    g_paths = (out / "gallery_paths.txt").read_text().splitlines()
    assert g_feats.shape == (6, 1 + parts, dim) and len(g_paths) == 6
    # The evaluator itself on the saved features (distinct ids: it removes nothing).
    evaluator = ReidEvaluator(3, feat_norm=cfg.TEST.FEAT_NORM == "yes")
    evaluator.update(torch.from_numpy(np.concatenate([feats, g_feats])), torch.from_numpy(np.concatenate([vis, g_vis])),
                     list(range(9)), [0] * 9)
    distmat = evaluator.compute(return_distmat=True)[1].numpy()
    rankings = json.loads((out / "ranking.json").read_text())
    assert list(rankings) == paths
    for i, p in enumerate(paths):
        want = np.argsort(distmat[i], kind="stable")[:4]
        assert [e["path"] for e in rankings[p]] == [g_paths[j] for j in want]
        np.testing.assert_allclose([e["distance"] for e in rankings[p]], distmat[i, want], rtol=1e-6)
    assert len(os.listdir(out / "ranking")) == 3


def test_extract_features_user_errors(tiny, synthetic_root, own_images, tmp_path):
    _, _, weight = tiny
    images, _ = own_images

    def run(folder: str, weight_path: str = weight):
        extract_tool.main(["--config_file", CONFIG, "--images", folder, "--out", str(tmp_path / "o"),
                           *overrides(synthetic_root, weight_path, "")])

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"no images .* under {empty}"):
        run(str(empty))
    with pytest.raises(DataError, match="does not exist"):
        run(str(tmp_path / "missing"))
    bad = os.path.join(images, "broken.jpg")
    with open(bad, "w") as f:
        f.write("not a jpeg")
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        run(images)
    with pytest.raises(CheckpointError, match="nope.pth does not exist"):
        run(images, str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="--topk came after"):
        extract_tool.main(["--config_file", CONFIG, "--images", images, "TEST.WEIGHT", weight, "--topk", "3"])


@pytest.mark.slow
def test_tools_read_the_run_config_beside_the_weight(tiny, synthetic_root, own_images, tmp_path, monkeypatch):
    """Without --config_file the tools take the run's config.yaml beside TEST.WEIGHT (or beside --onnx);
    extract_features writes into logs/features/<images folder> of the current folder, not the run's."""
    cfg, _, weight = tiny
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(weight, run / "transformer_1.pth")
    saved = cfg.clone()
    saved.defrost()
    saved.OUTPUT_DIR = str(run)
    (run / "config.yaml").write_text(saved.dump())
    w = str(run / "transformer_1.pth")
    assert vis_attn.main(["--num", "2", "TEST.WEIGHT", w]) == 0
    assert len(json.loads((run / "vis_attn" / "visibility.json").read_text())) == 2
    assert vis_rank.main(["--num-queries", "2", "--topk", "3", "TEST.WEIGHT", w, "TEST.FLIP_FEATS", "True"]) == 0
    assert len(json.loads((run / "vis_rank" / "ranking.json").read_text())) == 2
    monkeypatch.chdir(tmp_path)
    images, _ = own_images
    before = sorted(os.listdir(run))
    assert extract_tool.main(["--images", images, "TEST.WEIGHT", w]) == 0
    assert np.load(tmp_path / "logs" / "features" / os.path.basename(images) / "features.npy").shape[0] == 3
    assert sorted(os.listdir(run)) == before
    # A weight file without config.yaml (the original code's): --config_file is needed, and said so.
    with pytest.raises(ConfigError, match=r"tiny.pth has no config.yaml beside it .* add --config_file"):
        vis_rank.main(["TEST.WEIGHT", weight])
    with pytest.raises(CheckpointError, match="no checkpoint given: add TEST.WEIGHT"):
        vis_rank.main([])


@pytest.mark.slow
def test_scripts_run_from_the_repo_root_and_print_one_error_line(tmp_path):
    """As a script: repo root importable, run_main turns the missing checkpoint into one stderr line."""
    proc = subprocess.run(
        [sys.executable, "tools/vis_rank.py", "--config_file", CONFIG, "TEST.WEIGHT", str(tmp_path / "nope.pth")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: TEST.WEIGHT {tmp_path / 'nope.pth'} does not exist; "
                                                "check the path (training writes OUTPUT_DIR/transformer_<epoch>.pth)"]


def test_query_names_follow_the_grouping(tiny):
    cfg, _, _ = tiny
    assert query_names(cfg) == ["head", "arm", "torso", "leg", "feet"]
    eight = load_cfg(CONFIG, ["INPUT.MASK_PREPROCESS", "eight"])  # MODEL.NUM_PARTS 8 follows
    assert [part_abbrev(n) for n in query_names(eight)] == ["H", "LA", "RA", "T", "LL", "RL", "LF", "RF"]
