"""tools/summarize_runs.py: the run table and the curves, on a real tiny training run and on hand-made
run folders (a run still going, a test-only folder, a resumed log, folders that are not runs)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import cv2
import pytest
import yaml

from tests.parity import REPO
from tools import summarize_runs as tool
from utils.errors import DataError

DEMO_CFG = os.path.join(REPO, "configs", "demo", "tsd_tiny.yml")


def result(r1: float, m: float, minp: float) -> dict:
    return {"rank1": r1, "rank5": r1, "rank10": r1, "mAP": m, "mINP": minp, "num_valid": 10, "cmc": [r1, 1.0]}


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


# The LoggingHook's line formats (processor/hooks.py), with the logger's prefix.
PREFIX = "2026-01-01 00:00:00,000 tsd INFO: "


def iter_line(e: int, i: int, n: int, total: float, terms: dict, acc: float, lr: float) -> str:
    t = " ".join(f"{k}: {v:.3f}" for k, v in terms.items())
    return (f"{PREFIX}Epoch[{e}] Iter[{i}/{n}] loss: {total:.3f} {t} acc: {acc:.3f} lr: {lr:.2e} "
            "50.0 img/s eta: 0:00:10\n")


def epoch_line(e: int, total: float, acc: float) -> str:
    return f"{PREFIX}Epoch {e} done in 1.0s (50.0 img/s), loss {total:.3f}, acc {acc:.3f}\n"


@pytest.fixture(scope="module")
def real_run(synthetic_root, tmp_path_factory) -> str:
    """OUTPUT_DIR of train.py: the tiny TSD for 2 epochs at 128x64, validated after each epoch."""
    out = str(tmp_path_factory.mktemp("runs") / "tsd_real")
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--config_file", DEMO_CFG, "DATASETS.ROOT_DIR", synthetic_root,
         "OUTPUT_DIR", out, "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[128, 64]",
         "INPUT.SIZE_TEST", "[128, 64]",
         "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCHS", "2", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "1",
         "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.LOG_PERIOD", "2", "TEST.IMS_PER_BATCH", "64"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture
def fake_runs(tmp_path) -> dict[str, str]:
    """Hand-made folders: 'going' (ViT baseline still training, resumed once, no evaluation yet), 'tested'
    (a test.py folder of the new benchmark only), 'empty' (not a run)."""
    going = tmp_path / "vit_going"
    cfg = {"MODEL": {"ARCH": "vit", "NUM_PARTS": 5}, "SOLVER": {"BASE_LR": 0.002, "MAX_EPOCHS": 2},
           "OUTPUT_DIR": str(going)}
    write(going / "config.yaml", yaml.safe_dump(cfg))
    log = [f"{PREFIX}config file x.yml, overrides []\n"]
    # Epoch 1, then a crash and a resume that repeats epoch 1 with other numbers, then half of epoch 2.
    log += [iter_line(1, 2, 4, 9.0, {"cls_global": 5.0, "tri_global": 4.0}, 0.1, 1e-3),
            iter_line(1, 4, 4, 8.0, {"cls_global": 4.5, "tri_global": 3.5}, 0.2, 1e-3)]
    log += [iter_line(1, 2, 4, 7.0, {"cls_global": 4.0, "tri_global": 3.0}, 0.1, 1e-3), epoch_line(1, 7.5, 0.15),
            iter_line(1, 4, 4, 6.0, {"cls_global": 3.5, "tri_global": 2.5}, 0.2, 1e-3), epoch_line(1, 6.5, 0.2),
            iter_line(2, 2, 4, 5.0, {"cls_global": 3.0, "tri_global": 2.0}, 0.3, 2e-3)]
    write(going / "train_log.txt", "".join(log))
    tested = tmp_path / "tested"
    write(tested / "results.json", json.dumps({"weight": "w.pth", "new_metric": True, "results": {
        "ALL": result(0.5, 0.4, 0.1), "NPO": result(0.6, 0.5, 0.2), "NTP": result(0.3, 0.2, 0.05)}}))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a run")
    return {"going": str(going), "tested": str(tested), "empty": str(empty)}


def test_parse_train_log_resume_and_summaries():
    lines = [iter_line(1, 2, 4, 9.0, {"a": 1.0}, 0.1, 1e-3), iter_line(1, 2, 4, 7.0, {"a": 0.5}, 0.1, 1e-3),
             epoch_line(1, 7.0, 0.1), iter_line(2, 4, 4, 5.0, {"a": 0.25}, 0.3, 2e-3), epoch_line(2, 5.0, 0.3)]
    curves, epochs = tool.parse_train_log(lines)
    assert epochs == 2
    assert curves["loss"] == [(0.5, 7.0), (2.0, 5.0)]  # the resumed line replaced the first
    assert curves["a"] == [(0.5, 0.5), (2.0, 0.25)] and curves["lr"] == [(0.5, 1e-3), (2.0, 2e-3)]
    # Log period longer than an epoch: the epoch summaries are the curve.
    curves, epochs = tool.parse_train_log([epoch_line(1, 7.0, 0.1), epoch_line(2, 5.0, 0.3)])
    assert curves == {"loss": [(1.0, 7.0), (2.0, 5.0)], "acc": [(1.0, 0.1), (2.0, 0.3)]} and epochs == 2


def metrics_line(kind: str, e: int, i: int, n: int, **scalars: float) -> str:
    """A line of metrics.jsonl (processor.events.JSONWriter)."""
    return json.dumps({"kind": kind, "epoch": e, "iter": i, "iters_per_epoch": n, "step": (e - 1) * n + i,
                       **scalars}) + "\n"


def test_parse_metrics_resume_and_epoch_lines():
    lines = [metrics_line("iter", 1, 2, 4, **{"loss/total": 9.0, "loss/a": 1.0, "acc": 0.1, "lr": 1e-3, "img_s": 5.0}),
             metrics_line("iter", 1, 2, 4, **{"loss/total": 7.0, "loss/a": 0.5, "acc": 0.1, "lr": 1e-3}),
             metrics_line("epoch", 1, 4, 4, **{"loss/total": 7.5, "acc": 0.1, "val/ALL/mAP": 0.3}),
             metrics_line("iter", 2, 4, 4, **{"loss/total": 5.0, "loss/a": 0.25, "acc": None, "lr": 2e-3}),
             metrics_line("epoch", 2, 4, 4, **{"loss/total": 5.0}), '{"kind": "iter", "epo']
    curves, epochs = tool.parse_metrics(lines)
    assert epochs == 2
    assert curves["loss"] == [(0.5, 7.0), (2.0, 5.0)]  # the resumed line replaced the first; a cut line is skipped
    assert curves["a"] == [(0.5, 0.5), (2.0, 0.25)] and curves["lr"] == [(0.5, 1e-3), (2.0, 2e-3)]
    assert curves["acc"] == [(0.5, 0.1)] and set(curves) == {"loss", "a", "acc", "lr"}  # no pace, no validation
    # Log period longer than an epoch: the epoch lines are the curve.
    curves, epochs = tool.parse_metrics([metrics_line("epoch", 1, 4, 4, **{"loss/total": 7.0, "acc": 0.1}),
                                         metrics_line("epoch", 2, 4, 4, **{"loss/total": 5.0, "acc": 0.3})])
    assert curves == {"loss": [(1.0, 7.0), (2.0, 5.0)], "acc": [(1.0, 0.1), (2.0, 0.3)]} and epochs == 2


@pytest.mark.slow
def test_a_real_run_is_read_from_metrics_jsonl_and_an_old_one_from_its_log(real_run, tmp_path):
    """The curves come from metrics.jsonl, no log line is parsed; a run written before metrics.jsonl (its
    train_log.txt alone) still gives its curves, at the same points: with one log line per epoch the log's
    running means are the period means of metrics.jsonl, to the log's three decimals."""
    with open(os.path.join(real_run, "metrics.jsonl")) as f:
        from_metrics = tool.parse_metrics(f.readlines())
    new = tmp_path / "new"
    shutil.copytree(real_run, new, ignore=shutil.ignore_patterns("*.pth", "train_log.txt"))
    run = tool.read_run(str(new))
    assert (run.curves, run.epochs) == from_metrics and run.epochs == 2
    assert [x for x, _ in run.curves["loss"]] == pytest.approx([2 / 3, 5 / 3])  # Iter[2/3] of epochs 1 and 2
    old = tmp_path / "old"
    shutil.copytree(real_run, old, ignore=shutil.ignore_patterns("*.pth", "metrics.jsonl"))
    old_run = tool.read_run(str(old))
    assert old_run.epochs == 2 and set(old_run.curves) == set(run.curves)
    for name, points in run.curves.items():
        assert [x for x, _ in old_run.curves[name]] == pytest.approx([x for x, _ in points])
        assert [v for _, v in old_run.curves[name]] == pytest.approx([v for _, v in points], abs=5e-4, rel=5e-3), name


