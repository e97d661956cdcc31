"""Behaviour of the model package beyond the reference fixtures: checkpoints, errors, SIE, the ViT
baseline, the backbone's attention paths and the teacher mask. Tiny backbone unless stated."""
from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.nn.functional as F

from config import get_cfg_defaults, load_cfg
from model import TSD, ViTReID, fused_attention, make_model
from model.backbones.vit_pytorch import TransReID, ViTSpec, build_transreid
from model.decoder import MaskedMultiheadAttention
from tests.parity import REPO
from utils.errors import CheckpointError, ConfigError

GROUPING = {8: "eight", 5: "five", 3: "three", 1: "one"}


def tiny_cfg(**overrides):
    """Tiny TSD config (C 64, depth 3), random init, 256x128, stride 16, 5 parts, fore head."""
    cfg = get_cfg_defaults()
    cfg.MODEL.TRANSFORMER_TYPE = "vit_tiny_patch16_TransReID"
    cfg.MODEL.PRETRAIN_CHOICE = "none"
    cfg.MODEL.DROP_PATH = 0.0
    cfg.MODEL.WITH_FORE_HEAD = True
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.SIZE_TRAIN = cfg.INPUT.SIZE_TEST = [256, 128]
    for key, value in overrides.items():
        section, name = key.split("__")
        cfg[section][name] = value
    if "MODEL__NUM_PARTS" in overrides:
        cfg.INPUT.MASK_PREPROCESS = GROUPING[overrides["MODEL__NUM_PARTS"]]
    return cfg


def tiny(num_classes: int = 7, camera_num: int = 8, view_num: int = 1, **overrides):
    torch.manual_seed(0)
    return make_model(tiny_cfg(**overrides), num_classes, camera_num, view_num)


def images(b: int = 4, h: int = 256, w: int = 128) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1))


