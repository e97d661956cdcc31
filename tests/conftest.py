"""Shared pytest fixtures: offline timm, repo on sys.path, the tiny synthetic data set, parity cases."""
from __future__ import annotations

import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never try to download
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """A tiny synthetic Occluded-Duke (about 20 ids) generated once per test session.

    Returns the data root, i.e. the folder that contains ``Occluded_Duke/``.
    """
    from tools.synthetic.writer import generate

    root = str(tmp_path_factory.mktemp("syn_data"))
    generate(root, scale="tiny", seed=0)
    return root


@pytest.fixture
def data_copy(synthetic_root, tmp_path) -> str:
    """A private copy of the synthetic data root that a test may damage."""
    return shutil.copytree(synthetic_root, str(tmp_path / "data"))
