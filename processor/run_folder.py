"""A training run's folder and the config it was trained with: no run lost, none continued or evaluated
under another model.

* ``OUTPUT_DIR/.train.lock``: held by the training that writes the folder (:class:`RunLock`);
* a new training refuses a folder that holds a run, unless ``--overwrite`` (:func:`prepare_new_run`);
* ``--resume`` refuses a config that differs from the run's, in model keys always, in other keys
  unless ``--allow-config-change`` (:func:`check_resume_config`);
* evaluating ``TEST.WEIGHT`` refuses a config whose model keys differ from the run's ``config.yaml``
  (:func:`check_weight_config`).

The checkpoint files themselves are :mod:`processor.checkpointer`'s. This module defines ``train.py``'s
``--overwrite`` and ``--allow-config-change`` (their meaning is here) and imports no torch: ``train.py``
imports it before it reads its command line, which then fails in a fraction of a second.
"""
from __future__ import annotations

import os
import re
from typing import Any

import yaml

from config.diff import config_diff, format_diff
from config.run_config import run_config_beside
from utils.errors import CheckpointError
from utils.logger import get_logger

__all__ = ["ALLOW_CONFIG_CHANGE_FLAG", "OVERWRITE_FLAG", "MODEL_KEYS", "RESUME_FREE_KEYS", "LOCK_FILE",
           "check_resume_config", "check_weight_config", "run_files", "prepare_new_run", "RunLock"]

# train.py's flags, whose meaning is this module's (it names them in its messages): resume although
# config keys differ from the run's (check_resume_config); start over in an OUTPUT_DIR that holds a run,
# deleting its checkpoints (prepare_new_run).
ALLOW_CONFIG_CHANGE_FLAG = "--allow-config-change"
OVERWRITE_FLAG = "--overwrite"

# Keys that change the model's tensors or what its weights mean: a checkpoint only fits a config
# with the same values (INPUT.SIZE_TEST: the positional embedding's grid at evaluation).
MODEL_KEYS = ("MODEL.ARCH", "MODEL.TRANSFORMER_TYPE", "MODEL.NUM_PARTS", "INPUT.MASK_PREPROCESS",
              "MODEL.STRIDE_SIZE", "MODEL.SIE_CAMERA", "MODEL.SIE_VIEW", "MODEL.SIE_COE", "MODEL.DECODER_HEADS",
              "MODEL.DECODER_FFN_RATIO", "MODEL.WITH_FORE_HEAD", "INPUT.SIZE_TEST")
# Keys a resumed run may change freely (prefixes): places, logging, evaluation and the speed switches
# that compute the same numbers (the cache and the batched augmentation give bitwise the batches of
# the per-sample path; a compiled model computes the same function), not the training numbers.
RESUME_FREE_KEYS = ("OUTPUT_DIR", "DATASETS.ROOT_DIR", "DATALOADER.NUM_WORKERS", "DATALOADER.CACHE",
                    "INPUT.BATCH_AUGMENT", "SOLVER.COMPILE", "SOLVER.DDP_STATIC_GRAPH", "SOLVER.DIST_TIMEOUT_MINUTES",
                    "MODEL.DEVICE", "MODEL.PRETRAIN_CHOICE",
                    "MODEL.PRETRAIN_PATH", "SOLVER.LOG_PERIOD", "SOLVER.EVAL_PERIOD", "SOLVER.CHECKPOINT_PERIOD",
                    "SOLVER.TENSORBOARD", "TEST.")


def check_resume_config(path: str, cfg, allow_change: bool = False) -> None:
    """Refuse to resume from ``path`` under a config that differs from the one it was trained with.

    Keys of :data:`RESUME_FREE_KEYS` may change. Model keys (:data:`MODEL_KEYS`) never may (the
    weights would not fit); other keys (learning rate, epochs, losses ...) only with ``allow_change``
    (``--allow-config-change``), which logs them. Reads the file memory-mapped: run it before the data.

    Raises:
        CheckpointError: naming every differing key with its saved and current value.
    """
    from .checkpointer import read_state

    state = read_state(path, mmap=True)
    saved = state.get("config")
    if not isinstance(saved, str):
        get_logger().warning(f"{path} does not record its config (written by an older version); "
                             f"cannot check that the config is unchanged")
        return
    model_diff = config_diff(saved, cfg, MODEL_KEYS)
    if model_diff:
        raise CheckpointError(f"cannot resume from {path}: it was trained with another model: "
                              f"{format_diff(model_diff)}; set these keys back, or start a new OUTPUT_DIR")
    diff = config_diff(saved, cfg, ignore=RESUME_FREE_KEYS)
    if diff and not allow_change:
        raise CheckpointError(f"cannot resume from {path}: the config differs from the one it was trained with: "
                              f"{format_diff(diff)}; set these keys back, or add {ALLOW_CONFIG_CHANGE_FLAG} to "
                              f"continue with the new values")
    if diff:
        get_logger().warning(f"resuming with a changed config ({ALLOW_CONFIG_CHANGE_FLAG}): {format_diff(diff)}")


