"""The config a training run writes beside its weights, and the config that evaluating those weights loads.

``train.py`` writes the run's config into ``OUTPUT_DIR/config.yaml`` (:data:`CONFIG_FILE`), beside its
weight files; ``test.py`` and the tools that evaluate ``TEST.WEIGHT`` load it from there when no
``--config_file`` is given (:func:`load_eval_cfg`), and :mod:`processor.run_folder` compares a given
config with it.
"""
from __future__ import annotations

import os

from yacs.config import CfgNode

from utils.errors import CheckpointError, ConfigError

from . import load_cfg

__all__ = ["CONFIG_FILE", "EVAL_CONFIG_HELP", "run_config_beside", "eval_config_file", "load_eval_cfg",
           "check_test_weight"]

# The run's config, written by train.py into OUTPUT_DIR beside its weight files; test.py and the tools
# read it from beside TEST.WEIGHT when no --config_file is given.
CONFIG_FILE = "config.yaml"
# --config_file help of test.py and the tools that evaluate TEST.WEIGHT.
EVAL_CONFIG_HELP = (f"YAML config of the model (default: the {CONFIG_FILE} that train.py wrote beside TEST.WEIGHT; "
                    f"needed for a checkpoint without one, e.g. of the original TSD code)")


def run_config_beside(path: str) -> str | None:
    """The ``config.yaml`` train.py wrote into the folder of ``path`` (a weight file of its run), or None."""
    candidate = os.path.join(os.path.dirname(path), CONFIG_FILE)
    return candidate if os.path.isfile(candidate) else None


def eval_config_file(config_file: str | None, opts: list[str], model_file: str | None = None) -> str:
    """The config to evaluate with: ``config_file`` when given, else the run's ``config.yaml`` beside the
    model file (``model_file``, else the ``TEST.WEIGHT`` among ``opts``).

    Raises:
        CheckpointError: no ``--config_file`` and no model file given, or the file does not exist.
        ConfigError: no ``--config_file`` and no ``config.yaml`` beside the model file.
    """
    if config_file:
        return config_file
    pairs = dict(zip(opts[0::2], opts[1::2]))
    weight = model_file or pairs.get("TEST.WEIGHT", "")
    if not weight:
        raise CheckpointError("no checkpoint given: add TEST.WEIGHT <run folder>/transformer_<epoch>.pth (the run's "
                              f"{CONFIG_FILE} beside it gives the model and data settings), or --config_file FILE")
    _check_weight_file(weight, "transformer" if model_file is None else None)
    saved = run_config_beside(weight)
    if saved is None:
        raise ConfigError(f"{weight} has no {CONFIG_FILE} beside it (train.py writes one into every run folder; "
                          f"a checkpoint of the original TSD code has none): add --config_file with the config it "
                          f"was trained with, e.g. --config_file configs/OCC_Duke/vit_base.yml")
    return saved


def load_eval_cfg(config_file: str | None, opts: list[str], model_file: str | None = None) -> CfgNode:
    """Config for evaluating ``TEST.WEIGHT``: :func:`eval_config_file` + overrides, with
    ``MODEL.PRETRAIN_CHOICE none`` (the checkpoint overwrites every backbone weight, so the ImageNet
    file is never needed)."""
    return load_cfg(eval_config_file(config_file, list(opts), model_file),
                    list(opts) + ["MODEL.PRETRAIN_CHOICE", "none"])


def check_test_weight(cfg: CfgNode) -> None:
    """Raise a one-line ``CheckpointError`` when ``TEST.WEIGHT`` is empty or not a file."""
    if not cfg.TEST.WEIGHT:
        raise CheckpointError("no checkpoint given: add TEST.WEIGHT <run folder>/transformer_<epoch>.pth "
                              "to the command")
    _check_weight_file(cfg.TEST.WEIGHT, cfg.MODEL.NAME)


def _check_weight_file(path: str, model_name: str | None) -> None:
    """``CheckpointError`` naming ``path`` when it is not a file: ``TEST.WEIGHT`` (a weight file named
    ``<model_name>_<epoch>.pth``), or an exported model when ``model_name`` is None."""
    if os.path.isfile(path):
        return
    if model_name is None:
        raise CheckpointError(f"{path} does not exist; check the path")
    raise CheckpointError(f"TEST.WEIGHT {path} does not exist; check the path "
                          f"(training writes OUTPUT_DIR/{model_name}_<epoch>.pth)")