@pytest.mark.slow
def test_table_and_curves_of_a_real_run_and_fake_ones(real_run, fake_runs, tmp_path, capsys):
    out = tmp_path / "summary"
    assert tool.main([real_run, fake_runs["going"], fake_runs["tested"], "--out", str(out)]) == 0
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["tsd_real", "vit_going", "tested"]
    real, going, tested = rows
    # Differing config keys only (OUTPUT_DIR aside); the test-only folder has no config.
    header = list(rows[0])
    assert "MODEL.ARCH" in header and "SOLVER.MAX_EPOCHS" not in header and "OUTPUT_DIR" not in header
    assert header.index("MODEL.ARCH") < header.index("epochs") < header.index("R1")
    assert (real["MODEL.ARCH"], going["MODEL.ARCH"], tested["MODEL.ARCH"]) == ("tsd", "vit", "")
    # The real run: 2 epochs, validated after each; its metrics are the last validation's.
    val = {int(e): r for e, r in json.load(open(os.path.join(real_run, "val_results.json"))).items()}
    assert set(val) == {1, 2}
    best = max((val[e]["ALL"]["mAP"], -e) for e in val)
    assert real["epochs"] == "2" and real["best epoch"] == str(-best[1])
    assert float(real["best mAP"]) == pytest.approx(best[0])
    assert (float(real["R1"]) == pytest.approx(val[2]["ALL"]["rank1"])
            and float(real["mINP"]) == pytest.approx(val[2]["ALL"]["mINP"]))
    assert real["new NPO mAP"] == ""
    # Still going, never evaluated: epochs from the log, blanks elsewhere.
    assert going["epochs"] == "1" and going["best epoch"] == going["R1"] == going["new ALL R1"] == ""
    # Test-only folder: the new benchmark's three splits.
    assert float(tested["new NPO R1"]) == pytest.approx(0.6) and float(tested["new NTP mINP"]) == pytest.approx(0.05)
    assert tested["R1"] == "" and tested["epochs"] == ""

    md = (out / "runs.md").read_text()
    assert "| tested | - | - | - | - | - | - | - | 50.0 | 40.0 | 10.0 | 60.0 | 50.0 | 20.0 | 30.0 | 20.0 | 5.0 |" in md
    assert ("- tested: new protocol from results.json" in md
            and "- tsd_real: standard protocol from val_results.json, epoch 2" in md)
    printed = capsys.readouterr().out
    assert "| run | MODEL.ARCH |" in printed and f"curves: {out / 'curves.png'}" in printed
    image = cv2.imread(str(out / "curves.png"))
    assert image is not None and image.shape[0] > 400 and image.shape[1] > 1000


