"""Parity of the model with the reference TSD (../shared/parity): eval outputs and intermediates, the
masked part decoder, ImageNet-weight loading, the real-size state-dict layout and the train-mode outputs.

Every test loops over the fixture files present and reads all settings from each file's ``config``.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from model import make_model
from model.decoder import PartDecoder
from tests.parity import PARITY_DIR, cfg_from_parity, fixture_masks, fixture_state_dict, load_fixture, parity_files

CLOSE = dict(rtol=1e-4, atol=1e-4)  # features, logits, decoder outputs, intermediates
ATTN = dict(rtol=0, atol=1e-5)  # attention maps, probabilities


def build(c: dict, **overrides) -> nn.Module:
    """The model of a fixture ``config`` (random init unless overridden)."""
    return make_model(cfg_from_parity(c, **overrides), c["num_classes"], c["camera_num"], c["view_num"])


@contextlib.contextmanager
def capture(module: nn.Module) -> Iterator[list]:
    """Record the output of every call of ``module`` while the block runs."""
    calls: list = []
    handle = module.register_forward_hook(lambda _m, _i, out: calls.append(out))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("path", parity_files("model_eval_*.pt"))
def test_model_eval(path):
    fx = load_fixture(path)
    model = build(fx["config"])
    assert list(model.state_dict()) == fx["state_dict_keys"]
    model.load_state_dict(fx["state_dict"], strict=True)
    model.eval()
    with torch.no_grad(), capture(model.base) as base, capture(model.b1) as b1, capture(model.part_decoder) as dec:
        feats, vis, attn = model(fx["images"].float(), cam_label=fx["cam_label"], view_label=fx["view_label"],
                                 return_attn=True)
        exp = fx["expected"]
        torch.testing.assert_close(feats, exp["features"], **CLOSE)
        assert torch.equal(vis, exp["visibility"])
        torch.testing.assert_close(attn, exp["cross_attn"], **ATTN)
        torch.testing.assert_close(dec[0][0], exp["student_query"], **CLOSE)
        torch.testing.assert_close(model.visb_pred(dec[0][0][:, 1:])[..., 0], exp["visb_logits"], **CLOSE)
        optional = {
            "backbone_out": lambda: base[0],
            "b1_out": lambda: b1[0],
            "pixel_logits": lambda: model.pixel_classifier(b1[0][:, 1:]),
        }
        for key, ours in optional.items():
            if exp.get(key) is not None:
                torch.testing.assert_close(ours(), exp[key], **CLOSE, msg=key)


@pytest.mark.parametrize("path", parity_files("decoder_masked_*.pt"))
def test_decoder_masked(path):
    fx = load_fixture(path)
    c = fx["config"]
    decoder = PartDecoder(c["embed_dim"], c["decoder_heads"], c["decoder_ffn_dim"])
    decoder.load_state_dict({k.removeprefix("part_decoder."): v for k, v in fx["state_dict"].items()}, strict=True)
    mask = fx["attn_mask"]
    with torch.no_grad():
        masked = decoder(fx["query"], fx["memory"], mask)
        unmasked = decoder(fx["query"], fx["memory"])
    for (query, attn), exp in ((masked, fx["expected_masked"]), (unmasked, fx["expected_unmasked"])):
        torch.testing.assert_close(query, exp["query"], **CLOSE)
        torch.testing.assert_close(attn, exp["cross_attn"], **ATTN)
    attn, num_keys = masked[1], mask.shape[-1]
    for b, q in fx["fully_masked_rows"]:  # no allowed key: exactly uniform, never NaN
        assert torch.equal(attn[b, :, q], torch.full_like(attn[b, :, q], 1.0 / num_keys))
    for b, q in fx["fully_unmasked_rows"]:
        torch.testing.assert_close(attn[b, :, q], unmasked[1][b, :, q], rtol=0, atol=1e-7)
    for b, q, key in fx["single_key_rows"]:
        assert torch.equal(attn[b, :, q, key], torch.ones_like(attn[b, :, q, key]))
    partial = (mask.sum(-1, keepdim=True) > 0) & (mask == 0)  # hidden keys of rows with an allowed key
    assert torch.all(attn.masked_select(partial.unsqueeze(1).expand_as(attn)) == 0)


@pytest.mark.parametrize("path", parity_files("pretrained_*.pt"))
def test_pretrained_loading(path):
    fx = load_fixture(path)
    for name, ck in fx["checkpoints"].items():
        file = os.path.join(PARITY_DIR, ck["file"])
        model = build(fx["config"], **{"MODEL.PRETRAIN_CHOICE": "imagenet", "MODEL.PRETRAIN_PATH": file})
        ours = model.state_dict()
        for key, ref in ck["expected"].items():
            if key == "base.pos_embed":  # resampled to the patch grid
                torch.testing.assert_close(ours[key], ref, rtol=0, atol=1e-6, msg=f"{name}: {key}")
            else:
                assert torch.equal(ours[key], ref), f"{name}: {key}"
        source = torch.load(file, map_location="cpu", weights_only=True)
        source = source.get("model", source)
        for key in ck["keys_copied_verbatim"]:
            assert torch.equal(ours[f"base.{key}"], source[key]), f"{name}: {key}"


@pytest.mark.parametrize("path", parity_files("state_dict_layout_*.json"))
def test_state_dict_layout(path):
    with open(path) as f:
        layout = json.load(f)
    with torch.device("meta"):  # real-size model without allocating or initialising weights
        model = build(layout["config"])
    params = dict(model.named_parameters())
    state = model.state_dict(keep_vars=True)
    assert list(state) == [e["key"] for e in layout["keys"]]
    for e in layout["keys"]:
        t = state[e["key"]]
        kind = "parameter" if e["key"] in params else "buffer"
        assert (list(t.shape), str(t.dtype).removeprefix("torch."), kind, t.requires_grad) == (
            e["shape"], e["dtype"], e["kind"], e["trainable"]
        ), e["key"]  # fmt: skip
    trainable = [p for p in params.values() if p.requires_grad]
    assert len(state) == layout["num_keys"]
    assert len(trainable) == layout["num_trainable_tensors"]
    assert len(params) == layout["num_parameter_tensors"]
    assert len(state) - len(params) == layout["num_buffers"]
    assert sum(p.numel() for p in trainable) == layout["trainable_parameters"]
    assert sum(p.numel() for p in params.values()) == layout["total_parameters_incl_frozen"]
    assert sorted(n for n, p in params.items() if not p.requires_grad) == sorted(layout["frozen_parameters"])


@pytest.mark.parametrize("path", parity_files("train_step_*.pt"))
def test_train_step_outputs(path):
    """Train-mode forward with the recorded uniform draws (``teacher_noise=U``) gives the reference outputs."""
    fx = load_fixture(path)
    model = build(fx["config"])
    model.load_state_dict(fixture_state_dict(fx), strict=True)
    model.train()
    with torch.no_grad(), capture(model.part_decoder) as passes:
        out = model(
            fx["images"].float(), fx["labels"], fixture_masks(fx),
            cam_label=fx["cam_label"], view_label=fx["view_label"], teacher_noise=fx["U"],
        )  # fmt: skip
    ref = fx["outputs"]
    assert list(out["cls_score"]) == list(ref["cls_score"])  # global, cat, cat_m, aux[, fg]
    pairs = [(out["cls_score"][k], ref["cls_score"][k], f"cls_score.{k}") for k in ref["cls_score"]]
    pairs += [(out["feat"][k], ref["feat_dict"][k], f"feat.{k}") for k in ref["feat_dict"]]
    pairs += [(out[k], ref[k], k) for k in ("visb_logits", "pixel_logits")]
    for ours, theirs, name in pairs:
        torch.testing.assert_close(ours, theirs, **CLOSE, msg=name)
    for k in ("visb_targets", "mask_targets"):
        assert torch.equal(out[k], ref[k]), k
    probs = out["pixel_logits"].softmax(-1)
    torch.testing.assert_close(probs, fx["pixel_probs"], **ATTN)
    assert torch.equal(model.teacher_mask(probs, fx["U"]), fx["teacher_attn_mask"])
    (student, student_attn), (teacher, teacher_attn) = passes
    optional = {
        "student_query_out": (student, CLOSE), "teacher_query_out": (teacher, CLOSE),
        "student_cross_attn": (student_attn, ATTN), "teacher_cross_attn": (teacher_attn, ATTN),
    }  # fmt: skip
    for key, (ours, tol) in optional.items():
        if fx.get(key) is not None:
            torch.testing.assert_close(ours, fx[key], **tol, msg=key)
