"""Configuration: yacs defaults + YAML files with ``_BASE_`` inheritance + ``KEY VALUE`` overrides.

Usage (TransReID style)::

    from config import load_cfg
    cfg = load_cfg("configs/OCC_Duke/vit_base.yml", ["SOLVER.BASE_LR", "0.004"])
"""
from __future__ import annotations

import difflib
import os
import re
from ast import literal_eval
from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from utils.errors import ConfigError

from .defaults import _C
from .parts import PART_GROUP_SIZES, grouping_for_parts

__all__ = ["get_cfg_defaults", "load_cfg", "validate_cfg", "PART_GROUP_SIZES", "PART_KEYS",
           "grouping_for_parts", "EVAL_IMAGE_LOADERS", "TRUNCATED_IMAGE_POLICIES", "COMPILE_MODES", "VALUE_RANGES"]

BASE_KEY = "_BASE_"
# TEST.IMAGE_LOADER: the evaluation's image path ('auto': the reference's choice per entry point).
EVAL_IMAGE_LOADERS = ("auto", "pil", "cv2")
# DATASETS.TRUNCATED_IMAGES: what a JPEG cut mid-stream does.
TRUNCATED_IMAGE_POLICIES = ("error", "warn", "ignore")
# SOLVER.COMPILE_MODE: torch.compile's modes.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The part count and the grouping that makes it: one fact in two keys. A config layer (a file of the
# _BASE_ chain, then the command line) that sets one of them sets the other (see _couple_parts).
PART_KEYS = ("MODEL.NUM_PARTS", "INPUT.MASK_PREPROCESS")


def _groupings_text() -> str:
    """'8 (eight), 5 (five), 3 (three) or 1 (one)'."""
    items = [f"{n} ({g})" for g, n in PART_GROUP_SIZES.items()]
    return ", ".join(items[:-1]) + " or " + items[-1]


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
        layer = _read_yaml(os.path.join(os.path.dirname(path), b), seen + (path,))
        _drop_coupled_part_key(merged, _set_keys(layer, PART_KEYS))
        _deep_update(merged, layer)
    _drop_coupled_part_key(merged, _set_keys(data, PART_KEYS))
    _deep_update(merged, data)
    return merged


_MISSING = object()


def _set_keys(data: dict, keys: Iterable[str]) -> set[str]:
    """Those of the dotted ``keys`` that the nested dict ``data`` sets."""
    found = set()
    for key in keys:
        node: Any = data
        for part in key.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            found.add(key)
    return found


def _drop_coupled_part_key(earlier: dict, later_sets: set[str]) -> None:
    """When a later layer sets one of :data:`PART_KEYS` alone, forget the earlier layers' value of the
    other (it is derived again from the later one, see :func:`_couple_parts`)."""
    if len(later_sets) != 1:
        return
    (other,) = set(PART_KEYS) - later_sets
    section, key = other.split(".")
    if isinstance(earlier.get(section), dict):
        earlier[section].pop(key, None)


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


def _as_text(raw: Any) -> Any:
    """The value of a string-typed key as written: yacs would read ``1`` or ``0,1`` (YAML or command
    line) as a number or a tuple and refuse it (``MODEL.DEVICE_ID``). A quoted Python string
    (``"('0')"``, ``"'0'"``, the reference's form) still gives its content; booleans and None are left
    for the type check (YAML reads ``yes`` as True, so that is an error, not the text 'True')."""
    if isinstance(raw, str):
        try:
            decoded = literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
        return decoded if isinstance(decoded, str) else raw
    if isinstance(raw, bool) or raw is None:
        return raw
    if isinstance(raw, (int, float)):
        return str(raw)
    if isinstance(raw, (list, tuple)) and all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in raw):
        return ",".join(str(x) for x in raw)
    return raw