def test_panels_cover_every_term_of_every_run(real_run, fake_runs):
    runs = [tool.read_run(real_run), tool.read_run(fake_runs["going"])]
    panels = tool._series(runs)
    assert panels[0] == "loss" and panels[-3:] == ["acc", "lr", "val mAP"]
    real_terms = set(runs[0].curves) - {"loss", "acc", "lr"}
    assert {"cls_global", "tri_global", "mask_parsing_ce"} <= real_terms and real_terms <= set(panels)


def test_result_files_in_sub_folders_are_found(real_run, fake_runs, tmp_path):
    """make demo tests into OUTPUT_DIR/test_standard and test_new: the run's row shows those results."""
    run = tmp_path / "demo_like"
    shutil.copytree(real_run, run, ignore=shutil.ignore_patterns("*.pth"))
    shutil.copytree(fake_runs["tested"], run / "test_new")
    write(run / "test_standard" / "results.json",
          json.dumps({"new_metric": False, "results": {"ALL": result(0.9, 0.8, 0.7)}}))
    header, rows, sources = tool.table_rows([tool.read_run(str(run))])
    row = dict(zip(header, rows[0]))
    assert (row["R1"], row["mAP"], row["new NTP R1"]) == (0.9, 0.8, 0.3)
    assert sources == [f"demo_like: standard protocol from {os.path.join('test_standard', 'results.json')}",
                       f"demo_like: new protocol from {os.path.join('test_new', 'results.json')}"]


