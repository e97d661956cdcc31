"""Helpers shared by ``tools/vis_attn.py``, ``tools/vis_rank.py`` and ``tools/extract_features.py``.

Command line (TransReID style plus tool flags), config + checkpoint loading without ImageNet
weights, evaluation loaders over data set splits or a folder of the user's own images, and the small
image / figure utilities the drawings share.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure  # drawn without pyplot: no GUI backend, no global figure state
from torch import nn
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from config.parts import token_names
from config.run_config import EVAL_CONFIG_HELP, check_test_weight, load_eval_cfg
from datasets.bases import IMAGE_EXTENSIONS, ImageRecord, ReIDDataset, list_images
from datasets.make_dataloader import make_val_loader
from datasets.transforms import read_image
from utils.cli import config_argparser
from utils.errors import ConfigError, DataError
from utils.logger import setup_logger
from utils.misc import apply_device_id, resolve_device

__all__ = [
    "tool_argparser", "parse_tool_args", "load_tool_cfg", "tool_output_dir", "load_model", "folder_records",
    "eval_loader", "display_image", "query_names", "file_stem",
    "figure_path", "save_figure",
]


def tool_argparser(description: str, config_help: str = EVAL_CONFIG_HELP) -> argparse.ArgumentParser:
    """``utils.cli.config_argparser`` of a tool that evaluates ``TEST.WEIGHT``: ``--config_file`` is
    optional (the run's ``config.yaml`` beside the weight file is the default, see :func:`load_tool_cfg`)."""
    return config_argparser(description, config_required=False, config_help=config_help)


def parse_tool_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) with a ``utils.cli.config_argparser`` extended by the tool's
    flags: ``--config_file X.yml [flags] [KEY VALUE ...]``.

    Raises:
        ConfigError: a ``--flag`` was given after the first ``KEY VALUE`` override (argparse hands
            everything from there on to the overrides, so the flag would otherwise be read as a key).
    """
    args = parser.parse_args(argv)
    misplaced = [o for o in args.opts if o.startswith("--")]
    if misplaced:
        raise ConfigError(f"{misplaced[0]} came after the KEY VALUE overrides; put the tool's flags before them")
    return args


def load_tool_cfg(args: argparse.Namespace, need_weight: bool = True, model_file: str | None = None) -> CfgNode:
    """The config of ``--config_file`` — by default the run's ``config.yaml`` beside ``TEST.WEIGHT``
    (or beside ``model_file``, an exported model) — + overrides, with ``MODEL.PRETRAIN_CHOICE none``:
    the checkpoint overwrites every backbone weight, so the ImageNet file is never needed.

    Checks the checkpoint path (unless ``need_weight`` is False: a tool running an exported model) and
    the model kind first, before any data is read, and exports ``MODEL.DEVICE_ID`` as
    ``CUDA_VISIBLE_DEVICES`` before anything queries CUDA (the loaders do).

    Raises:
        CheckpointError: no ``TEST.WEIGHT``, a missing file, or a config whose model keys differ from
            the ``config.yaml`` beside it.
        ConfigError: no ``--config_file`` and no ``config.yaml`` beside the model file; an SIE model
            (the tools have no camera / view ids to feed it).
    """
    cfg = load_eval_cfg(args.config_file, args.opts, model_file)
    apply_device_id(cfg.MODEL.DEVICE_ID)
    if need_weight:
        from processor.run_folder import check_weight_config

        check_test_weight(cfg)
        check_weight_config(cfg.TEST.WEIGHT, cfg)
    if cfg.MODEL.SIE_CAMERA or cfg.MODEL.SIE_VIEW:
        raise ConfigError("MODEL.SIE_CAMERA / MODEL.SIE_VIEW models need camera / view ids, which the tools do "
                          "not pass; use a model trained without SIE")
    return cfg


def tool_output_dir(cfg: CfgNode, out: str | None, subdir: str, log_name: str) -> str:
    """Create and return the tool's output folder — ``out`` if given, else ``OUTPUT_DIR/subdir``
    (``logs/subdir`` without an OUTPUT_DIR) — and log into ``log_name`` there."""
    path = out or os.path.join(cfg.OUTPUT_DIR or "logs", subdir)
    os.makedirs(path, exist_ok=True)
    setup_logger(path, log_name)
    return path


def load_model(cfg: CfgNode, num_classes: int, camera_num: int = 0, view_num: int = 0) -> tuple[nn.Module, str]:
    """Build the configured model, load ``TEST.WEIGHT`` and move it to ``MODEL.DEVICE`` in eval mode.

    Args:
        cfg: a config from :func:`load_tool_cfg`.
        num_classes: training identities of the data set; 1 when there is none (own images): the
            identity classifiers do not influence features, and ``load_param`` skips them when the
            class counts differ.
        camera_num, view_num: cameras / views of the data set (as ``make_model`` takes them).

    Returns:
        ``(model, device)``.

    Raises:
        CheckpointError: the checkpoint does not fit the configured model.
    """
    from model import make_model  # the model package pulls in timm: import it only when needed

    device = resolve_device(cfg.MODEL.DEVICE)
    model = make_model(cfg, num_classes, camera_num, view_num)
    model.load_param(cfg.TEST.WEIGHT)
    return model.to(device).eval(), device


def folder_records(folder: str) -> list[ImageRecord]:
    """Records (pid -1, camera 0) of every image under ``folder``, recursively, sorted by path.

    Raises:
        DataError: ``folder`` is not a folder or holds no image.
    """
    if not os.path.isdir(folder):
        raise DataError(f"image folder {folder} does not exist")
    paths = list_images(folder, recursive=True)
    if not paths:
        raise DataError(f"no images ({', '.join('*' + e for e in IMAGE_EXTENSIONS)}) found under {folder}")
    return [ImageRecord(p, pid=-1, camid=0) for p in paths]


def eval_loader(cfg: CfgNode, query: Sequence[ImageRecord], gallery: Sequence[ImageRecord] = ()) -> DataLoader:
    """The evaluation loader (eval transform, ``TEST.IMS_PER_BATCH``) over ``query`` then ``gallery``,
    in order; batches :class:`datasets.batch.EvalBatch`. An unreadable image raises
    :class:`DataError` naming it when its batch is loaded."""
    return make_val_loader(cfg, ReIDDataset([], list(query), list(gallery)))


def display_image(path: str, size: Sequence[int]) -> np.ndarray:
    """The image at ``path`` resized to ``size`` (H, W) — the network's input size — as (H, W, 3)
    float RGB in [0, 1], for drawing only (area interpolation; the network's input is resized by the
    evaluation transform). Raises :class:`DataError` if the file cannot be read."""
    rgb = np.ascontiguousarray(read_image(path).permute(1, 2, 0).numpy())
    return cv2.resize(rgb, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def query_names(cfg: CfgNode) -> list[str]:
    """Names of the P part queries of the configured model (``INPUT.MASK_PREPROCESS`` grouping,
    e.g. head / arm / torso / leg / feet for 'five'; :func:`config.parts.token_names` without the
    global token); none for the ViT baseline."""
    return token_names(cfg.MODEL.ARCH, cfg.INPUT.MASK_PREPROCESS)[1:]


def file_stem(path: str) -> str:
    """File name without folder and extension."""
    return os.path.splitext(os.path.basename(path))[0]


def figure_path(out: str, index: int, image_path: str) -> str:
    """``out/<index:03d>_<image stem>.png``: numbered so that images of equal names in different
    folders do not collide, and listed in drawing order."""
    return os.path.join(out, f"{index:03d}_{file_stem(image_path)}.png")


def save_figure(fig: Figure, path: str, dpi: int = 110) -> str:
    """Write ``fig`` as PNG to ``path`` and return the path."""
    fig.savefig(path, dpi=dpi)
    return path
