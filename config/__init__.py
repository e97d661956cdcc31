"""Configuration: yacs defaults + YAML files with ``_BASE_`` inheritance + ``KEY VALUE`` overrides.

Usage (TransReID style)::

    from config import cfg_from_args
    cfg = cfg_from_args("configs/OCC_Duke/vit_base.yml", ["SOLVER.BASE_LR", "0.004"])
"""
from __future__ import annotations

import difflib
import os
import re
from typing import Any, Iterable, Sequence

import yaml
from yacs.config import CfgNode as CN

from utils.errors import ConfigError

from .defaults import _C

__all__ = ["get_cfg_defaults", "load_cfg", "cfg_from_args", "validate_cfg", "PART_GROUP_SIZES", "EVAL_IMAGE_LOADERS",
           "TRUNCATED_IMAGE_POLICIES"]

BASE_KEY = "_BASE_"
# Number of parts of each INPUT.MASK_PREPROCESS grouping (see datasets/masks.py).
PART_GROUP_SIZES = {"eight": 8, "five": 5, "three": 3, "one": 1}
# TEST.IMAGE_LOADER: the evaluation's image path ('auto': the reference's choice per entry point).
EVAL_IMAGE_LOADERS = ("auto", "pil", "cv2")
# DATASETS.TRUNCATED_IMAGES: what a JPEG cut mid-stream does.
TRUNCATED_IMAGE_POLICIES = ("error", "warn", "ignore")


def get_cfg_defaults() -> CN:
    """Return a fresh, mutable copy of the default configuration."""
    return _C.clone()


def _all_keys(node: CN, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CN):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _unknown_key_error(key: str, where: str) -> ConfigError:
    valid = _all_keys(_C)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # typo in the leaf only: compare leaf names under the same section
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in valid}
        m = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[m[0]]] if m else []
    hint = f"; did you mean '{close[0]}'?" if close else "; see config/defaults.py for the valid keys"
    return ConfigError(f"unknown config key '{key}' in {where}{hint}")


def _check_keys(data: dict, node: CN, where: str, prefix: str = "") -> None:
    for k, v in data.items():
        full = f"{prefix}{k}"
        if k not in node:
            raise _unknown_key_error(full, where)
        if isinstance(node[k], CN):
            if not isinstance(v, dict):
                raise ConfigError(f"config key '{full}' in {where} is a section; give it sub-keys, not {v!r}")
            _check_keys(v, node[k], where, full + ".")


def _yaml_error(path: str, e: yaml.YAMLError) -> ConfigError:
    """A YAML parse error as one line ``FILE:LINE:COL: problem``."""
    mark = getattr(e, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if isinstance(e, yaml.constructor.ConstructorError):  # e.g. !!python/object/apply: never built
        fix = "config files are plain YAML; tags that build Python objects are not allowed, remove it"
    else:
        fix = "fix the syntax there (indentation, a missing ':' or an unclosed bracket or quote)"
    return ConfigError(f"config file {where}: not valid YAML ({problem}); {fix}")


def _read_yaml(path: str, seen: tuple[str, ...] = ()) -> dict:
    """Read a YAML config, merging its ``_BASE_`` chain (paths relative to the file).

    ``seen`` is the chain of files that inherit from ``path`` (for the cycle and missing-base errors).
    """
    path = os.path.abspath(path)
    if path in seen:
        chain = " -> ".join(seen[seen.index(path):] + (path,))
        raise ConfigError(f"config file {path} inherits from itself through _BASE_ ({chain}); "
                          f"remove the _BASE_ line that closes the cycle")
    if not os.path.isfile(path):
        if seen:
            raise ConfigError(f"config file {seen[-1]}: its _BASE_ {path} not found (_BASE_ paths are relative "
                              f"to the file's folder); fix the _BASE_ line")
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else list(base)
    merged: dict = {}
    for b in bases:
        if not isinstance(b, str):
            raise ConfigError(f"config file {path}: _BASE_ must be a path or a list of paths, got {b!r}")
        _deep_update(merged, _read_yaml(os.path.join(os.path.dirname(path), b), seen + (path,)))
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


_TYPE_MISMATCH = re.compile(r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) "
                            r"for config key: (\S+)", re.S)


def _type_error(e: ValueError, where: str) -> ConfigError:
    """yacs' type-mismatch message, rewritten as one actionable line."""
    m = _TYPE_MISMATCH.search(str(e))
    if not m:
        return ConfigError(f"{where}: {e}")
    want, got, default, value, key = m.groups()
    return ConfigError(f"config key {key} in {where} expects type {want} (current value {default.strip()}), "
                       f"got {got} {value.strip()}")


def _merge(cfg: CN, data: dict, where: str) -> None:
    _check_keys(data, cfg, where)
    try:
        cfg.merge_from_other_cfg(CN(data))
    except ValueError as e:
        raise _type_error(e, where) from e