def test_not_a_run_and_unreadable_files(fake_runs, tmp_path):
    with pytest.raises(DataError, match=f"{fake_runs['empty']} is not a run folder: it has no config.yaml"):
        tool.main([fake_runs["empty"], "--out", str(tmp_path / "o")])
    parent = os.path.dirname(fake_runs["going"])
    with pytest.raises(DataError, match=rf"{parent} is not a run folder.*"
                                        rf"\(its sub-folders tested, vit_going are runs: pass {parent}/\*\)"):
        tool.main([parent, "--out", str(tmp_path / "o")])
    with pytest.raises(DataError, match="run folder .*missing does not exist"):
        tool.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    # A val_results.json caught mid-write by a running training: left out with a note, not a crash.
    write(os.path.join(fake_runs["going"], "val_results.json"), '{"1": {"ALL": {"mAP"')
    run = tool.read_run(fake_runs["going"])
    assert run.validation == {} and "val_results.json unreadable (JSONDecodeError), left out" in run.notes[0]


def test_script_prints_one_error_line(fake_runs, tmp_path):
    r = subprocess.run([sys.executable, "tools/summarize_runs.py", fake_runs["empty"], "--out", str(tmp_path / "o")],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {fake_runs['empty']} is not a run folder: it has no config.yaml, train_log.txt, val_results.json "
        "or results.json; pass OUTPUT_DIRs of train.py / test.py"]


def seeded_run(root, name: str, arch: str, seed: int, val_map: float, tests: dict | None = None) -> str:
    """A finished run folder: config.yaml, val_results.json (epochs 25 and 50) and test.py sub-folders
    ``{folder: (new_metric, re_ranking, results)}``."""
    run = root / name
    cfg = {"MODEL": {"ARCH": arch, "NUM_PARTS": 5}, "SOLVER": {"SEED": seed, "MAX_EPOCHS": 50}, "OUTPUT_DIR": str(run)}
    write(run / "config.yaml", yaml.safe_dump(cfg))
    write(run / "val_results.json", json.dumps({"25": {"ALL": result(0.1, val_map - 0.05, 0.05)},
                                                "50": {"ALL": result(0.2, val_map, 0.1)}}))
    for folder, (new, rerank, results) in (tests or {}).items():
        write(run / folder / "results.json", json.dumps({"new_metric": new, "re_ranking": rerank, "results": results}))
    return str(run)


