"""Evaluate a checkpoint on the standard Occluded-Duke protocol or the TSD new benchmark.

    .venv/bin/python test.py TEST.WEIGHT logs/occ_duke/tsd_5/transformer_90.pth      # with the run's config.yaml
    .venv/bin/python test.py TEST.WEIGHT logs/occ_duke/tsd_5/transformer_90.pth \
        DATASETS.NAMES new_occ_duke TEST.NEW_METRIC True                               # ALL / NPO / NTP
    .venv/bin/python test.py --config_file configs/OCC_Duke/vit_base.yml TEST.WEIGHT W.pth   # a checkpoint
                                                                 # without config.yaml, e.g. of the original code

Without ``--config_file`` the config is the ``config.yaml`` that train.py wrote beside ``TEST.WEIGHT``
(model, data folder, device: everything as trained); ``KEY VALUE`` pairs override it. With
``--config_file`` (a config of configs/, or a run's saved config.yaml) keys of the model that differ
from the run that wrote ``TEST.WEIGHT`` are named before any data is read. A checkpoint written by the
original TSD code loads as it is; no ImageNet weight file is needed. Runs in one process (no torchrun).

Prints a table and writes ``results.json`` and ``test_log.txt`` to ``OUTPUT_DIR`` when the command line
sets it, else, with the run's own config, to ``<run>/test_<DATASETS.NAMES>`` (``test_occ_duke``,
``test_new_occ_duke``, ...; ``_rerank`` added with ``TEST.RE_RANKING``; tools/summarize_runs.py reads
them), else to the config file's ``OUTPUT_DIR``.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from config.run_config import EVAL_CONFIG_HELP, check_test_weight, eval_config_file, load_eval_cfg, run_config_beside
from utils.cli import check_device, check_output_dir, config_argparser, run_main


def results_dir(cfg, opts: list[str], config_file: str) -> str:
    """Where results go: ``OUTPUT_DIR`` of the command line; with the run's own ``config.yaml``
    (whose ``OUTPUT_DIR`` is the training run) ``<run>/test_<DATASETS.NAMES>[_rerank]``, one folder per
    test set and protocol; else the config's ``OUTPUT_DIR`` (``logs/test`` when empty)."""
    run_config = run_config_beside(cfg.TEST.WEIGHT) if cfg.TEST.WEIGHT else None
    if "OUTPUT_DIR" in opts[0::2] or run_config is None or os.path.abspath(config_file) != os.path.abspath(run_config):
        return cfg.OUTPUT_DIR or os.path.join("logs", "test")
    name = f"test_{cfg.DATASETS.NAMES}" + ("_rerank" if cfg.TEST.RE_RANKING else "")
    return os.path.join(os.path.dirname(cfg.TEST.WEIGHT), name)


def main() -> int:
    args = config_argparser("Evaluate a TSD checkpoint", config_required=False,
                            config_help=EVAL_CONFIG_HELP).parse_args()
    config_file = eval_config_file(args.config_file, args.opts)
    cfg = load_eval_cfg(config_file, args.opts)

    from datasets import make_test_loader
    from model import make_model
    from processor.inference import evaluate, format_results, results_to_json
    from processor.run_folder import check_weight_config
    from utils.logger import setup_logger
    from utils.misc import apply_device_id, resolve_device, set_tf32

    check_test_weight(cfg)
    check_weight_config(cfg.TEST.WEIGHT, cfg)  # a config that does not fit the weights: the first thing to fix
    apply_device_id(cfg.MODEL.DEVICE_ID)  # before the first CUDA query
    check_device(cfg.MODEL.DEVICE)
    output_dir = results_dir(cfg, args.opts, config_file)
    check_output_dir(output_dir)
    logger = setup_logger(output_dir, "test_log.txt")
    logger.info(f"config {config_file}" + (" (the run's own)" if not args.config_file else "")
                + (f", overrides {args.opts}" if args.opts else ""))
    device = resolve_device(cfg.MODEL.DEVICE)
    set_tf32(cfg.MODEL.TF32, device)
    val_loader, num_query, num_classes, camera_num, view_num = make_test_loader(cfg)
    model = make_model(cfg, num_classes, camera_num, view_num)
    model.load_param(cfg.TEST.WEIGHT)
    model.to(device)
    protocol = "new benchmark (ALL / NPO / NTP)" if cfg.TEST.NEW_METRIC else "standard protocol"
    logger.info(f"evaluating {cfg.TEST.WEIGHT} on {cfg.DATASETS.NAMES}, {protocol}"
                + (", re-ranking" if cfg.TEST.RE_RANKING else "") + (", flip" if cfg.TEST.FLIP_FEATS else ""))
    results = evaluate(cfg, model, val_loader, num_query, device)
    logger.info(format_results(results, f"{cfg.DATASETS.NAMES} - {os.path.basename(cfg.TEST.WEIGHT)}"))
    path = os.path.join(output_dir, "results.json")
    with open(path, "w") as f:
        json.dump({"weight": cfg.TEST.WEIGHT, "dataset": cfg.DATASETS.NAMES, "new_metric": cfg.TEST.NEW_METRIC,
                   "re_ranking": cfg.TEST.RE_RANKING, "results": results_to_json(results)}, f, indent=1)
    logger.info(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
