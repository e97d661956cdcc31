"""Build the trainer of a run from its config (detectron2's ``engine.defaults``): data, model, loss,
solver, checkpointer and hooks, as ``train.py`` runs them; the tests and ``tools/gpu_report.py`` build
the same trainer.

The data, model and training packages are imported when a trainer is built, not with this module
(``train.py`` imports it at its start): after ``train.py`` has loaded and checked the config and
exported ``MODEL.DEVICE_ID`` as ``CUDA_VISIBLE_DEVICES``.
"""
from __future__ import annotations

import os

__all__ = ["build_trainer"]


def build_trainer(cfg, resume: str | None = None):
    """Everything a run needs: data, model, loss, solver, hooks. Returns the :class:`Trainer`.

    ``resume``: a ``last.pth`` to continue from (the hooks' states included), or None for a new run.
    """
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
        trainer.start_epoch = checkpointer.resume(resume, trainer.hooks, trainer) + 1
    # The identity sampler's epochs differ by a few batches: the first epoch's count stands for them all.
    epochs = (f"epochs {trainer.start_epoch}..{cfg.SOLVER.MAX_EPOCHS}" if trainer.start_epoch <= cfg.SOLVER.MAX_EPOCHS
              else f"nothing left to train (the run ended with epoch {trainer.start_epoch - 1})")
    logger.info(f"training on {device} ({comm.get_world_size()} process(es)), AMP {amp_dtype}, "
                f"{'compiled (' + cfg.SOLVER.COMPILE_MODE + ')' if cfg.SOLVER.COMPILE else 'eager'}, "
                f"about {len(train_loader)} iterations/epoch, {epochs}")
    return trainer