def _pop_text_values(data: dict, node: CN, prefix: str = "") -> list[tuple[str, Any]]:
    """Remove from ``data`` the values of string-typed keys whose text yacs would misread, and return
    them as ``(dotted key, text)`` to be set after the yacs merge (which decodes every string)."""
    out = []
    for k in list(data):
        if isinstance(node[k], CN):
            out += _pop_text_values(data[k], node[k], f"{prefix}{k}.")
        elif isinstance(node[k], str):
            text = _as_text(data[k])
            if isinstance(text, str):
                del data[k]
                out.append((f"{prefix}{k}", text))
    return out


def _set(cfg: CN, key: str, value: Any) -> None:
    node = cfg
    *sections, leaf = key.split(".")
    for part in sections:
        node = node[part]
    node[leaf] = value


def _merge(cfg: CN, data: dict, where: str) -> None:
    _check_keys(data, cfg, where)
    texts = _pop_text_values(data, cfg)
    try:
        cfg.merge_from_other_cfg(CN(data))
    except ValueError as e:
        raise _type_error(e, where) from e
    for key, text in texts:
        _set(cfg, key, text)


def _couple_parts(cfg: CN, given: set[str], where: str) -> None:
    """Complete :data:`PART_KEYS` when the config layers set only one of them.

    ``given`` are the keys set by the layers after :func:`_drop_coupled_part_key`: the latest layer
    that set either key decides. ``MODEL.NUM_PARTS 3`` alone gives ``INPUT.MASK_PREPROCESS three``,
    ``INPUT.MASK_PREPROCESS eight`` alone ``MODEL.NUM_PARTS 8``. A grouping name that does not exist is
    left to :func:`validate_cfg`, which names the valid ones.

    Raises:
        ConfigError: ``MODEL.NUM_PARTS`` given alone with a count no grouping makes.
    """
    if given == {"MODEL.NUM_PARTS"}:
        grouping = grouping_for_parts(cfg.MODEL.NUM_PARTS)
        if grouping is None:
            raise ConfigError(f"MODEL.NUM_PARTS {cfg.MODEL.NUM_PARTS} in {where}: no INPUT.MASK_PREPROCESS grouping "
                              f"makes {cfg.MODEL.NUM_PARTS} parts; use {_groupings_text()}")
        cfg.INPUT.MASK_PREPROCESS = grouping
    elif given == {"INPUT.MASK_PREPROCESS"} and cfg.INPUT.MASK_PREPROCESS in PART_GROUP_SIZES:
        cfg.MODEL.NUM_PARTS = PART_GROUP_SIZES[cfg.INPUT.MASK_PREPROCESS]


