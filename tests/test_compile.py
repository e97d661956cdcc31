"""``SOLVER.COMPILE``: the inductor-compiled TSD model equals the eager one (train and eval forwards).

Slow-ish by nature: inductor compiles the tiny model's train forward + backward and its eval forward
(C++ codegen on the CPU, tens of seconds on 2 cores), so everything is checked in one test on one
small batch. The RNG inside the forward (teacher noise) is drawn as eager does (``fallback_random``).
"""
from __future__ import annotations

import copy

import pytest
import torch

from config import load_cfg
from loss import make_loss
from model import make_model
from processor.trainer import compile_model
from tests.test_train import tiny_cfg
from utils.errors import ConfigError


@pytest.mark.slow
def test_compiled_model_matches_eager_outputs_losses_and_gradients(tmp_path):
    import torch._inductor.config as inductor_config

    cfg = tiny_cfg(str(tmp_path), str(tmp_path), "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]")
    torch.manual_seed(0)
    eager = make_model(cfg, 4, 2, 1)
    compiled = compile_model(copy.deepcopy(eager), "default")
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their keys
    loss_fn = make_loss(cfg, 4)
    b, p = 8, cfg.MODEL.NUM_PARTS
    imgs, pids = torch.randn(b, 3, 64, 32), torch.arange(b) // 2
    masks = torch.randn(b, p + 1, 64, 32).softmax(1)
    cams, views = torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)

    def train_step(model):
        model.train()
        torch.manual_seed(1)  # the same teacher noise for both
        out = model(imgs, pids, masks, cam_label=cams, view_label=views)
        terms = loss_fn(out, pids)
        sum(terms.values()).backward()
        grads = {n: q.grad for n, q in model.named_parameters() if q.grad is not None}
        return out, terms, grads

    with inductor_config.patch(fallback_random=True):
        (out_e, terms_e, grads_e), (out_c, terms_c, grads_c) = train_step(eager), train_step(compiled)
    tol = {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(out_c["cls_score"], out_e["cls_score"], **tol)
    torch.testing.assert_close(out_c["feat"], out_e["feat"], **tol)
    assert list(terms_c) == list(terms_e)
    for k in terms_e:
        torch.testing.assert_close(terms_c[k], terms_e[k], **tol, msg=k)
    assert grads_c.keys() == grads_e.keys()
    for k in grads_e:
        torch.testing.assert_close(grads_c[k], grads_e[k], rtol=1e-3, atol=1e-5, msg=k)

    eager.eval(), compiled.eval()
    with torch.no_grad():
        feats_e, feats_c = eager(imgs, cam_label=cams), compiled(imgs, cam_label=cams)
    for a, c in zip(feats_e, feats_c):
        torch.testing.assert_close(c, a, **tol)


def test_unknown_compile_mode_is_a_config_error():
    with pytest.raises(ConfigError, match=r"SOLVER.COMPILE_MODE must be one of \['default', .*got 'fast'"):
        load_cfg(None, ["SOLVER.COMPILE_MODE", "fast"])
