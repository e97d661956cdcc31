"""ONNX export of the evaluation model, its check against PyTorch with onnxruntime, and feature extraction
through onnxruntime.

The exported graph is exactly what :func:`processor.inference.extract_features` computes per batch:
normalised images (B, 3, H, W) -> ``features`` (B, 1+P, C) and ``visibility`` (B, 1+P), the test-time
flip included when ``TEST.FLIP_FEATS`` is on. The batch axis is dynamic; H, W are ``INPUT.SIZE_TEST``.

``onnx``, ``onnxruntime`` and ``onnxscript`` (torch's exporter needs it) are optional dependencies
(``requirements-export.txt``); they are imported only when a function here needs them.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export). The legacy TorchScript exporter traces
Python shape arithmetic into constants: for TSD it bakes the example batch size into the
``visibility`` concat (``new_ones(B, 1)``), so the file fails on any other batch size although it
declares the axis dynamic. torch.export keeps the batch size symbolic and checks that the graph is
valid for every batch size in range.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from yacs.config import CfgNode

from config.parts import token_names
from utils.errors import ConfigError, TSDError

from .inference import _features

__all__ = [
    "ExportError", "EvalModel", "OnnxModel", "ExportCheck", "export_onnx", "onnx_session", "onnx_metadata",
    "file_metadata", "load_onnx_model", "verify_onnx", "random_batches", "FEATURE_TOL", "LOGIT_MARGIN",
]

INPUT_NAME = "images"
OUTPUT_NAMES = ("features", "visibility")
FEATURE_TOL = 1e-4
# Visibility is ``sigmoid(logit) > 0.5``. A part whose PyTorch logit lies within this distance of 0 can
# land on either side in onnxruntime (other kernels, other summation order: logits differ by ~1e-6);
# such parts are counted as "on the margin" and excluded from the must-be-identical check.
LOGIT_MARGIN = 1e-4
METADATA_PREFIX = "tsd."


class ExportError(TSDError):
    """The export cannot run (missing optional packages) or its result disagrees with PyTorch."""


def _require(*modules: str):
    """Import the optional export packages, or raise one line saying how to install them."""
    import importlib

    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        raise ExportError(f"{e.name} is not installed; ONNX export and onnxruntime inference need the optional "
                          "packages: .venv/bin/pip install -r requirements-export.txt") from e


class EvalModel(nn.Module):
    """The evaluation forward of a TSD / ViT-baseline model as one module: images -> (features, visibility).

    Args:
        model: the model, in eval mode (its eval forward returns ``(features, visibility)``).
        flip: average with the horizontally flipped images, as ``TEST.FLIP_FEATS`` does in evaluation.
    """

    def __init__(self, model: nn.Module, flip: bool = False) -> None:
        super().__init__()
        self.model = model
        self.flip = flip

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) normalised -> ``(features (B, 1+P, C), visibility (B, 1+P))``."""
        feats, vis = _features(self.model, images, None, self.flip)[:2]
        return feats, vis


def onnx_metadata(cfg: CfgNode) -> dict[str, str]:
    """What a deployment needs besides the graph, stored in the file's ``metadata_props`` (``tsd.*``):
    the input size and normalisation, whether the flip is in the graph, the feature normalisation the
    evaluator applies, the architecture and the part names (order of the 1+P tokens)."""
    meta = {
        "input_size": list(cfg.INPUT.SIZE_TEST),
        "pixel_mean": list(cfg.INPUT.PIXEL_MEAN),
        "pixel_std": list(cfg.INPUT.PIXEL_STD),
        "flip_feats": bool(cfg.TEST.FLIP_FEATS),
        "feat_norm": cfg.TEST.FEAT_NORM == "yes",
        "arch": cfg.MODEL.ARCH,
        "tokens": token_names(cfg.MODEL.ARCH, cfg.INPUT.MASK_PREPROCESS),
    }
    return {METADATA_PREFIX + k: json.dumps(v) for k, v in meta.items()}


