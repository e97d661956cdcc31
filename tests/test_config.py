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
    (["MODEL.NUM_PARTS", "8", "INPUT.MASK_PREPROCESS", "five"],
     "set INPUT.MASK_PREPROCESS eight for 8 parts, or MODEL.NUM_PARTS 5"),
    (["MODEL.NUM_PARTS", "4"],
     "MODEL.NUM_PARTS 4 in the command line: no INPUT.MASK_PREPROCESS grouping makes 4 parts; "
     "use 8 (eight), 5 (five), 3 (three) or 1 (one)"),
    (["MODEL.NUM_PARTS", "1", "MODEL.WITH_DIVERSE_LOSS", "True"], "add MODEL.WITH_DIVERSE_LOSS False for one part"),
    (["MODEL.DEVICE_ID", "0 1"], "MODEL.DEVICE_ID must be GPU indices separated by commas"),
    (["MODEL.ARCH", "resnet"], "MODEL.ARCH must be one of"),
    # checked by the validator alone (before: by the scheduler, the re-ranking, the trainer, the loaders)
    (["SOLVER.MAX_EPOCHS", "0"], "SOLVER.MAX_EPOCHS must be >= 1, got 0"),
    (["SOLVER.WARMUP_EPOCHS", "-1"], "SOLVER.WARMUP_EPOCHS must be >= 0, got -1"),
    (["TEST.RE_RANKING_K1", "0"], "TEST.RE_RANKING_K1 must be >= 1, got 0"),
    (["TEST.RE_RANKING_K2", "0"], "TEST.RE_RANKING_K2 must be >= 1, got 0"),
    (["TEST.RE_RANKING_LAMBDA", "1.5"], "TEST.RE_RANKING_LAMBDA must be in [0.0, 1.0], got 1.5"),
    (["SOLVER.COMPILE_MODE", "fast"], "SOLVER.COMPILE_MODE must be one of"),
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


@pytest.mark.parametrize("written,want", [("1", "1"), ("0,1", "0,1"), ("'0'", "0"), ("\"('0')\"", "0"),
                                          ("[0, 1]", "0,1"), ("GPU-5e0c1a2b", "GPU-5e0c1a2b")])
def test_device_id_from_yaml_in_every_written_form(tmp_path, written, want):
    """yacs decodes every string as a Python literal: '0' came back as the int 0 and was refused."""
    f = tmp_path / "c.yml"
    f.write_text(f"MODEL:\n  DEVICE_ID: {written}\n")
    assert load_cfg(str(f)).MODEL.DEVICE_ID == want


@pytest.mark.parametrize("typed,want", [("1", "1"), ("0,1", "0,1"), ("'0'", "0"), ("('0')", "0"), ("2", "2")])
def test_device_id_from_the_command_line_and_back_from_a_saved_config(tmp_path, typed, want):
    cfg = load_cfg(os.path.join(REPO, "configs/OCC_Duke/vit_base.yml"), ["MODEL.DEVICE_ID", typed])
    assert cfg.MODEL.DEVICE_ID == want
    saved = tmp_path / "config.yaml"  # what train.py writes into OUTPUT_DIR
    saved.write_text(cfg.dump())
    assert load_cfg(str(saved)).MODEL.DEVICE_ID == want
    assert load_cfg(str(saved)) == cfg


def test_a_saved_config_loads_back_unchanged(tmp_path):
    """Every shipped config survives train.py's dump: the run's config.yaml is what test.py reads."""
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*", "*.yml"))):
        cfg = load_cfg(path)
        saved = tmp_path / "config.yaml"
        saved.write_text(cfg.dump())
        assert load_cfg(str(saved)) == cfg, path


def test_string_keys_keep_numbers_as_text():
    cfg = load_cfg(None, ["OUTPUT_DIR", "2024", "MODEL.NAME", "7"])
    assert (cfg.OUTPUT_DIR, cfg.MODEL.NAME) == ("2024", "7")
    with pytest.raises(ConfigError, match="TEST.FEAT_NORM must be one of"):
        load_cfg(None, ["TEST.FEAT_NORM", "1"])