def load_cfg(config_file: str | None = None, opts: Sequence[str] | None = None, freeze: bool = True) -> CN:
    """Build a config: defaults, then ``config_file`` (with ``_BASE_`` chain), then ``KEY VALUE`` pairs."""
    cfg = get_cfg_defaults()
    data = _read_yaml(config_file) if config_file else {}
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must come in KEY VALUE pairs, got {len(opts)} items: {opts}")
    cli_parts = set(opts[0::2]) & set(PART_KEYS)
    _drop_coupled_part_key(data, cli_parts)
    given, where = _set_keys(data, PART_KEYS) | cli_parts, "the command line" if cli_parts else config_file
    if data:
        _merge(cfg, data, config_file)
    if opts:
        texts, rest = [], []
        for key, value in zip(opts[0::2], opts[1::2]):
            node = cfg
            for part in key.split("."):
                if not isinstance(node, CN) or part not in node:
                    raise _unknown_key_error(key, "the command line")
                node = node[part]
            if isinstance(node, CN):
                raise ConfigError(f"'{key}' on the command line is a section, not a key")
            text = _as_text(value) if isinstance(node, str) else None
            if isinstance(text, str):  # the text as typed, see _as_text (e.g. MODEL.DEVICE_ID 0,1)
                texts.append((key, text))
            else:
                rest += [key, value]
        try:
            cfg.merge_from_list(rest)
        except ValueError as e:
            raise _type_error(e, "the command line") from e
        for key, text in texts:
            _set(cfg, key, text)
    _couple_parts(cfg, given, where)
    validate_cfg(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def _choice(cfg: CN, key: str, choices: Iterable[Any]) -> None:
    node = _get(cfg, key)
    choices = list(choices)
    if node not in choices:
        raise ConfigError(f"{key} must be one of {choices}, got {node!r}")


def validate_cfg(cfg: CN) -> None:
    """Check values that are individually well-typed but invalid or mutually inconsistent.

    The one place where config values are checked: the code that reads them trusts a config of
    :func:`load_cfg`. Only what this config cannot know is checked where it is used: membership of a
    registry above it (``MODEL.TRANSFORMER_TYPE``, ``DATASETS.NAMES``, ``SOLVER.OPTIMIZER_NAME``) and
    what depends on the machine or the data (GPUs, processes, files, identities).

    Raises:
        ConfigError: one line naming the key, the value and what it must be.
    """
    _choice(cfg, "INPUT.MASK_PREPROCESS", PART_GROUP_SIZES)
    expected = PART_GROUP_SIZES[cfg.INPUT.MASK_PREPROCESS]
    if cfg.MODEL.NUM_PARTS != expected:
        grouping = grouping_for_parts(cfg.MODEL.NUM_PARTS)
        fix = (f"INPUT.MASK_PREPROCESS {grouping} for {cfg.MODEL.NUM_PARTS} parts, or " if grouping else "")
        raise ConfigError(
            f"MODEL.NUM_PARTS is {cfg.MODEL.NUM_PARTS} but INPUT.MASK_PREPROCESS "
            f"'{cfg.INPUT.MASK_PREPROCESS}' makes {expected} parts; set {fix}MODEL.NUM_PARTS {expected} "
            f"(giving one of the two keys alone sets the other)"
        )
    if cfg.MODEL.DEVICE_ID and not _DEVICE_IDS.fullmatch(cfg.MODEL.DEVICE_ID):
        raise ConfigError(f"MODEL.DEVICE_ID must be GPU indices separated by commas, as CUDA_VISIBLE_DEVICES takes "
                          f"them (0, 1 or 0,1), got {cfg.MODEL.DEVICE_ID!r}")
    _choice(cfg, "MODEL.ARCH", ["tsd", "vit"])
    _choice(cfg, "MODEL.PRETRAIN_CHOICE", ["imagenet", "self", "none"])
    _choice(cfg, "MODEL.ID_LOSS_TYPE", ["softmax"])
    _choice(cfg, "MODEL.IF_LABELSMOOTH", ["on", "off"])
    _choice(cfg, "MODEL.DEVICE", ["cuda", "cpu"])
    _choice(cfg, "TEST.FEAT_NORM", ["yes", "no"])
    _choice(cfg, "SOLVER.AMP_DTYPE", ["float16", "bfloat16"])
    _choice(cfg, "SOLVER.COMPILE_MODE", COMPILE_MODES)
    _choice(cfg, "DATALOADER.SAMPLER", ["softmax", "softmax_triplet", "img_triplet"])
    _choice(cfg, "TEST.IMAGE_LOADER", EVAL_IMAGE_LOADERS)
    _choice(cfg, "DATASETS.TRUNCATED_IMAGES", TRUNCATED_IMAGE_POLICIES)
    if cfg.MODEL.WITH_DIVERSE_LOSS and cfg.MODEL.NUM_PARTS < 2:
        raise ConfigError("MODEL.WITH_DIVERSE_LOSS pushes parts apart and needs at least 2; add "
                          "MODEL.WITH_DIVERSE_LOSS False for one part, or use MODEL.NUM_PARTS 3, 5 or 8")
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


# CUDA_VISIBLE_DEVICES entries: indices, or GPU-/MIG- UUIDs.
_DEVICE_IDS = re.compile(r"[\w-]+(,[\w-]+)*")


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
    "TEST.RE_RANKING_K1": (1, None, "neighbours of the k-reciprocal sets"),
    "TEST.RE_RANKING_K2": (1, None, "neighbours of the query expansion"),
    "TEST.RE_RANKING_LAMBDA": (0.0, 1.0, "weight of the original distance"),
}
