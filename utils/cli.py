"""Shared command-line plumbing of ``train.py``, ``test.py`` and ``tools/*``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn

from .errors import TSDError, user_message
from .logger import get_logger

# train.py's flag: resume although config keys differ from the run's (processor.checkpointer).
ALLOW_CONFIG_CHANGE_FLAG = "--allow-config-change"
# train.py's flag: start over in an OUTPUT_DIR that holds a run, deleting its checkpoints (processor.checkpointer).
OVERWRITE_FLAG = "--overwrite"
# Oldest NVIDIA driver per CUDA major version (NVIDIA's CUDA compatibility table, minor version
# compatibility: any 13.x build runs on >= 580, any 12.x on >= 525).
MIN_DRIVER = {13: 580, 12: 525, 11: 450}
# The run's config, written by train.py into OUTPUT_DIR beside its weight files; test.py and the tools
# read it from beside TEST.WEIGHT when no --config_file is given.
CONFIG_FILE = "config.yaml"


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
    from .errors import CheckpointError, ConfigError

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


def load_eval_cfg(config_file: str | None, opts: list[str], model_file: str | None = None):
    """Config for evaluating ``TEST.WEIGHT``: :func:`eval_config_file` + overrides, with
    ``MODEL.PRETRAIN_CHOICE none`` (the checkpoint overwrites every backbone weight, so the ImageNet
    file is never needed)."""
    from config import load_cfg

    return load_cfg(eval_config_file(config_file, list(opts), model_file), list(opts) + ["MODEL.PRETRAIN_CHOICE", "none"])


def check_test_weight(cfg) -> None:
    """Raise a one-line ``CheckpointError`` when ``TEST.WEIGHT`` is empty or not a file."""
    from .errors import CheckpointError

    if not cfg.TEST.WEIGHT:
        raise CheckpointError("no checkpoint given: add TEST.WEIGHT <run folder>/transformer_<epoch>.pth to the command")
    _check_weight_file(cfg.TEST.WEIGHT, cfg.MODEL.NAME)


def _check_weight_file(path: str, model_name: str | None) -> None:
    """``CheckpointError`` naming ``path`` when it is not a file: ``TEST.WEIGHT`` (a weight file named
    ``<model_name>_<epoch>.pth``), or an exported model when ``model_name`` is None."""
    from .errors import CheckpointError

    if os.path.isfile(path):
        return
    if model_name is None:
        raise CheckpointError(f"{path} does not exist; check the path")
    raise CheckpointError(f"TEST.WEIGHT {path} does not exist; check the path "
                          f"(training writes OUTPUT_DIR/{model_name}_<epoch>.pth)")


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
        raise ConfigError(f"MODEL.DEVICE is 'cuda' but torch sees no GPU (torch {torch.__version__}, {build}{driver}{env}); "
                          f"add MODEL.DEVICE cpu to run on the CPU (much slower), or check nvidia-smi and install the "
                          f"torch build for your driver (README, 'The GPU: CUDA driver and torch build')")