def export_onnx(model: nn.Module, cfg: CfgNode, path: str, opset: int | None = None) -> str:
    """Export the evaluation model of ``model`` under ``cfg`` to the single file ``path``.

    Args:
        model: a TSD / ViT-baseline model with its weights loaded (put in eval mode here).
        cfg: the evaluation config: ``INPUT.SIZE_TEST``, ``TEST.FLIP_FEATS`` and the metadata.
        path: the ``.onnx`` file to write (weights inside, no external data file).
        opset: ONNX opset; default the exporter's.

    Returns:
        ``path``.

    Raises:
        ExportError: onnx / onnxscript missing.
    """
    _require("onnx", "onnxscript")
    wrapper = EvalModel(model.eval(), cfg.TEST.FLIP_FEATS).eval()
    h, w = cfg.INPUT.SIZE_TEST
    device = next(model.parameters()).device
    # Batch 2: torch.export specialises a dimension whose example size is 0 or 1.
    example = torch.randn(2, 3, h, w, device=device)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        # torch.export's own use of a deprecated pytree API; nothing a user can act on.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"images": {0: batch}}, opset_version=opset, verbose=False,
        )
    program.model.metadata_props.update(onnx_metadata(cfg))
    # One self-contained file: even ViT-B TSD (~0.4 GB) is far below protobuf's 2 GB limit.
    program.save(path, external_data=False)
    return path


def onnx_session(path: str, threads: int | None = None):
    """An onnxruntime CPU ``InferenceSession`` of ``path`` with ``threads`` intra-op threads (default
    torch's thread count, so that speed comparisons use the same cores).

    Raises:
        ExportError: onnxruntime missing, or ``path`` is not a readable ONNX file.
    """
    (ort,) = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only: the graph optimiser's notes are not for users
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own (pybind) exception types for unreadable files
        raise ExportError(f"{path} cannot be loaded by onnxruntime ({str(e).splitlines()[0][:200]}); "
                          "export it again with tools/export_onnx.py") from e


