"""Train TSD (or the ViT baseline) from a yacs config.

    .venv/bin/python train.py --config_file configs/OCC_Duke/vit_base.yml [KEY VALUE ...]
    .venv/bin/python train.py --config_file ... [KEY VALUE ...] --resume   # continue from OUTPUT_DIR/last.pth
    .venv/bin/python train.py --config_file ... [KEY VALUE ...] --resume --allow-config-change   # e.g. another SOLVER.BASE_LR
    .venv/bin/python train.py --config_file ... [KEY VALUE ...] --overwrite   # start over where a run was (deletes its checkpoints)
    .venv/bin/torchrun --nproc_per_node 2 train.py --config_file ...
"""
from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from config import load_cfg  # noqa: E402
from utils.cli import (ALLOW_CONFIG_CHANGE_FLAG, OVERWRITE_FLAG, check_device, check_output_dir,  # noqa: E402
                       config_argparser, run_main)


def build_trainer(cfg, resume: str | None = None):
    """Everything a run needs: data, model, loss, solver, hooks. Returns the :class:`Trainer`."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from datasets import make_batch_transform, make_dataloader
    from loss import accuracy, make_loss
    from model import make_model
    from processor.checkpointer import Checkpointer
    from processor.events import JSONWriter, TensorboardWriter
    from processor.hooks import CheckpointHook, EvalHook, IterationTimer, LoggingHook, PeriodicWriter
    from processor.inference import evaluate, format_results, results_to_json
    from processor.trainer import Trainer, amp_settings, compile_model
    from solver import create_scheduler, make_optimizer
    from utils import comm
    from utils.logger import get_logger
    from utils.misc import resolve_device, set_tf32

    logger = get_logger()
    device = resolve_device(cfg.MODEL.DEVICE)
    set_tf32(cfg.MODEL.TF32, device)
    train_loader, val_loader, num_query, num_classes, camera_num, view_num = make_dataloader(cfg)
    model = make_model(cfg, num_classes, camera_num, view_num).to(device)
    loss_fn = make_loss(cfg, num_classes)
    optimizer = make_optimizer(cfg, model)
    scheduler = create_scheduler(cfg, optimizer)
    amp_dtype, use_scaler = amp_settings(cfg.SOLVER.AMP, cfg.SOLVER.AMP_DTYPE, device)
    if cfg.SOLVER.COMPILE:  # before the DDP wrapper, so that evaluation (on the bare model) is compiled too
        compile_model(model, cfg.SOLVER.COMPILE_MODE)
    if comm.get_world_size() > 1:
        # The reference keeps parameters that never receive gradients (checkpoint compatibility): DDP
        # either looks for them after every forward (find_unused_parameters) or, with a static graph,
        # learns them in the first step (SOLVER.DDP_STATIC_GRAPH; same gradients, no per-step search).
        static = cfg.SOLVER.DDP_STATIC_GRAPH
        model = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if device == "cuda" else None,
                                        find_unused_parameters=not static, static_graph=static)
    trainer = Trainer(model, loss_fn, optimizer, scheduler, train_loader, device, cfg.SOLVER.MAX_EPOCHS,
                      amp_dtype=amp_dtype, use_scaler=use_scaler, max_nonfinite=cfg.SOLVER.MAX_NONFINITE,
                      accuracy_fn=accuracy, batch_transform=make_batch_transform(cfg))
    checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, optimizer, scheduler, trainer.scaler)
    main = comm.is_main_process()
    trainer.register_hooks([
        IterationTimer() if main else None,
        LoggingHook(cfg.SOLVER.LOG_PERIOD) if main else None,
        # Every rank evaluates its shard of the val set; rank 0 gets the results (None elsewhere).
        EvalHook(cfg.SOLVER.EVAL_PERIOD, lambda: evaluate(cfg, model, val_loader, num_query, device), format_results,
                 cfg.OUTPUT_DIR, results_to_json),
        # After the validation (its metrics go into the epoch's line), before the checkpoint (which saves
        # the metrics file's position).
        PeriodicWriter([JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.jsonl")),
                        TensorboardWriter(os.path.join(cfg.OUTPUT_DIR, "tb")) if cfg.SOLVER.TENSORBOARD else None],
                       cfg.SOLVER.LOG_PERIOD) if main else None,
        # On every rank: saving gathers each rank's RNG state (rank 0 writes the files).
        CheckpointHook(checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.MODEL.NAME, extra={"config": cfg.dump()}),
    ])
    if resume:  # after the hooks exist: last.pth holds their states (the validation history)
        trainer.start_epoch = checkpointer.resume(resume, trainer.hooks) + 1
    logger.info(f"training on {device} ({comm.get_world_size()} process(es)), AMP {amp_dtype}, "
                f"{'compiled (' + cfg.SOLVER.COMPILE_MODE + ')' if cfg.SOLVER.COMPILE else 'eager'}, "
                f"{len(train_loader)} iterations/epoch, epochs {trainer.start_epoch}..{cfg.SOLVER.MAX_EPOCHS}")
    return trainer


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

    from processor.checkpointer import CONFIG_FILE, RunLock, check_resume_config, prepare_new_run
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
        cfg.defrost(); cfg.OUTPUT_DIR = output_dir; cfg.freeze()
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
