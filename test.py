"""Evaluate a checkpoint on the standard Occluded-Duke protocol or the TSD new benchmark.

    python test.py --config_file configs/OCC_Duke/vit_base.yml TEST.WEIGHT logs/occ_duke/tsd_5/transformer_90.pth
    python test.py --config_file configs/Occ_Duke_new/vit_base.yml TEST.WEIGHT ...   # ALL / NPO / NTP

Checkpoints of the reference implementation load as they are; no ImageNet weight file is needed.
A weight file written by train.py has the run's config.yaml beside it: keys of the model that differ
from the given config are named before any data is read.
Prints a table and writes OUTPUT_DIR/results.json.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from utils.cli import (check_device, check_output_dir, check_test_weight, config_argparser,  # noqa: E402
                       load_eval_cfg, run_main)


def main() -> int:
    args = config_argparser("Evaluate a TSD checkpoint").parse_args()
    cfg = load_eval_cfg(args.config_file, args.opts)

    from datasets import make_test_loader
    from model import make_model
    from processor.checkpointer import check_weight_config
    from processor.inference import evaluate, format_results, results_to_json
    from utils.logger import setup_logger
    from utils.misc import apply_device_id, resolve_device, set_tf32

    apply_device_id(cfg.MODEL.DEVICE_ID)  # before the first CUDA query
    check_device(cfg.MODEL.DEVICE)
    output_dir = cfg.OUTPUT_DIR or "logs/test"
    check_output_dir(output_dir)
    logger = setup_logger(output_dir, "test_log.txt")
    check_test_weight(cfg)
    check_weight_config(cfg.TEST.WEIGHT, cfg)
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