def _yaml(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


BOTH_FIVE = "MODEL:\n  NUM_PARTS: 5\nINPUT:\n  MASK_PREPROCESS: five\n"


@pytest.mark.parametrize("opts,want", [
    (["MODEL.NUM_PARTS", "3"], (3, "three")),
    (["MODEL.NUM_PARTS", "8"], (8, "eight")),
    (["MODEL.NUM_PARTS", "5"], (5, "five")),
    (["MODEL.NUM_PARTS", "1"], (1, "one")),
    (["INPUT.MASK_PREPROCESS", "three"], (3, "three")),
    (["INPUT.MASK_PREPROCESS", "eight"], (8, "eight")),
    (["INPUT.MASK_PREPROCESS", "one"], (1, "one")),
    (["MODEL.NUM_PARTS", "3", "INPUT.MASK_PREPROCESS", "three"], (3, "three")),
    ([], (5, "five")),
])
def test_one_part_key_sets_the_other(opts, want):
    cfg = load_cfg(None, opts)
    assert (cfg.MODEL.NUM_PARTS, cfg.INPUT.MASK_PREPROCESS) == want


def test_part_keys_the_latest_layer_decides(tmp_path):
    """Command line over the file over its _BASE_ chain: a layer that sets one of MODEL.NUM_PARTS /
    INPUT.MASK_PREPROCESS replaces both; a layer that sets neither leaves the earlier pair."""
    paper = os.path.join(REPO, "configs/OCC_Duke/vit_base.yml")  # sets both (5, five)
    parts = lambda cfg: (cfg.MODEL.NUM_PARTS, cfg.INPUT.MASK_PREPROCESS)  # noqa: E731
    # the command line over a file that sets both
    assert parts(load_cfg(paper, ["MODEL.NUM_PARTS", "3"])) == (3, "three")
    assert parts(load_cfg(paper, ["INPUT.MASK_PREPROCESS", "eight"])) == (8, "eight")
    # a file over its _BASE_ that sets both
    _yaml(tmp_path / "base.yml", BOTH_FIVE)
    only_grouping = _yaml(tmp_path / "eight.yml", "_BASE_: base.yml\nINPUT:\n  MASK_PREPROCESS: eight\n")
    only_count = _yaml(tmp_path / "three.yml", "_BASE_: base.yml\nMODEL:\n  NUM_PARTS: 3\n")
    assert parts(load_cfg(only_grouping)) == (8, "eight")
    assert parts(load_cfg(only_count)) == (3, "three")
    # ... and the command line over both
    assert parts(load_cfg(only_count, ["INPUT.MASK_PREPROCESS", "eight"])) == (8, "eight")
    assert parts(load_cfg(only_grouping, ["MODEL.NUM_PARTS", "1", "MODEL.WITH_DIVERSE_LOSS", "False"])) == (1, "one")
    # a file that sets neither keeps its base's pair; one that sets only one over a base that set only the other
    neither = _yaml(tmp_path / "neither.yml", "_BASE_: three.yml\nSOLVER:\n  BASE_LR: 0.1\n")
    assert parts(load_cfg(neither)) == (3, "three")
    count_base = _yaml(tmp_path / "count_only.yml", "MODEL:\n  NUM_PARTS: 8\n")
    grouping_child = _yaml(tmp_path / "grouping_child.yml",
                           "_BASE_: count_only.yml\nINPUT:\n  MASK_PREPROCESS: three\n")
    assert parts(load_cfg(count_base)) == (8, "eight")
    assert parts(load_cfg(grouping_child)) == (3, "three")
    # several bases: the later base decides, the file itself after them
    two = _yaml(tmp_path / "two.yml", "_BASE_: [eight.yml, count_only.yml]\n")
    assert parts(load_cfg(two)) == (8, "eight")
    three_last = _yaml(tmp_path / "three_last.yml", "_BASE_: [eight.yml, three.yml]\n")
    assert parts(load_cfg(three_last)) == (3, "three")
    # the shipped ablations, and a run's saved config.yaml with a one-key override
    assert parts(load_cfg(os.path.join(REPO, "configs/OCC_Duke/vit_base_three.yml"))) == (3, "three")
    saved = _yaml(tmp_path / "run" / "config.yaml", load_cfg(paper).dump())
    assert parts(load_cfg(saved, ["MODEL.NUM_PARTS", "8"])) == (8, "eight")


def test_part_keys_that_disagree_in_one_layer_name_the_fix(tmp_path):
    bad = _yaml(tmp_path / "bad.yml", "MODEL:\n  NUM_PARTS: 8\nINPUT:\n  MASK_PREPROCESS: five\n")
    with pytest.raises(ConfigError, match=r"MODEL.NUM_PARTS is 8 but INPUT.MASK_PREPROCESS 'five' makes 5 parts; "
                                          r"set INPUT.MASK_PREPROCESS eight for 8 parts, or MODEL.NUM_PARTS 5"):
        load_cfg(bad)
    # a later layer that sets one key fixes it; the file's own NUM_PARTS 4 alone names the counts
    assert load_cfg(bad, ["MODEL.NUM_PARTS", "5"]).INPUT.MASK_PREPROCESS == "five"
    four = _yaml(tmp_path / "four.yml", "_BASE_: bad.yml\nMODEL:\n  NUM_PARTS: 4\n")
    with pytest.raises(ConfigError, match=rf"MODEL.NUM_PARTS 4 in {four}: no INPUT.MASK_PREPROCESS grouping makes 4"):
        load_cfg(four)
    with pytest.raises(ConfigError, match="INPUT.MASK_PREPROCESS must be one of"):
        load_cfg(None, ["INPUT.MASK_PREPROCESS", "six"])


def test_flatten_and_diff_once_for_the_checkpointer_and_summarize_runs():
    """config.diff: the one flatten / diff (the checkpointer's resume and TEST.WEIGHT checks, the runs table)."""
    from config.diff import config_diff, differing_keys, flatten, format_diff

    assert flatten({"MODEL": {"ARCH": "tsd", "STRIDE_SIZE": [16, 16]}, "OUTPUT_DIR": ""}) == {
        "MODEL.ARCH": "tsd", "MODEL.STRIDE_SIZE": [16, 16], "OUTPUT_DIR": ""}
    old, new, newer = {"A": 1, "B": [1, 2]}, {"A": 1, "B": [1, 3], "C": 0}, {"A": 2, "B": [1, 3], "C": 0}
    assert differing_keys([old, new, newer]) == ["A", "B"]  # C is missing from the older config: not compared
    assert differing_keys([old, new], skip_missing=False) == ["B", "C"]
    assert differing_keys([old, newer], keys=["C", "A"], ignore=("C",)) == ["A"]
    saved = load_cfg(None, ["SOLVER.BASE_LR", "0.004"]).dump()
    diff = config_diff(saved, load_cfg(None, ["SOLVER.BASE_LR", "0.008", "OUTPUT_DIR", "x"]), ignore=("OUTPUT_DIR",))
    assert diff == [("SOLVER.BASE_LR", 0.004, 0.008)]
    assert format_diff(diff) == "SOLVER.BASE_LR 0.004 (now 0.008)"