@pytest.mark.slow
def test_several_folders_skip_those_that_are_not_runs(fake_runs, tmp_path, capsys):
    """`summarize_runs.py logs/demo/*` meets the data cache, the summary folder itself and stray files."""
    cache = tmp_path / "data_cache" / "occ_duke_0123"
    cache.mkdir(parents=True)
    (cache / "meta.json").write_text("{}")
    stray = tmp_path / "notes.txt"
    stray.write_text("x")
    out = tmp_path / "summary"
    out.mkdir()
    (out / "runs.md").write_text("an earlier summary")
    assert tool.main([fake_runs["going"], str(tmp_path / "data_cache"), str(stray), fake_runs["tested"], str(out),
                      "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {tmp_path / 'data_cache'}: not a run folder (no config.yaml" in printed
    assert f"skipped {stray}: a file, not a run folder" in printed
    assert f"skipped {out}" not in printed  # the output folder of this very call: no news
    with open(out / "runs.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["vit_going", "tested"]
    with pytest.raises(DataError, match=r"none of the 2 folders given is a run folder"):
        tool.main([str(tmp_path / "data_cache"), fake_runs["empty"], "--out", str(tmp_path / "o")])
    with pytest.raises(DataError, match="run folder .*missing does not exist"):  # a typo is still an error
        tool.main([fake_runs["going"], str(tmp_path / "missing"), "--out", str(tmp_path / "o")])


def test_re_ranked_results_get_their_own_columns(tmp_path):
    run = seeded_run(tmp_path, "tsd", "tsd", 1, 0.3, {
        "test_occ_duke": (False, False, {"ALL": result(0.4, 0.35, 0.2)}),
        "test_occ_duke_rerank": (False, True, {"ALL": result(0.5, 0.45, 0.3)}),
        "test_new_occ_duke_rerank": (True, True, {"ALL": result(0.6, 0.5, 0.1), "NPO": result(0.7, 0.6, 0.2),
                                                  "NTP": result(0.3, 0.2, 0.05)})})
    header, rows, sources = tool.table_rows([tool.read_run(run)])
    row = dict(zip(header, rows[0]))
    assert (row["R1"], row["rr R1"], row["rr mAP"], row["new rr NTP mINP"]) == (0.4, 0.5, 0.45, 0.05)
    assert "new ALL R1" not in row  # no plain new-benchmark result: no such columns
    assert sources == [f"tsd: standard protocol from {os.path.join('test_occ_duke', 'results.json')}",
                       f"tsd: standard re-ranked protocol from {os.path.join('test_occ_duke_rerank', 'results.json')}",
                       f"tsd: new re-ranked protocol from {os.path.join('test_new_occ_duke_rerank', 'results.json')}"]
    # A run validated with TEST.RE_RANKING True: its validation fills the re-ranked columns, not the plain ones.
    rr = seeded_run(tmp_path, "rr_val", "tsd", 1, 0.3)
    with open(os.path.join(rr, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["TEST"] = {"RE_RANKING": True}
    write(os.path.join(rr, "config.yaml"), yaml.safe_dump(cfg))
    header, rows, _ = tool.table_rows([tool.read_run(rr)])
    row = dict(zip(header, rows[0]))
    assert row["R1"] is None and row["rr mAP"] == 0.3


def test_runs_that_differ_only_in_the_seed_become_mean_std_rows(tmp_path, capsys):
    paths = [seeded_run(tmp_path, "tsd_s1", "tsd", 1, 0.25), seeded_run(tmp_path, "tsd_s2", "tsd", 2, 0.29),
             seeded_run(tmp_path, "tsd_s3", "tsd", 3, 0.30), seeded_run(tmp_path, "vit_s1", "vit", 1, 0.20),
             seeded_run(tmp_path, "vit_s2", "vit", 2, 0.18, {"test_new_occ_duke": (True, False, {
                 "ALL": result(0.5, 0.4, 0.1), "NPO": result(0.6, 0.5, 0.2), "NTP": result(0.3, 0.2, 0.05)})})]
    out = tmp_path / "summary"
    assert tool.main([*paths, "--out", str(out)]) == 0
    with open(out / "seeds.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["runs"], r["MODEL.ARCH"], r["seeds"], r["n"]) for r in rows] == [
        ("tsd_s1, tsd_s2, tsd_s3", "tsd", "1, 2, 3", "3"), ("vit_s1, vit_s2", "vit", "1, 2", "2")]
    tsd, vit = rows
    assert float(tsd["mAP mean"]) == pytest.approx(0.28)
    assert float(tsd["mAP std"]) == pytest.approx(((0.03 ** 2 + 0.01 ** 2 + 0.02 ** 2) / 2) ** 0.5)  # n - 1
    assert (float(vit["best mAP mean"]) == pytest.approx(0.19)
            and float(vit["best mAP std"]) == pytest.approx(0.02 ** 0.5 / 10))
    assert vit["new NPO R1 mean"] == "0.6" and vit["new NPO R1 std"] == ""  # one of two runs has it: no spread
    md = (out / "seeds.md").read_text()
    assert "| tsd_s1, tsd_s2, tsd_s3 | tsd | 1, 2, 3 | 3 | 28.0 ± 2.6 | 20.0 ± 0.0 | 28.0 ± 2.6 | 10.0 ± 0.0 |" in md
    assert "| 60.0 (1 of 2) |" in md and "n - 1 in the" in md
    assert "over seeds (mean ± std, n runs per config)" in capsys.readouterr().out
    # One run per config: no seed table.
    assert tool.seed_rows([tool.read_run(paths[0]), tool.read_run(paths[3])]) is None
