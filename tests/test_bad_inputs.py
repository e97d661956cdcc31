"""A catalogue of bad inputs: each one must end ``train.py`` / ``test.py`` with one clear line.

Every case damages a copy of the tiny synthetic data set (or writes a bad checkpoint / passes a bad
command line), runs the real entry point, and checks: a non-zero exit code, stderr is one line
``error: ...`` naming the culprit and the fix (plus, for a damaged JPEG, libjpeg's own warnings, which
OpenCV lets through), no traceback on the console, and — once the entry point has set up its log
file — the traceback in that file.

The entry points run as ``__main__`` in processes forked from a multiprocessing forkserver that has
imported torch, torchvision, timm and OpenCV once: a fresh interpreter pays ~5 s for those imports
per case. :func:`test_forked_run_matches_a_real_subprocess` checks that the two ways agree.
"""
from __future__ import annotations

import multiprocessing
import os
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "demo", "tsd_tiny.yml")
DUKE = Path("data", "Occluded_Duke")
MASKS = DUKE / "masks" / "pifpaf_maskrcnn_filtering"
WEIGHT = "weight.pth"  # checkpoint cases write their file here, relative to the case folder
# libjpeg (inside OpenCV) prints these to stderr itself before a damaged JPEG fails to decode.
LIBJPEG_WARNINGS = ("Premature end of JPEG file", "Corrupt JPEG data")


# ----------------------------------------------------------------------------------------------
# Running an entry point
# ----------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a user sees: the exit code and the console, plus the log file (None if never created)."""

    returncode: int
    stdout: str
    stderr: str
    log: str | None


def _run_as_main(script: str, argv: list[str], stdout_path: str, stderr_path: str) -> None:
    """Body of a forked process: ``python script *argv`` with the console redirected to files."""
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)  # file descriptors, so output written outside Python's streams is caught too
        os.close(target)
    multiprocessing.set_start_method(None, force=True)  # loader workers: a fresh interpreter's default, not ours
    os.chdir(REPO)
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")  # its sys.exit(code) becomes the process exit code


_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["torch", "torchvision", "timm", "cv2", "numpy", "scipy", "yacs.config"])


def run_entry(script: str, argv: list[str], workdir: Path, fork: bool = True) -> Outcome:
    """Run ``REPO/script`` with ``argv``; with ``fork`` in a forked process, else in a fresh interpreter."""
    path = os.path.join(REPO, script)
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    if fork:
        proc = _FORKSERVER.Process(target=_run_as_main, args=(path, argv, str(out), str(err)))
        proc.start()
        proc.join(timeout=180)
        if proc.exitcode is None:  # hung: fail the case rather than the whole session
            proc.kill()
            proc.join()
        code = proc.exitcode
    else:
        with out.open("w") as stdout, err.open("w") as stderr:
            code = subprocess.run([sys.executable, path, *argv], cwd=REPO, timeout=180, stdout=stdout,
                                  stderr=stderr).returncode
    log = workdir / "out" / ("train_log.txt" if script == "train.py" else "test_log.txt")
    return Outcome(code, out.read_text(), err.read_text(), log.read_text() if log.is_file() else None)


# ----------------------------------------------------------------------------------------------
# Damage
# ----------------------------------------------------------------------------------------------
def nothing(case: Path) -> None:
    """Leave the data intact (the case is in the command line)."""


def remove(rel: Path | str) -> Callable[[Path], None]:
    """Delete the folder ``rel`` of the case."""
    def damage(case: Path) -> None:
        shutil.rmtree(case / rel)
    return damage


