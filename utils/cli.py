"""Shared command-line plumbing of ``train.py``, ``test.py`` and ``tools/*``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn

from .errors import TSDError, user_message
from .logger import get_logger


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one ``error: ...`` line (with the usage) and exit code 2,
    like every other user error of the entry points."""

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"error: {message}; {usage}\n")


def config_argparser(description: str, config_required: bool = True) -> argparse.ArgumentParser:
    """TransReID's CLI: ``--config_file X.yml`` then ``KEY VALUE`` overrides (positional ``opts``)."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--config_file", required=config_required, metavar="FILE", help="path to a YAML config")
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



def load_eval_cfg(config_file: str, opts: list[str]):
    """Config for evaluating ``TEST.WEIGHT``: overrides applied and ``MODEL.PRETRAIN_CHOICE none``
    (the checkpoint overwrites every backbone weight, so the ImageNet file is never needed)."""
    from config import load_cfg

    return load_cfg(config_file, list(opts) + ["MODEL.PRETRAIN_CHOICE", "none"])


def check_test_weight(cfg) -> None:
    """Raise a one-line ``CheckpointError`` when ``TEST.WEIGHT`` is empty or not a file."""
    from .errors import CheckpointError

    weight = cfg.TEST.WEIGHT
    if not weight:
        raise CheckpointError("no checkpoint given: add TEST.WEIGHT path/to/transformer_90.pth to the command")
    if not os.path.isfile(weight):
        raise CheckpointError(f"TEST.WEIGHT {weight} does not exist; check the path "
                              f"(training writes OUTPUT_DIR/{cfg.MODEL.NAME}_<epoch>.pth)")
