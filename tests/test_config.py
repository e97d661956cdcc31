"""Config system: defaults, _BASE_ inheritance, CLI overrides, clear errors."""
import glob
import os

import pytest

from config import PART_GROUP_SIZES, get_cfg_defaults, load_cfg
from utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*", "*.yml"))),
                         ids=lambda p: os.path.relpath(p, REPO))
def test_every_shipped_config_loads(path):
    cfg = load_cfg(path)
    assert cfg.MODEL.NUM_PARTS == PART_GROUP_SIZES[cfg.INPUT.MASK_PREPROCESS]


def test_paper_config_matches_reference_run_script():
    cfg = load_cfg(os.path.join(REPO, "configs/OCC_Duke/vit_base.yml"))
    assert cfg.SOLVER.BASE_LR == 0.004 and cfg.SOLVER.OPTIMIZER_NAME == "SGD" and cfg.SOLVER.MAX_EPOCHS == 120
    assert cfg.MODEL.WITH_FORE_HEAD and cfg.MODEL.WITH_DIVERSE_LOSS and cfg.MODEL.NO_MARGIN
    assert cfg.INPUT.MASK_PREPROCESS == "five" and cfg.MODEL.NUM_PARTS == 5
    assert list(cfg.INPUT.SIZE_TRAIN) == [256, 128] and cfg.DATALOADER.NUM_INSTANCE == 4
    assert cfg.SOLVER.BIAS_LR_FACTOR == 2 and cfg.SOLVER.WEIGHT_DECAY == 1e-4
    assert cfg.MODEL.DEVICE_ID == "0"


def test_base_inheritance_and_override_order(tmp_path):
    base = tmp_path / "base.yml"
    base.write_text("SOLVER:\n  BASE_LR: 0.1\n  MAX_EPOCHS: 7\n")
    child = tmp_path / "sub" / "child.yml"
    child.parent.mkdir()
    child.write_text("_BASE_: ../base.yml\nSOLVER:\n  MAX_EPOCHS: 9\n")
    cfg = load_cfg(str(child), ["SOLVER.MAX_EPOCHS", "11"])
    assert cfg.SOLVER.BASE_LR == 0.1 and cfg.SOLVER.MAX_EPOCHS == 11
    assert cfg.is_frozen()
    assert load_cfg(str(child)).SOLVER.MAX_EPOCHS == 9


def test_new_benchmark_config_inherits_paper_settings():
    cfg = load_cfg(os.path.join(REPO, "configs/Occ_Duke_new/vit_base.yml"))
    assert cfg.DATASETS.NAMES == "new_occ_duke" and cfg.TEST.NEW_METRIC and cfg.SOLVER.BASE_LR == 0.004


@pytest.mark.parametrize("opts,needle", [
    (["SOLVER.BASE_LRR", "1"], "did you mean 'SOLVER.BASE_LR'"),
    (["MODEL.NUM_PART", "5"], "did you mean 'MODEL.NUM_PARTS'"),
    (["SOLVER.MAX_EPOCHS", "abc"], "SOLVER.MAX_EPOCHS"),
    (["SOLVER.MAX_EPOCHS"], "KEY VALUE pairs"),
    (["MODEL.NUM_PARTS", "8"], "set MODEL.NUM_PARTS 5"),
    (["MODEL.ARCH", "resnet"], "MODEL.ARCH must be one of"),
])
def test_bad_overrides_are_one_clear_line(opts, needle):
    with pytest.raises(ConfigError) as e:
        load_cfg(None, opts)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_in_yaml_names_file_and_suggestion(tmp_path):
    f = tmp_path / "typo.yml"
    f.write_text("SOLVER:\n  BASE_LR: 0.1\n  WARMUP_EPOCH: 3\n")
    with pytest.raises(ConfigError, match=r"SOLVER.WARMUP_EPOCH.*typo.yml.*SOLVER.WARMUP_EPOCHS"):
        load_cfg(str(f))


def test_missing_config_file_and_base_cycle(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_cfg(str(tmp_path / "nope.yml"))
    a = tmp_path / "a.yml"
    a.write_text("_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_cfg(str(a))


def test_defaults_are_reference_defaults():
    c = get_cfg_defaults()
    assert c.MODEL.NUM_PARTS == 5 and c.INPUT.MASK_PREPROCESS == "five" and c.MODEL.SIE_COE == 3.0
    assert c.SOLVER.WARMUP_FACTOR == 0.01 and c.SOLVER.MIN_LR_FACTOR == 0.002 and c.MODEL.MASK_LOSS_WEIGHT == 1.0
