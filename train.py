"""Train TSD (or the ViT baseline) from a yacs config.

    .venv/bin/python train.py --config_file configs/OCC_Duke/vit_base.yml [KEY VALUE ...]
    # continue from OUTPUT_DIR/last.pth; with changed keys (e.g. another SOLVER.BASE_LR):
    .venv/bin/python train.py --config_file ... [KEY VALUE ...] --resume
    .venv/bin/python train.py --config_file ... [KEY VALUE ...] --resume --allow-config-change
    # start over where a run was (deletes its checkpoints)
    .venv/bin/python train.py --config_file ... [KEY VALUE ...] --overwrite
    .venv/bin/torchrun --nproc_per_node 2 train.py --config_file ...
"""
from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from config import load_cfg
from config.run_config import CONFIG_FILE
from processor.builder import build_trainer
from processor.run_folder import ALLOW_CONFIG_CHANGE_FLAG, OVERWRITE_FLAG, RunLock, check_resume_config, prepare_new_run
from utils.cli import check_device, check_output_dir, config_argparser, run_main

# A config key (``SOLVER.BASE_LR``, ``OUTPUT_DIR``) as opposed to a checkpoint path.
_CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*")


def parse_args(argv: list[str] | None = None) -> tuple[str, list[str], str | None, bool, bool]:
    """``(config file, KEY VALUE overrides, --resume value: None, 'auto' or a path, --allow-config-change,
    --overwrite)``.

    The flags are accepted before or after the overrides: argparse would read ``--resume KEY VALUE`` as
    PATH = KEY, and leaves trailing flags among the overrides (they take the rest of the line).
    """
    parser = config_argparser("Train TSD")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                        help="continue from PATH (default: OUTPUT_DIR/last.pth)")
    parser.add_argument(ALLOW_CONFIG_CHANGE_FLAG, action="store_true",
                        help="with --resume: continue although config keys (learning rate, epochs ...) differ "
                             "from the run's; model keys must always match")
    parser.add_argument(OVERWRITE_FLAG, action="store_true",
                        help="start over in an OUTPUT_DIR that holds a run, deleting its checkpoints "
                             "(without it such a folder is refused)")
    args = parser.parse_args(argv)
    opts, resume, allow, overwrite = list(args.opts), args.resume, args.allow_config_change, args.overwrite
    for flag in (ALLOW_CONFIG_CHANGE_FLAG, OVERWRITE_FLAG):
        if flag in opts:
            opts.remove(flag)
            allow, overwrite = allow or flag == ALLOW_CONFIG_CHANGE_FLAG, overwrite or flag == OVERWRITE_FLAG
    if opts[-1:] == ["--resume"]:
        opts, resume = opts[:-1], "auto"
    elif resume not in (None, "auto") and not os.path.exists(resume) and _CONFIG_KEY.fullmatch(resume):
        opts, resume = [resume, *opts], "auto"
    return args.config_file, opts, resume, allow, overwrite


def main() -> int:
    config_file, opts, resume, allow_config_change, overwrite = parse_args()
    cfg = load_cfg(config_file, opts)

    from utils import comm
    from utils.logger import setup_logger
    from utils.misc import apply_device_id, resolve_device, set_seed

    # Places and devices before any work (one error line, no log file yet). CUDA_VISIBLE_DEVICES
    # must be set before the first CUDA query.
    apply_device_id(cfg.MODEL.DEVICE_ID)
    check_device(cfg.MODEL.DEVICE)
    output_dir = cfg.OUTPUT_DIR or "logs/default"
    check_output_dir(output_dir)
    rank, _ = comm.init_distributed(resolve_device(cfg.MODEL.DEVICE), cfg.SOLVER.DIST_TIMEOUT_MINUTES)
    if not cfg.OUTPUT_DIR:
        cfg.defrost()
        cfg.OUTPUT_DIR = output_dir
        cfg.freeze()
    # No run is lost: a folder that a training writes now is refused, and one that holds a run only with
    # --resume or --overwrite; checked before the log file, which would append to that run's log.
    lock = RunLock(output_dir).acquire() if rank == 0 else None
    deleted = prepare_new_run(output_dir, cfg.MODEL.NAME, overwrite) if resume is None else []
    logger = setup_logger(output_dir, "train_log.txt", rank)
    logger.info(f"config file {config_file}, overrides {opts}")
    if deleted:
        logger.warning(f"{OVERWRITE_FLAG}: deleted the earlier run's {', '.join(map(os.path.basename, deleted))}")
    if comm.is_dist():
        logger.info(f"torch.distributed: {comm.backend()} backend, rank {rank} of {comm.get_world_size()}, collectives "
                    f"time out after {cfg.SOLVER.DIST_TIMEOUT_MINUTES:g} min ({comm.TIMEOUT_KEY})")
    if resume == "auto":
        resume = os.path.join(output_dir, "last.pth")
    if resume:  # before any data is read, and before config.yaml is replaced
        check_resume_config(resume, cfg, allow_config_change)
    if rank == 0:
        with open(os.path.join(output_dir, CONFIG_FILE), "w") as f:
            f.write(cfg.dump())
    # Per-rank streams for the model's own randomness (teacher noise, drop path). The initial weights
    # still agree: DDP broadcasts rank 0's parameters and buffers when it wraps the model. Sampling and
    # augmentation are seeded by SOLVER.SEED alone (rank-aware, see datasets.make_train_loader).
    set_seed(cfg.SOLVER.SEED + rank)
    trainer = build_trainer(cfg, resume)
    trainer.train()
    comm.cleanup()
    logger.info(f"done; outputs in {output_dir}")
    if lock is not None:
        lock.release()
    return 0


if __name__ == "__main__":
    run_main(main)
