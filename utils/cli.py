"""Shared command-line plumbing of ``train.py``, ``test.py`` and ``tools/*``."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from .errors import TSDError, user_message
from .logger import get_logger

# Oldest NVIDIA driver per CUDA major version (NVIDIA's CUDA compatibility table, minor version
# compatibility: any 13.x build runs on >= 580, any 12.x on >= 525).
MIN_DRIVER = {13: 580, 12: 525, 11: 450}


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one ``error: ...`` line (with the usage) and exit code 2,
    like every other user error of the entry points."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"error: {message}; {usage}\n")


def config_argparser(description: str, config_required: bool = True,
                     config_help: str = "path to a YAML config") -> argparse.ArgumentParser:
    """TransReID's CLI: ``--config_file X.yml`` then ``KEY VALUE`` overrides (positional ``opts``)."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--config_file", required=config_required, metavar="FILE", help=config_help)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.004")
    return parser


def run_main(main: Callable[[], int | None]) -> None:
    """Run ``main`` and turn user errors into one line on stderr and exit code 2.

    The traceback of such an error is logged at DEBUG level, i.e. only into the log file.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        rc = main()
    except TSDError as e:
        get_logger().debug("user error", exc_info=True)
        print(f"error: {user_message(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rc or 0)


def check_output_dir(path: str, key: str = "OUTPUT_DIR") -> None:
    """Create ``path`` if needed and check that a file can be written there, before any work.

    Raises:
        ConfigError: naming ``key``, the folder and the reason (a plain file in the way, permissions,
            a read-only file system), so that a run does not fail at its first log line or checkpoint.
    """
    import tempfile

    from .errors import ConfigError

    blocker = path
    while blocker and not os.path.exists(blocker):
        blocker = os.path.dirname(blocker.rstrip(os.sep)) if blocker != os.sep else ""
    if blocker and not os.path.isdir(blocker):
        raise ConfigError(f"{key} {path} cannot be created: {blocker} is a plain file, not a folder; "
                          f"choose another {key} or move that file")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ConfigError(f"{key} {path} is not writable ({e.strerror or e}); choose another {key} "
                          f"or fix the folder's permissions") from e


def check_device(device: str) -> None:
    """Refuse ``MODEL.DEVICE cuda`` when torch sees no GPU.

    A run configured for a GPU that silently falls back to the CPU would take days instead of hours;
    a user who wants the CPU says so with ``MODEL.DEVICE cpu``.

    Raises:
        ConfigError: naming the key, what torch sees and the fix.
    """
    import torch

    from .errors import ConfigError

    if device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        major = int(torch.version.cuda.split(".")[0]) if torch.version.cuda else None
        driver = f", which needs an NVIDIA driver >= {MIN_DRIVER[major]}" if major in MIN_DRIVER else ""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        env = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        raise ConfigError("MODEL.DEVICE is 'cuda' but torch sees no GPU "
                          f"(torch {torch.__version__}, {build}{driver}{env}); "
                          f"add MODEL.DEVICE cpu to run on the CPU (much slower), or check nvidia-smi and install the "
                          f"torch build for your driver (README, 'The GPU: CUDA driver and torch build')")
