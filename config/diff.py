"""Configs as flat ``{'MODEL.ARCH': 'tsd'}`` dicts, and the keys in which they differ.

One implementation for the two readers: :mod:`processor.run_folder` compares a run's saved config with
the one it is given (resume, ``TEST.WEIGHT``), ``tools/summarize_runs.py`` the configs of several runs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

__all__ = ["flatten", "differing_keys", "config_diff", "format_diff"]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{'MODEL': {'ARCH': 'tsd'}}`` -> ``{'MODEL.ARCH': 'tsd'}`` (lists stay values; a ``CfgNode`` is a dict)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differing_keys(configs: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None,
                   ignore: tuple[str, ...] = (), skip_missing: bool = True) -> list[str]:
    """The keys whose value differs between the flat ``configs``: ``keys`` (in their order) if given, else
    every key of any of them (sorted); keys starting with an entry of ``ignore`` are left out.

    A key missing from some configs (written before the key existed) is compared among the others with
    ``skip_missing``, else it reads as None there.
    """
    names = keys if keys is not None else sorted(set().union(*configs))
    out = []
    for k in names:
        if k.startswith(ignore):
            continue
        values = [c[k] for c in configs if k in c] if skip_missing else [c.get(k) for c in configs]
        if any(v != values[0] for v in values[1:]):
            out.append(k)
    return out


def config_diff(saved: str, cfg, keys: Sequence[str] | None = None,
                ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for every key whose value differs between the YAML dump
    ``saved`` (``cfg.dump()`` of a run) and ``cfg``; only ``keys`` if given; keys starting with an
    entry of ``ignore`` are skipped. Keys unknown to either side count as differing."""
    a, b = flatten(yaml.safe_load(saved) or {}), flatten(yaml.safe_load(cfg.dump()))
    return [(k, a.get(k), b.get(k)) for k in differing_keys([a, b], keys, ignore, skip_missing=False)]


def format_diff(diff: list[tuple[str, Any, Any]]) -> str:
    """``KEY saved (now current), ...`` for an error message."""
    return ", ".join(f"{k} {a!r} (now {b!r})" for k, a, b in diff)