def soft_masks(b: int, parts: int, h: int = 256, w: int = 128) -> torch.Tensor:
    logits = torch.randn(b, parts + 1, h // 16, w // 16, generator=torch.Generator().manual_seed(2))
    return F.interpolate(15 * logits, size=(h, w), mode="nearest").softmax(dim=1)


def eval_out(model, x, **kw):
    model.eval()
    with torch.no_grad():
        return model(x, **kw)


# ----------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("parts,fore,size,stride", [(5, True, (256, 128), (16, 16)), (3, False, (384, 128), (12, 12))])
def test_tsd_output_shapes(parts, fore, size, stride):
    model = tiny(MODEL__NUM_PARTS=parts, MODEL__WITH_FORE_HEAD=fore, INPUT__SIZE_TRAIN=list(size),
                 MODEL__STRIDE_SIZE=list(stride))
    n = ((size[0] - 16) // stride[0] + 1) * ((size[1] - 16) // stride[1] + 1)
    x, b, c = images(4, *size), 4, 64
    feats, vis, attn = eval_out(model, x, return_attn=True)
    assert feats.shape == (b, 1 + parts, c) and vis.shape == (b, 1 + parts) and attn.shape == (b, 8, parts + 1, n)
    assert torch.all(vis[:, 0] == 1) and set(vis.unique().tolist()) <= {0.0, 1.0}
    model.train()
    out = model(x, torch.arange(b), soft_masks(b, parts, *size))
    assert list(out["cls_score"]) == ["global", "cat", "cat_m", "aux"] + (["fg"] if fore else [])
    assert all(s.shape == (b, 7) for s in out["cls_score"].values())
    assert out["feat"]["global"].shape == (b, c)
    assert all(out["feat"][k].shape == (b, parts, c) for k in ("part", "part_m", "part_md", "aux"))
    assert out["visb_logits"].shape == out["visb_targets"].shape == (b, parts)
    assert out["visb_targets"].dtype == torch.float32
    assert out["pixel_logits"].shape == (b, n, parts + 1)
    assert out["mask_targets"].shape == (b, n) and out["mask_targets"].dtype == torch.int64


def test_vit_baseline():
    model = tiny(MODEL__ARCH="vit")
    assert type(model) is ViTReID
    assert {k.split(".")[0] for k in model.state_dict()} == {"base", "b1", "classifier", "bottleneck"}
    x = images(3)
    feats, vis = eval_out(model, x)
    assert feats.shape == (3, 1, 64) and torch.equal(vis, torch.ones(3, 1))
    model.train()
    out = model(x, torch.arange(3), masks=None)
    assert list(out) == ["cls_score", "feat"] and list(out["cls_score"]) == ["global"]
    assert out["cls_score"]["global"].shape == (3, 7) and out["feat"]["global"].shape == (3, 64)
    with pytest.raises(ConfigError, match="MODEL.ARCH tsd"):
        model(x, return_attn=True)


def test_real_size_tsd_layout_from_official_config():
    """ViT-B/16 TSD with the official config: the reference's 231 state-dict keys and parameter count."""
    cfg = load_cfg(os.path.join(REPO, "configs", "OCC_Duke", "vit_base.yml"), ["MODEL.PRETRAIN_CHOICE", "none"])
    with torch.device("meta"):
        model = make_model(cfg, 702, 8, 1)
    state = model.state_dict()
    assert len(state) == 231
    assert state["query_embedding.weight"].shape == (6, 768) and state["classifier_part.weight"].shape == (702, 3840)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 109_550_056
    assert not any(k.endswith(("ls1.gamma", "q_norm.weight", "k_norm.weight")) for k in state)


# ----------------------------------------------------------------------------------------------- teacher


def test_teacher_noise_controls_the_teacher_mask():
    model = tiny()
    model.train()
    x, masks = images(4), soft_masks(4, 5)
    shape = (4, 128, 6)
    # U = 0 opens every token to every query (probabilities > 0): the teacher equals the student.
    out = model(x, masks=masks, teacher_noise=torch.zeros(shape))
    torch.testing.assert_close(out["feat"]["aux"], out["feat"]["part"], rtol=0, atol=0)
    # U = 1 hides everything: each teacher query averages all tokens, so it differs from the student.
    out = model(x, masks=masks, teacher_noise=torch.ones(shape))
    assert not torch.allclose(out["feat"]["aux"], out["feat"]["part"])
    probs = torch.tensor([[[0.2, 0.8], [0.6, 0.4]]])
    mask = TSD.teacher_mask(probs, torch.tensor([[[0.1, 0.9], [0.7, 0.3]]]))
    assert torch.equal(mask, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))  # (B, P+1, N): U < probs, transposed


def test_masked_attention_replaces_logits():
    attn = MaskedMultiheadAttention(16, 2, add_identity=False)
    q, kv = torch.randn(1, 3, 16), torch.randn(1, 5, 16)
    mask = torch.tensor([[[0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]]], dtype=torch.bool)
    _, weights = attn(q, kv, kv, mask)
    assert torch.equal(weights[0, :, 0], torch.full((2, 5), 0.2))  # fully masked: uniform, no NaN
    assert torch.equal(weights[0, :, 2], torch.tensor([[0.0, 0, 1, 0, 0]] * 2))
    torch.testing.assert_close(weights[0, :, 1], attn(q, kv, kv)[1][0, :, 1])


# ----------------------------------------------------------------------------------------------- SIE


def test_sie_camera_and_view():
    model = tiny(MODEL__SIE_CAMERA=True, camera_num=4)
    assert model.state_dict()["base.sie_embed"].shape == (4, 1, 64)
    x = images(2).repeat(2, 1, 1, 1)
    feats, _ = eval_out(model, x, cam_label=torch.tensor([0, 0, 1, 1]))
    assert not torch.allclose(feats[:2], feats[2:])  # same images, other cameras
    with pytest.raises(ValueError, match="cam_label"):
        eval_out(model, x)
    both = tiny(MODEL__SIE_CAMERA=True, MODEL__SIE_VIEW=True, camera_num=3, view_num=2)
    base = both.base
    assert base.sie_embed.shape == (6, 1, 64)
    seen = []
    base.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    eval_out(both, x[:1], cam_label=torch.tensor([2]), view_label=torch.tensor([1]))
    tokens = torch.cat((base.cls_token, base.patch_embed(x[:1])), 1) + base.pos_embed
    torch.testing.assert_close(seen[0], tokens + base.sie_coe * base.sie_embed[2 * 2 + 1])  # cam * views + view
    assert "base.sie_embed" not in tiny(MODEL__SIE_CAMERA=False).state_dict()


# ----------------------------------------------------------------------------------------------- backbone


def test_backbone_attention_paths_and_scale():
    spec = ViTSpec(64, 2, 4, 2.0, False, qk_scale=0.05)
    torch.manual_seed(0)
    vit = TransReID(spec, (64, 32), (16, 16), local_feature=False).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fused = vit(x)
        with fused_attention(vit, False):
            assert not any(b.attn.fused_attn for b in vit.blocks)
            explicit = vit(x)
        assert all(b.attn.fused_attn for b in vit.blocks)
        torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
        assert fused.shape == (2, 64)  # global mode: normed cls token
        # vit_small-style custom temperature (qk_scale 0.05 instead of 16 ** -0.5), written out
        attn, t = vit.blocks[0].attn, torch.randn(2, 5, 64)
        q, k, v = attn.qkv(t).reshape(2, 5, 3, 4, 16).permute(2, 0, 3, 1, 4)
        manual = attn.proj(((q @ k.transpose(-2, -1) * 0.05).softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 64))
        torch.testing.assert_close(attn(t), manual, rtol=1e-5, atol=1e-6)


def test_backbone_rejects_other_input_size():
    model = tiny()
    with pytest.raises(ConfigError, match="INPUT.SIZE_TEST"):
        eval_out(model, images(1, 384, 128))


def test_unknown_transformer_type():
    with pytest.raises(ConfigError, match="vit_base_patch16_224_TransReID"):
        build_transreid("vit_huge", (256, 128), (16, 16))


def _imagenet_file(path: str, width: int = 64, distilled: bool = False) -> dict:
    """A timm-style 224x224 ViT file for the tiny backbone (optionally DeiT-distilled in a 'model' wrapper)."""
    torch.manual_seed(3)
    state = build_transreid("vit_tiny_patch16_TransReID", (224, 224), (16, 16)).state_dict() if width == 64 else {
        "cls_token": torch.zeros(1, 1, width), "blocks.0.norm1.weight": torch.ones(width),
    }  # fmt: skip
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    state["head.weight"] = torch.randn(1000, width)
    if distilled:
        pos = state["pos_embed"]
        state["pos_embed"] = torch.cat((pos[:, :1], torch.randn(1, 1, width), pos[:, 1:]), dim=1)
        state["dist_token"] = torch.randn(1, 1, width)
        state = {"model": state}
    torch.save(state, path)
    return state


@pytest.mark.parametrize("distilled", [False, True])
def test_imagenet_loading(tmp_path, caplog, distilled):
    # the name says nothing about distillation: the 198-token pos_embed does
    path = str(tmp_path / "vit_tiny_in1k.pth")
    src = _imagenet_file(path, distilled=distilled)
    src = src.get("model", src)
    with caplog.at_level(logging.INFO, logger="tsd"):
        model = tiny(MODEL__PRETRAIN_CHOICE="imagenet", MODEL__PRETRAIN_PATH=path)
    state = model.state_dict()
    assert torch.equal(state["base.blocks.2.attn.qkv.weight"], src["blocks.2.attn.qkv.weight"])
    assert torch.equal(state["b1.0.attn.qkv.weight"], src["blocks.2.attn.qkv.weight"])  # copied after loading
    assert torch.equal(state["b1.1.weight"], src["norm.weight"])
    grid = src["pos_embed"][:, 2:] if distilled else src["pos_embed"][:, 1:]
    grid = grid.reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(16, 8), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(state["base.pos_embed"], torch.cat((src["pos_embed"][:, :1], resized), 1),
                               rtol=0, atol=1e-6)
    assert "pos_embed resampled 14x14 -> 16x8" in caplog.text and "head.weight" in caplog.text
    assert ("distillation token dropped" in caplog.text) == distilled


def test_imagenet_errors(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match=r"nope\.pth.*jx_vit_base_p16_224-80ecf9dd.*PRETRAIN_CHOICE none"):
        tiny(MODEL__PRETRAIN_CHOICE="imagenet", MODEL__PRETRAIN_PATH=missing)
    wide = str(tmp_path / "wide.pth")
    _imagenet_file(wide, width=384)
    with pytest.raises(CheckpointError, match=r"wide\.pth.*width 384.*64.*deit_small_patch16_224_TransReID"):
        tiny(MODEL__PRETRAIN_CHOICE="imagenet", MODEL__PRETRAIN_PATH=wide)
    other = str(tmp_path / "other.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a ViT checkpoint"):
        tiny(MODEL__PRETRAIN_CHOICE="imagenet", MODEL__PRETRAIN_PATH=other)
    tsd = str(tmp_path / "tsd.pth")
    torch.save(tiny().state_dict(), tsd)
    with pytest.raises(CheckpointError, match="PRETRAIN_CHOICE self"):
        tiny(MODEL__PRETRAIN_CHOICE="imagenet", MODEL__PRETRAIN_PATH=tsd)


# ----------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("wrap", ["flat", "module", "trainer"])
def test_save_and_strict_reload(tmp_path, wrap):
    model = tiny(MODEL__SIE_CAMERA=True)
    x, cams = images(3), torch.tensor([0, 3, 7])
    expected = eval_out(model, x, cam_label=cams, return_attn=True)
    state = model.state_dict()
    if wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "trainer":
        state = {"model": state, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}}
    path = str(tmp_path / "ckpt.pth")
    torch.save(state, path)
    torch.manual_seed(123)
    fresh = make_model(tiny_cfg(MODEL__SIE_CAMERA=True, MODEL__PRETRAIN_CHOICE="self", MODEL__PRETRAIN_PATH=path),
                       7, 8, 1)
    for ours, ref in zip(eval_out(fresh, x, cam_label=cams, return_attn=True), expected):
        assert torch.equal(ours, ref)
    assert all(torch.equal(v, state_v) for v, state_v in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_reload_with_other_number_of_classes(tmp_path, caplog):
    model = tiny(num_classes=7)
    path = str(tmp_path / "ckpt.pth")
    torch.save(model.state_dict(), path)
    other = tiny(num_classes=11)
    with caplog.at_level(logging.INFO, logger="tsd"):
        other.load_param(path)
    assert "classifier_part.weight" in caplog.text and "7 classes in the file" in caplog.text
    x = images(2)
    for ours, ref in zip(eval_out(other, x), eval_out(model, x)):
        assert torch.equal(ours, ref)
    assert torch.equal(other.pixel_classifier.classifier.weight, model.pixel_classifier.classifier.weight)


def test_bad_checkpoints(tmp_path):
    model = tiny()
    good = str(tmp_path / "good.pth")
    torch.save(model.state_dict(), good)
    truncated = str(tmp_path / "truncated.pth")
    with open(good, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[: os.path.getsize(good) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth.*truncated"):
        model.load_param(truncated)
    with pytest.raises(CheckpointError, match=r"missing\.pth not found"):
        model.load_param(str(tmp_path / "missing.pth"))
    foreign = str(tmp_path / "resnet.pth")
    torch.save({"conv1.weight": torch.zeros(3), "fc.weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match=r"resnet\.pth is not a TSD checkpoint"):
        model.load_param(foreign)
    imagenet = str(tmp_path / "in1k.pth")
    _imagenet_file(imagenet)
    with pytest.raises(CheckpointError, match="MODEL.PRETRAIN_CHOICE imagenet"):
        model.load_param(imagenet)
    eight = str(tmp_path / "eight.pth")
    torch.save(tiny(MODEL__NUM_PARTS=8).state_dict(), eight)
    with pytest.raises(CheckpointError) as err:
        model.load_param(eight)
    message = str(err.value)
    assert "eight.pth" in message and "8-part decoder tensors (query_embedding.weight (9,64))" in message
    assert "NUM_PARTS 5: set MODEL.NUM_PARTS 8 INPUT.MASK_PREPROCESS eight" in message and "\n" not in message
    no_fg = str(tmp_path / "nofg.pth")
    torch.save(tiny(MODEL__WITH_FORE_HEAD=False).state_dict(), no_fg)
    with pytest.raises(CheckpointError, match=r"WITH_FORE_HEAD False.*missing: bottleneck_fg.weight"):
        model.load_param(no_fg)
    with pytest.raises(CheckpointError, match="set MODEL.ARCH tsd"):
        tiny(MODEL__ARCH="vit").load_param(good)


def test_amp_bf16_forward():
    model = tiny()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(2), masks=soft_masks(2, 5))
    assert all(torch.isfinite(s).all() for s in out["cls_score"].values())
    assert torch.isfinite(out["feat"]["aux"]).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_part_pooling_stays_float32_under_autocast_as_the_references(dtype):
    """The reference pools parts with an elementwise product and sum, float32 under autocast; ours is one
    matmul with autocast off: float32 too, equal up to summation order (a low-precision matmul is not)."""
    from model.heads import global_weighted_pooling

    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 128, 64, generator=g) * 4 + 3
    weights = torch.rand(2, 128, 5, generator=g).softmax(-1)
    elementwise = (weights.unsqueeze(-1) * features.unsqueeze(2)).sum(1) / weights.sum(1).unsqueeze(-1)
    with torch.autocast("cpu", dtype=dtype):
        pooled = global_weighted_pooling(features, weights)
        low = (weights.transpose(1, 2) @ features) / weights.sum(1).unsqueeze(-1)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, elementwise, rtol=1e-6, atol=1e-5)
    assert (low.float() - elementwise).abs().max() > 1e-3