def load_cfg(config_file: str | None = None, opts: Sequence[str] | None = None, freeze: bool = True) -> CN:
    """Build a config: defaults, then ``config_file`` (with ``_BASE_`` chain), then ``KEY VALUE`` pairs."""
    cfg = get_cfg_defaults()
    if config_file:
        _merge(cfg, _read_yaml(config_file), config_file)
    if opts:
        opts = list(opts)
        if len(opts) % 2:
            raise ConfigError(f"command-line overrides must come in KEY VALUE pairs, got {len(opts)} items: {opts}")
        for key in opts[0::2]:
            node = cfg
            for part in key.split("."):
                if not isinstance(node, CN) or part not in node:
                    raise _unknown_key_error(key, "the command line")
                node = node[part]
            if isinstance(node, CN):
                raise ConfigError(f"'{key}' on the command line is a section, not a key")
        try:
            cfg.merge_from_list(opts)
        except ValueError as e:
            raise _type_error(e, "the command line") from e
    validate_cfg(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def cfg_from_args(config_file: str | None, opts: Iterable[str] | None = None) -> CN:
    """Alias of :func:`load_cfg` for entry points (``--config_file`` + positional ``opts``)."""
    return load_cfg(config_file, list(opts or []))


def _choice(cfg: CN, key: str, choices: Iterable[Any]) -> None:
    node = _get(cfg, key)
    choices = list(choices)
    if node not in choices:
        raise ConfigError(f"{key} must be one of {choices}, got {node!r}")


def validate_cfg(cfg: CN) -> None:
    """Check values that are individually well-typed but invalid or mutually inconsistent."""
    _choice(cfg, "INPUT.MASK_PREPROCESS", PART_GROUP_SIZES)
    expected = PART_GROUP_SIZES[cfg.INPUT.MASK_PREPROCESS]
    if cfg.MODEL.NUM_PARTS != expected:
        raise ConfigError(
            f"MODEL.NUM_PARTS is {cfg.MODEL.NUM_PARTS} but INPUT.MASK_PREPROCESS "
            f"'{cfg.INPUT.MASK_PREPROCESS}' makes {expected} parts; set MODEL.NUM_PARTS {expected}"
        )
    _choice(cfg, "MODEL.ARCH", ["tsd", "vit"])
    _choice(cfg, "MODEL.PRETRAIN_CHOICE", ["imagenet", "self", "none"])
    _choice(cfg, "MODEL.ID_LOSS_TYPE", ["softmax"])
    _choice(cfg, "MODEL.IF_LABELSMOOTH", ["on", "off"])
    _choice(cfg, "MODEL.DEVICE", ["cuda", "cpu"])
    _choice(cfg, "TEST.FEAT_NORM", ["yes", "no"])
    _choice(cfg, "SOLVER.AMP_DTYPE", ["float16", "bfloat16"])
    _choice(cfg, "DATALOADER.SAMPLER", ["softmax", "softmax_triplet", "img_triplet"])
    _choice(cfg, "TEST.IMAGE_LOADER", EVAL_IMAGE_LOADERS)
    _choice(cfg, "DATASETS.TRUNCATED_IMAGES", TRUNCATED_IMAGE_POLICIES)
    if cfg.MODEL.WITH_DIVERSE_LOSS and cfg.MODEL.NUM_PARTS < 2:
        raise ConfigError("MODEL.WITH_DIVERSE_LOSS needs at least 2 parts; use MASK_PREPROCESS five/three/eight")
    if cfg.DATALOADER.SAMPLER != "softmax" and cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be a multiple of "
            f"DATALOADER.NUM_INSTANCE ({cfg.DATALOADER.NUM_INSTANCE}) for the identity sampler"
        )
    for key in ("INPUT.SIZE_TRAIN", "INPUT.SIZE_TEST", "MODEL.STRIDE_SIZE"):
        sec, k = key.split(".")
        v = cfg[sec][k]
        if len(v) != 2 or any(int(x) <= 0 for x in v):
            raise ConfigError(f"{key} must be two positive integers [H, W], got {list(v)}")
    for key, (lo, hi, why) in VALUE_RANGES.items():
        v = _get(cfg, key)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{key} must be {bounds}, got {v} ({why})")


def _get(cfg: CN, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


# key -> (min, max or None, what the key means): values of the right type that make no sense.
VALUE_RANGES: dict[str, tuple[Any, Any, str]] = {
    "DATALOADER.NUM_WORKERS": (0, None, "loader processes; 0 loads in the training process"),
    "DATALOADER.NUM_INSTANCE": (1, None, "images per identity in a batch"),
    "SOLVER.IMS_PER_BATCH": (1, None, "images per step"),
    "TEST.IMS_PER_BATCH": (1, None, "images per evaluation batch"),
    "SOLVER.MAX_EPOCHS": (1, None, "epochs to train"),
    "SOLVER.BASE_LR": (1e-12, None, "the learning rate must be positive"),
    "SOLVER.WARMUP_EPOCHS": (0, None, "epochs of linear warmup"),
    "SOLVER.CHECKPOINT_PERIOD": (0, None, "epochs between weight files; 0: only the last"),
    "SOLVER.EVAL_PERIOD": (0, None, "epochs between evaluations; 0: never"),
    "SOLVER.LOG_PERIOD": (1, None, "iterations between log lines"),
    "SOLVER.MAX_NONFINITE": (1, None, "consecutive skipped steps before aborting"),
    "INPUT.PROB": (0.0, 1.0, "flip probability"),
    "INPUT.RE_PROB": (0.0, 1.0, "random-erasing probability"),
    "INPUT.PADDING": (0, None, "pixels of padding before the random crop"),
    "MODEL.DROP_PATH": (0.0, 1.0, "a probability"),
    "MODEL.DROP_OUT": (0.0, 1.0, "a probability"),
    "MODEL.ATT_DROP_RATE": (0.0, 1.0, "a probability"),
}