def check_weight_config(weight: str, cfg) -> None:
    """Compare the model keys of ``cfg`` with the run that wrote ``weight`` (its ``config.yaml``).

    Does nothing for a weight file without a ``config.yaml`` beside it (e.g. the reference's).

    Raises:
        CheckpointError: naming the differing keys and the ``KEY VALUE`` pairs that fix them.
    """
    saved_path = run_config_beside(weight)
    if saved_path is None:
        return
    with open(saved_path) as f:
        diff = config_diff(f.read(), cfg, MODEL_KEYS)
    if diff:
        fix = " ".join(f"{k} {_cli_value(a)}" for k, a, _ in diff)
        raise CheckpointError(f"TEST.WEIGHT {weight} was trained with another config ({saved_path}): "
                              f"{format_diff(diff)}; add {fix} to the command line, or leave out --config_file "
                              f"to evaluate with that config.yaml")


def _cli_value(v: Any) -> str:
    return f"'{list(v)}'" if isinstance(v, (list, tuple)) else str(v)


# Held (flock) by the training process that writes an OUTPUT_DIR, for as long as it runs.
LOCK_FILE = ".train.lock"


def run_files(folder: str, prefix: str) -> list[str]:
    """The files of a training run in ``folder``: ``last.pth``, the ``{prefix}_<epoch>.pth`` weight files
    (by epoch) and ``val_results.json``, those that exist."""
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)\.pth")
    names = sorted((n for n in os.listdir(folder) if pattern.fullmatch(n)),
                   key=lambda n: int(pattern.fullmatch(n).group(1))) if os.path.isdir(folder) else []
    names = ["last.pth", *names, "val_results.json"]
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def _describe_run(files: list[str]) -> str:
    """``last.pth after epoch 3 of 4, transformer_2.pth, ...`` for a refusal message."""
    from .checkpointer import read_state

    parts = []
    for path in files:
        name = os.path.basename(path)
        if name == "last.pth":
            try:
                state = read_state(path, mmap=True)
                total = (yaml.safe_load(state.get("config") or "") or {}).get("SOLVER", {}).get("MAX_EPOCHS")
                done = f"epoch {state['epoch']}" + (f" of {total}" if total else "")
                name = f"last.pth after {done}" + (", finished" if total and state["epoch"] >= total else "")
            except CheckpointError:
                name = "last.pth (unreadable)"
        parts.append(name)
    return ", ".join(parts)


def prepare_new_run(folder: str, prefix: str, overwrite: bool = False) -> list[str]:
    """Make sure that a training that starts afresh in ``folder`` replaces no earlier run's files silently.

    Without ``overwrite`` a folder that holds ``last.pth`` or ``{prefix}_<epoch>.pth`` is refused; with
    it (``--overwrite``) those files and ``val_results.json`` are deleted (by rank 0; returns their
    paths), so that no stale checkpoint of the earlier run is mistaken for one of the new run; the log
    file stays and goes on. A folder
    with only a config and a log (a run that stopped before its first epoch ended) starts over as it is.

    Raises:
        CheckpointError: naming the folder, its run and the ways out.
    """
    files = run_files(folder, prefix)
    checkpoints = [f for f in files if f.endswith(".pth")]
    if not checkpoints:
        return []
    if not overwrite:
        raise CheckpointError(f"OUTPUT_DIR {folder} holds a training run ({_describe_run(checkpoints)}); continue it "
                              f"with --resume, choose another OUTPUT_DIR, or add {OVERWRITE_FLAG} to start over "
                              f"(deleting its checkpoints)")
    from utils import comm

    if comm.is_main_process():
        for path in files:
            os.remove(path)
    return files


class RunLock:
    """An exclusive ``flock`` on ``OUTPUT_DIR/.train.lock``, held while a training writes the folder.

    The kernel releases it when the process ends, however it ends (``kill -9`` included), so a stale
    file never blocks. File systems without ``flock`` (some network mounts) skip the check.
    """

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_FILE)
        self._file = None

    def acquire(self) -> RunLock:
        """Take the lock (rank 0 of a run).

        Raises:
            CheckpointError: another process holds it: a training runs in the folder now.
        """
        import fcntl

        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "?"
            f.close()
            folder = os.path.dirname(self.path)
            raise CheckpointError(f"OUTPUT_DIR {folder} is in use: a training is running there now (pid {owner}); "
                                  f"wait for it to end or stop it, or choose another OUTPUT_DIR") from None
        except OSError:  # no flock on this file system: nothing to check
            f.close()
            return self
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        """Let the lock go (also done by the kernel at process exit)."""
        if self._file is not None:
            self._file.close()
            self._file = None
