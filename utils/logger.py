"""Logging set-up: one ``tsd`` logger, console (rank 0) + ``OUTPUT_DIR/<name>`` file."""
from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "tsd"
_FMT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logger(output_dir: str | None, filename: str = "train_log.txt", rank: int = 0) -> logging.Logger:
    """Configure the ``tsd`` logger once per process.

    The console shows INFO and above on rank 0 only; the file (``output_dir/filename``, or
    ``filename.rank<N>`` on other ranks) also keeps DEBUG records such as tracebacks of user errors.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    if rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.INFO)
        ch.setFormatter(logging.Formatter(_FMT, datefmt="%H:%M:%S"))
        logger.addHandler(ch)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        name = filename if rank == 0 else f"{filename}.rank{rank}"
        fh = logging.FileHandler(os.path.join(output_dir, name), mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter(_FMT))
        logger.addHandler(fh)
    return logger


def get_logger() -> logging.Logger:
    """The project logger (handlers are added by :func:`setup_logger`)."""
    return logging.getLogger(LOGGER_NAME)