def half_of_the_masks(case: Path) -> None:
    """An interrupted copy: the second half of the training masks is missing."""
    files = sorted((case / MASKS / "bounding_box_train").iterdir())
    for f in files[len(files) // 2:]:
        f.unlink()


def train_files(case: Path) -> list[Path]:
    """The training images of the case's data, sorted."""
    return sorted((case / DUKE / "bounding_box_train").iterdir())


def mask_of(image: Path) -> Path:
    """The mask file of a training image (TSD's ``<stem>.npy`` naming, as the generator writes)."""
    return image.parents[1] / "masks" / "pifpaf_maskrcnn_filtering" / image.parent.name / (image.stem + ".npy")


def truncate_first_mask(case: Path) -> None:
    """Cut the mask of the first training image to half its bytes."""
    path = mask_of(train_files(case)[0])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def mask_with_17_channels(case: Path) -> None:
    """The first training mask keeps only the 17 keypoint channels of the 36 PifPaf fields."""
    path = mask_of(train_files(case)[0])
    np.save(path, np.load(path)[:17])


def truncate_train_jpegs(case: Path) -> None:
    """A broken copy: every training JPEG keeps only its first 600 bytes. Only loader workers decode images."""
    for f in train_files(case):
        f.write_bytes(f.read_bytes()[:600])


def empty_train_split(case: Path) -> None:
    """An interrupted extraction: bounding_box_train exists but is empty."""
    for f in train_files(case):
        f.unlink()


def empty_query_split(case: Path) -> None:
    """query/ exists but is empty."""
    for f in (case / DUKE / "query").iterdir():
        f.unlink()


def gallery_line(text: str) -> Callable[[Path], None]:
    """Replace line 3 of new_gallery.txt with ``text``."""
    def damage(case: Path) -> None:
        path = case / DUKE / "new_gallery.txt"
        lines = path.read_text().splitlines()
        lines[2] = text
        path.write_text("\n".join(lines) + "\n")
    return damage


def tiny_model(num_parts: int = 5, arch: str = "tsd") -> nn.Module:
    """A randomly initialised model of the tiny config with ``num_parts`` parts / ``arch``."""
    from config import load_cfg
    from model import make_model

    groups = {5: "five", 3: "three", 8: "eight"}
    cfg = load_cfg(DEMO_CFG, ["MODEL.NUM_PARTS", str(num_parts), "INPUT.MASK_PREPROCESS", groups[num_parts],
                              "MODEL.ARCH", arch, "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]"])
    return make_model(cfg, 12, 8, 1)


def checkpoint(make: Callable[[], object], truncate: bool = False) -> Callable[[Path], None]:
    """Write ``make()`` with torch.save to the case's weight file (cut in half when ``truncate``)."""
    def damage(case: Path) -> None:
        path = case / WEIGHT
        torch.save(make(), path)
        if truncate:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return damage


def with_weight(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """``damage`` plus a valid checkpoint for test.py, so that only the damaged data can fail."""
    def both(case: Path) -> None:
        checkpoint(lambda: tiny_model().state_dict())(case)
        damage(case)
    return both


def truncate_last_pth(case: Path) -> None:
    """A damaged training state (the trainer itself writes it atomically): half of a last.pth."""
    (case / "out").mkdir()
    path = case / "out" / "last.pth"
    torch.save({"model": {}, "epoch": 1}, path)
    path.write_bytes(path.read_bytes()[:100])


def html_page(case: Path) -> None:
    """A failed download: the server's error page saved under the checkpoint's name."""
    (case / WEIGHT).write_text("<html><body>403 Forbidden</body></html>")


# ----------------------------------------------------------------------------------------------
# The catalogue
# ----------------------------------------------------------------------------------------------
def tiny(*opts: str, flags: tuple[str, ...] = ()) -> list[str]:
    """The command line of a tiny run on the case's data: ``--config_file`` + ``flags`` + overrides ``opts``."""
    return ["--config_file", DEMO_CFG, *flags, "DATASETS.ROOT_DIR", "{data}", "OUTPUT_DIR", "{case}/out",
            "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]", "SOLVER.IMS_PER_BATCH", "16",
            "SOLVER.MAX_EPOCHS", "2", "SOLVER.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0", *opts]


TEST_WEIGHT = ("TEST.WEIGHT", "{case}/" + WEIGHT)
NEW_BENCHMARK = ("DATASETS.NAMES", "new_occ_duke", "TEST.NEW_METRIC", "True")


@dataclass
class Case:
    """One bad input: ``damage`` the case folder, run ``script argv``, expect each of ``expect`` in the error.

    ``argv`` and ``expect`` may use ``{case}`` (the case folder) and ``{data}`` (its data root).
    ``logged``: the error comes after the entry point has set up its log file, so the traceback is there.
    """

    id: str
    damage: Callable[[Path], None]
    script: str
    argv: list[str]
    expect: list[str]
    logged: bool = True


CASES = [
    # --- data ---------------------------------------------------------------------------------
    Case("data_root_missing", nothing, "train.py", tiny("DATASETS.ROOT_DIR", "{case}/nowhere"),
         ["data folder {case}/nowhere/Occluded_Duke/", "not found", "make_synthetic_data.py"]),
    Case("query_folder_missing", remove(DUKE / "query"), "train.py", tiny(),
         ["data folder {data}/Occluded_Duke/query not found", "expected layout"]),
    Case("train_split_empty", empty_train_split, "train.py", tiny(),
         ["data folder {data}/Occluded_Duke/bounding_box_train has no images", "copy the split's"]),
    Case("query_split_empty", with_weight(empty_query_split), "test.py", tiny(*TEST_WEIGHT),
         ["data folder {data}/Occluded_Duke/query has no images", "copy the split's"]),
    Case("masks_folder_missing", remove(MASKS), "train.py", tiny(),
         ["training images have no part mask", "pifpaf_maskrcnn_filtering/bounding_box_train/<stem>.npy", "bpbreid"]),
    Case("masks_half_copied", half_of_the_masks, "train.py", tiny(),
         ["of 71 training images have no part mask", "bpbreid"]),
    Case("mask_truncated", truncate_first_mask, "train.py", tiny(),
         ["cannot read mask file", ".npy", "bpbreid"]),
    Case("mask_wrong_shape", mask_with_17_channels, "train.py", tiny(),
         ["has shape (17,", "expected (36, h, w)"]),
    Case("train_jpegs_truncated_found_by_worker", truncate_train_jpegs, "train.py", tiny("DATALOADER.NUM_WORKERS", "2"),
         ["cannot read image {data}/Occluded_Duke/bounding_box_train/", "replace the file or delete it"]),
    Case("new_benchmark_line_malformed", with_weight(gallery_line("query/0242_c3_f0061302.jpg")), "test.py",
         tiny(*TEST_WEIGHT, *NEW_BENCHMARK),
         ["new_gallery.txt:3:", "expected 'relative/path.jpg,label'", "copy it unchanged"]),
    Case("new_benchmark_label_unknown", with_weight(gallery_line("query/0242_c3_f0061302.jpg,7")), "test.py",
         tiny(*TEST_WEIGHT, *NEW_BENCHMARK), ["new_gallery.txt:3:", "label '7' is not one of 0, 1, 2, 3"]),
    Case("new_benchmark_list_missing", with_weight(lambda case: (case / DUKE / "new_query.txt").unlink()), "test.py",
         tiny(*TEST_WEIGHT, *NEW_BENCHMARK), ["new_query.txt not found", "github.com/hh23333/TSD"]),
    # --- config -------------------------------------------------------------------------------
    Case("config_key_unknown", nothing, "train.py", tiny("SOLVER.BASE_LRR", "0.1"),
         ["unknown config key 'SOLVER.BASE_LRR'", "did you mean 'SOLVER.BASE_LR'?"], logged=False),
    Case("config_value_wrong_type", nothing, "train.py", tiny("SOLVER.MAX_EPOCHS", "ten"),
         ["SOLVER.MAX_EPOCHS", "expects type int", "ten"], logged=False),
    Case("config_parts_inconsistent", nothing, "train.py", tiny("MODEL.NUM_PARTS", "8"),
         ["MODEL.NUM_PARTS is 8 but INPUT.MASK_PREPROCESS 'five' makes 5 parts", "set MODEL.NUM_PARTS 5"],
         logged=False),
    Case("config_batch_not_multiple_of_k", nothing, "train.py", tiny("SOLVER.IMS_PER_BATCH", "18"),
         ["SOLVER.IMS_PER_BATCH (18) must be a multiple of DATALOADER.NUM_INSTANCE (4)"], logged=False),
    Case("config_file_missing", nothing, "train.py", ["--config_file", "{case}/nope.yml"],
         ["config file not found: {case}/nope.yml"], logged=False),
    Case("dataset_name_unknown", nothing, "train.py", tiny("DATASETS.NAMES", "occ_dukee"),
         ["DATASETS.NAMES 'occ_dukee' is not a known data set", "occ_duke"]),
    # --- checkpoints ----------------------------------------------------------------------------
    Case("checkpoint_truncated", checkpoint(lambda: tiny_model().state_dict(), truncate=True), "test.py",
         tiny(*TEST_WEIGHT), ["cannot read checkpoint {case}/" + WEIGHT, "truncated"]),
    Case("checkpoint_not_a_torch_file", html_page, "test.py", tiny(*TEST_WEIGHT),
         ["checkpoint {case}/" + WEIGHT + " is not a torch checkpoint (it starts with b'<html>", "re-download"]),
    Case("checkpoint_not_tsd", checkpoint(lambda: {"fc.weight": torch.zeros(3, 3)}), "test.py", tiny(*TEST_WEIGHT),
         ["{case}/" + WEIGHT + " is not a TSD checkpoint", "base.*"]),
    Case("checkpoint_imagenet_vit", checkpoint(lambda: {"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}), "test.py",
         tiny(*TEST_WEIGHT), ["is not a TSD checkpoint", "MODEL.PRETRAIN_CHOICE imagenet"]),
    Case("checkpoint_other_part_count", checkpoint(lambda: tiny_model(num_parts=3).state_dict()), "test.py",
         tiny(*TEST_WEIGHT), ["does not fit the model", "set MODEL.NUM_PARTS 3 INPUT.MASK_PREPROCESS three"]),
    Case("checkpoint_vit_baseline_for_tsd", checkpoint(lambda: tiny_model(arch="vit").state_dict()), "test.py",
         tiny(*TEST_WEIGHT), ["does not fit the model", "set MODEL.ARCH vit"]),
    Case("checkpoint_pickled_module", checkpoint(tiny_model), "test.py", tiny(*TEST_WEIGHT),
         ["checkpoint {case}/" + WEIGHT + " is not a plain state_dict", "(model.tsd.TSD)",
          "torch.save(model.state_dict(), path)"]),
    Case("resume_without_last_pth", nothing, "train.py", tiny() + ["--resume"],
         ["cannot resume: {case}/out/last.pth does not exist"]),
    Case("resume_last_pth_truncated", truncate_last_pth, "train.py", tiny() + ["--resume"],
         ["cannot resume from {case}/out/last.pth: the file is unreadable", "MODEL.PRETRAIN_CHOICE self"]),
    Case("resume_from_weights_only_file", checkpoint(lambda: tiny_model().state_dict()), "train.py",
         tiny(flags=("--resume", "{case}/" + WEIGHT)), ["is a weights-only checkpoint, not a training state"]),
    Case("pretrain_path_missing", nothing, "train.py",
         tiny("MODEL.PRETRAIN_CHOICE", "imagenet", "MODEL.PRETRAIN_PATH", "{case}/jx_vit.pth"),
         ["MODEL.PRETRAIN_PATH '{case}/jx_vit.pth' not found", "MODEL.PRETRAIN_CHOICE none"]),
    # --- command line ---------------------------------------------------------------------------
    Case("cli_config_file_not_given", nothing, "train.py", ["SOLVER.BASE_LR", "0.1"],
         ["--config_file", "usage:"], logged=False),
    Case("cli_test_weight_not_given", nothing, "test.py", tiny(),
         ["no checkpoint given", "add TEST.WEIGHT"]),
    Case("cli_test_weight_not_found", nothing, "test.py", tiny("TEST.WEIGHT", "{case}/transformer_90.pth"),
         ["TEST.WEIGHT {case}/transformer_90.pth does not exist"]),
]


def fill(text: str, folder: Path) -> str:
    """``text`` with ``{case}`` / ``{data}`` replaced by the case folder / its data root."""
    return text.format(case=folder, data=folder / "data")


def error_line(stderr: str) -> str:
    """The one ``error: ...`` line of ``stderr``; any other line must be a libjpeg warning (workers may
    print those before or after it)."""
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and all(line.startswith(LIBJPEG_WARNINGS) for line in lines if line not in errors), stderr
    return errors[0]


@pytest.fixture
def case_folder(synthetic_root, tmp_path) -> Path:
    """A folder with a private copy of the tiny synthetic set in ``data/`` (~2 MB)."""
    shutil.copytree(synthetic_root, tmp_path / "data")
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_with_one_line(case: Case, case_folder: Path):
    case.damage(case_folder)
    r = run_entry(case.script, [fill(a, case_folder) for a in case.argv], case_folder)
    console = r.stdout + r.stderr
    assert r.returncode not in (0, None), console[-3000:]
    assert "Traceback" not in console, console[-3000:]
    line = error_line(r.stderr)
    for text in case.expect:
        assert fill(text, case_folder) in line
    if case.logged:
        assert r.log is not None and "Traceback" in r.log and line[len("error: "):] in r.log
    else:
        assert r.log is None


def test_forked_run_matches_a_real_subprocess(case_folder: Path):
    """The forkserver shortcut reports what a fresh ``python train.py`` reports."""
    case = next(c for c in CASES if c.id == "train_jpegs_truncated_found_by_worker")
    case.damage(case_folder)
    argv = [fill(a, case_folder) for a in case.argv]
    forked = run_entry(case.script, argv, case_folder)
    shutil.rmtree(case_folder / "out")
    fresh = run_entry(case.script, argv, case_folder, fork=False)
    assert (forked.returncode, error_line(forked.stderr)) == (fresh.returncode, error_line(fresh.stderr))
    assert forked.returncode == 2 and "Traceback" not in fresh.stdout + fresh.stderr
