"""The import graph follows the layers: a package imports only the project packages below it.

Read from the source (every ``import`` / ``from ... import`` statement, function-level ones included),
so an upward import fails here even where no test happens to run it.
"""
from __future__ import annotations

import ast
import os

import pytest

from tests.parity import REPO

# package -> the project packages it may import (besides itself)
ALLOWED = {
    "evaluation": {"utils"},
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


def _imports(package: str) -> dict[str, set[str]]:
    """``{file: top-level names it imports absolutely}`` for every source file of ``package``."""
    out = {}
    for folder, _, files in os.walk(os.path.join(REPO, package)):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
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
