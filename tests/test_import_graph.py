"""The import graph follows the layers: a package imports only the project packages below it.

Layers, bottom up: ``utils`` (leaf helpers) < ``config`` (defaults, loading, validation, the part facts)
< ``datasets``, ``model``, ``loss``, ``solver``, ``evaluation`` (side by side: none imports another)
< ``processor`` (trainer, hooks, checkpointer, inference, export, the builder of a run) < the entry
points ``train.py``, ``test.py`` and ``tools/``.

Read from the source (every ``import`` / ``from ... import`` statement, function-level ones included),
so an upward import fails here even where no test happens to run it.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.parity import REPO

_MIDDLE = {"datasets", "model", "loss", "solver", "evaluation"}
_BELOW_PROCESSOR = {"utils", "config"} | _MIDDLE
# package or top-level module -> the project packages it may import (besides itself)
ALLOWED = {
    "utils": set(),
    "config": {"utils"},
    # side by side: each needs only the leaf helpers and the config (part facts, choices)
    **{package: {"utils", "config"} for package in sorted(_MIDDLE)},
    "processor": _BELOW_PROCESSOR,
    "train": _BELOW_PROCESSOR | {"processor"},
    "test": _BELOW_PROCESSOR | {"processor"},
    # tools/bench_eval.py times the reference oracles, which live beside the tests that check the evaluator
    "tools": _BELOW_PROCESSOR | {"processor", "tests"},
}


def _project_modules() -> set[str]:
    """Top-level packages and modules of the repository."""
    names = set()
    for entry in os.listdir(REPO):
        path = os.path.join(REPO, entry)
        if entry.endswith(".py"):
            names.add(entry[:-3])
        elif os.path.isdir(path) and not entry.startswith(".") and any(f.endswith(".py") for f in os.listdir(path)):
            names.add(entry)
    return names


def _source_files(name: str) -> list[str]:
    """The ``.py`` files of the top-level package or module ``name``."""
    if os.path.isfile(os.path.join(REPO, name + ".py")):
        return [os.path.join(REPO, name + ".py")]
    return [os.path.join(folder, f) for folder, _, files in os.walk(os.path.join(REPO, name))
            for f in files if f.endswith(".py")]


def _imports(name: str) -> dict[str, set[str]]:
    """``{file: top-level names it imports absolutely}`` for every source file of ``name``."""
    out = {}
    for path in _source_files(name):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        out[os.path.relpath(path, REPO)] = found
    return out


def test_every_project_package_has_a_layer() -> None:
    """A new top-level package must be placed in ALLOWED (``tests`` may import anything)."""
    assert _project_modules() - {"tests"} == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_runs_up_a_layer(package: str) -> None:
    project = _project_modules()
    assert package in project
    upward = {
        path: sorted(found & project - ALLOWED[package] - {package})
        for path, found in _imports(package).items()
        if found & project - ALLOWED[package] - {package}
    }
    assert not upward, f"{package} may import only {sorted(ALLOWED[package])} of the project: {upward}"


def test_train_reads_its_command_line_and_config_before_torch_loads() -> None:
    """train.py's imports (config, the run-folder rules with its flags, the builder) load no torch, timm or
    data package: a bad flag or config key is reported in a fraction of a second, not after seconds of
    imports."""
    code = ("import sys; sys.modules['torch'] = None  # importing torch now fails\n"
            "import train; from config import load_cfg\n"
            "config_file, opts, *_ = train.parse_args(['--config_file', 'configs/demo/tsd_tiny.yml', '--overwrite'])\n"
            "load_cfg(config_file, opts)\n"
            "print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('timm', 'datasets', 'model', 'loss', 'solver')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