def file_metadata(session) -> dict:
    """The ``tsd.*`` metadata of an exported file (see :func:`onnx_metadata`), decoded; {} if absent."""
    props = session.get_modelmeta().custom_metadata_map
    return {k[len(METADATA_PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(METADATA_PREFIX)}


def load_onnx_model(path: str, cfg: CfgNode) -> OnnxModel:
    """The exported model at ``path`` as an :class:`OnnxModel`, checked against the config that feeds it.

    Raises:
        ExportError: no such file, onnxruntime missing or the file unreadable.
        ConfigError: the file was exported for another ``INPUT.SIZE_TEST``.
    """
    if not os.path.isfile(path):
        raise ExportError(f"ONNX file {path} does not exist; write it with tools/export_onnx.py")
    model = OnnxModel(onnx_session(path))
    size = model.metadata.get("input_size")
    if size is not None and list(size) != list(cfg.INPUT.SIZE_TEST):
        raise ConfigError(f"{path} takes {size[0]}x{size[1]} images but INPUT.SIZE_TEST is "
                          f"{cfg.INPUT.SIZE_TEST[0]}x{cfg.INPUT.SIZE_TEST[1]}; use the config it was exported with "
                          f"or add INPUT.SIZE_TEST '[{size[0]}, {size[1]}]'")
    return model


class OnnxModel(nn.Module):
    """An exported model run by onnxruntime behind the eval-model call signature, so that
    :func:`processor.inference.extract_features` runs it unchanged (with ``flip=False``: the flip, if
    any, is inside the graph).

    Args:
        session: from :func:`onnx_session`.
    """

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session
        self.metadata = file_metadata(session)

    def forward(self, x: torch.Tensor, cam_label: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) -> ``(features (B, 1+P, C), visibility (B, 1+P))`` on x's device; ``cam_label``
        is ignored (SIE models are not exported)."""
        feats, vis = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.detach().cpu().float().numpy()})
        return torch.from_numpy(feats).to(x.device), torch.from_numpy(vis).to(x.device)


@dataclasses.dataclass
class ExportCheck:
    """Outcome of :func:`verify_onnx`.

    Attributes:
        images: images compared; batch_sizes: the batch sizes run.
        max_abs_diff: max |features_onnx - features_torch| over all images and tokens.
        max_rel_diff: the largest difference of a token relative to its norm (what remains after the
            evaluator's L2 normalisation; informative, not checked).
        vis_equal: visibility entries (image x part) that are identical; vis_total: all entries.
        vis_margin: entries whose PyTorch visibility logit lies within ``LOGIT_MARGIN`` of the threshold
            (allowed to differ; counted in ``vis_total``).
        vis_margin_differ: of these, the ones that do differ.
    """

    images: int
    batch_sizes: list[int]
    max_abs_diff: float
    vis_equal: int
    vis_total: int
    vis_margin: int
    vis_margin_differ: int
    max_rel_diff: float = 0.0
    tolerance: float = FEATURE_TOL

    @property
    def ok(self) -> bool:
        """Features within ``tolerance`` and every visibility entry off the margin identical."""
        return self.max_abs_diff <= self.tolerance and self.vis_total - self.vis_equal == self.vis_margin_differ

    def summary(self) -> str:
        """One line for the log."""
        return (f"onnxruntime vs PyTorch on {self.images} images (batches {self.batch_sizes}): max abs feature "
                f"difference {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}; {self.max_rel_diff:.1e} of the "
                f"token's norm); visibility identical for "
                f"{self.vis_equal}/{self.vis_total} entries, {self.vis_margin} within {LOGIT_MARGIN:.0e} of the "
                f"threshold ({self.vis_margin_differ} of them differ)")


def _visibility_logits(model: nn.Module, images: torch.Tensor, flip: bool):
    """Run ``EvalModel(model, flip)`` on ``images`` and return its outputs plus the visibility logits
    (B, P) of each view (one per pass: two with ``flip``), captured at ``model.visb_pred``; no logits
    for the ViT baseline (its visibility is constant)."""
    captured: list[torch.Tensor] = []
    head = getattr(model, "visb_pred", None)
    handle = head.register_forward_hook(lambda m, i, o: captured.append(o[..., 0])) if head is not None else None
    try:
        with torch.no_grad():
            feats, vis = EvalModel(model, flip)(images)
    finally:
        if handle is not None:
            handle.remove()
    return feats, vis, captured


def verify_onnx(model: nn.Module, session, batches: Iterable[torch.Tensor], flip: bool,
                tolerance: float = FEATURE_TOL) -> ExportCheck:
    """Compare the exported model with PyTorch on every batch of ``batches``.

    Visibility on the margin: visibility is ``sigmoid(logit) > 0.5`` per part (averaged with the
    flipped view under ``flip``). Where a PyTorch logit of a view lies within ``LOGIT_MARGIN`` of 0,
    float rounding may flip the decision, and that entry may differ; all others must be identical.

    Args:
        model: the PyTorch model (eval mode, on the CPU or another device).
        session: the onnxruntime session of its export.
        batches: image batches (B, 3, H, W), normalised as the eval transform does.
        flip: whether the export includes the flip (``TEST.FLIP_FEATS``).
        tolerance: the largest max-abs feature difference that passes. Trained BNNecks with small
            running variances scale float32 rounding up (the demo checkpoint: 7e-5 on the global
            token, where PyTorch fp32 itself is 4e-5 from fp64), so a large model may need more.

    Returns:
        the :class:`ExportCheck` (the caller decides what to do with a failed one).
    """
    onnx_model = OnnxModel(session)
    device = next(model.parameters()).device
    n, sizes, max_diff, max_rel, equal, total, margin, margin_differ = 0, [], 0.0, 0.0, 0, 0, 0, 0
    for images in batches:
        images = images.to(device)
        feats, vis, logits = _visibility_logits(model, images, flip)
        o_feats, o_vis = onnx_model(images)
        diff = (o_feats.float() - feats.float()).abs()
        max_diff = max(max_diff, diff.max().item())
        max_rel = max(max_rel, (diff.amax(-1) / feats.float().norm(dim=-1).clamp_min(1e-12)).max().item())
        same = o_vis == vis
        near = torch.zeros_like(same)
        for view in logits:  # the global token (column 0) has no logit: it is always visible
            near[:, 1:] |= view.abs() <= LOGIT_MARGIN
        equal += int(same.sum())
        total += same.numel()
        margin += int(near.sum())
        margin_differ += int((near & ~same).sum())
        n += images.shape[0]
        sizes.append(images.shape[0])
    return ExportCheck(n, sizes, max_diff, equal, total, margin, margin_differ, max_rel, tolerance)


def random_batches(cfg: CfgNode, sizes: Sequence[int] = (1, 5), seed: int = 0) -> list[torch.Tensor]:
    """Standard-normal image batches of ``sizes`` at ``INPUT.SIZE_TEST`` — already in the normalised
    range. Two sizes, neither the export's example size 2, exercise the dynamic batch axis."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.INPUT.SIZE_TEST
    return [torch.randn(b, 3, h, w, generator=g) for b in sizes]
