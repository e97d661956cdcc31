"""A catalogue of bad inputs: each one must end ``train.py`` / ``test.py`` with one clear line.

Every case damages a copy of the tiny synthetic data set (or writes a bad checkpoint / passes a bad
command line), runs the real entry point, and checks: a non-zero exit code, stderr is one line
``error: ...`` naming the culprit and the fix (plus, for a damaged JPEG, libjpeg's own warnings, which
OpenCV lets through), no traceback on the console, and — once the entry point has set up its log
file — the traceback in that file. Crafted files (a pickled ``.npy``, a checkpoint, a YAML tag) carry
a payload that would create a marker file; no case may leave it behind.

Classes: data (folders, splits, lists, every mask header before the first step, mask values when
read, file names), configs (keys, types, YAML syntax, ``_BASE_``, value ranges, devices), places
(``OUTPUT_DIR``), checkpoints (damaged, foreign, crafted, trained under another config) and the command
line. :func:`test_odd_but_valid_inputs_train_to_a_checkpoint` checks the other side: odd inputs a real
data set holds simply work.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
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
    """A broken copy: every training JPEG keeps only its first 600 bytes (found before the first step)."""
    for f in train_files(case):
        f.write_bytes(f.read_bytes()[:600])


def scramble_train_jpegs(case: Path) -> None:
    """Damage only a decoder notices: every training JPEG's header overwritten with zeros, its length and end
    marker intact. Only loader workers decode images."""
    for f in train_files(case):
        data = f.read_bytes()
        f.write_bytes(data[:2] + bytes(600) + data[602:])


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


# A crafted file's payload would create this file in the case folder (it must never exist).
PAYLOAD_MARKER = "PAYLOAD_RAN"


class Payload:
    """Pickles to a call of ``os.system('touch <marker>')``: loading it with pickle runs that command."""

    def __init__(self, case: Path):
        self.command = f"touch {case / PAYLOAD_MARKER}"

    def __reduce__(self):
        return os.system, (self.command,)


def train_masks(case: Path) -> list[Path]:
    """The mask files of the case's training images, in image order."""
    return [mask_of(f) for f in train_files(case)]


def unsampled_mask(case: Path) -> Path:
    """A training mask in the middle of the split that a check of 32 evenly spaced files would miss."""
    masks = train_masks(case)
    sampled = set(np.linspace(0, len(masks) - 1, 32).astype(int).tolist())
    return masks[next(i for i in range(len(masks) // 2, len(masks)) if i not in sampled)]


def every_mask(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """Rewrite every training mask as ``change(mask)`` (float16 kept unless ``change`` changes it)."""
    def damage(case: Path) -> None:
        for path in train_masks(case):
            np.save(path, change(np.load(path)))
    return damage


def with_nan(m: np.ndarray) -> np.ndarray:
    m = m.copy()
    m[3, 1, 1] = np.nan
    return m


def with_inf(m: np.ndarray) -> np.ndarray:
    m = m.copy()
    m[0, 0, 0] = np.inf
    return m


def one_mask(damage_file: Callable[[Path], None]) -> Callable[[Path], None]:
    """Damage the mask of :func:`unsampled_mask` only: every header is checked, not a sample."""
    def damage(case: Path) -> None:
        damage_file(unsampled_mask(case))
    return damage


def pickle_payload(path: Path) -> None:
    """An ``.npy`` object array whose pickle runs :class:`Payload` when loaded with ``allow_pickle``."""
    np.save(path, np.array([Payload(path.parents[5])], dtype=object), allow_pickle=True)


def write_file(rel: str, text: str) -> Callable[[Path], None]:
    """Write ``text`` (``{case}`` filled in) to the case's file ``rel``."""
    def damage(case: Path) -> None:
        (case / rel).write_text(text.format(case=case))
    return damage


def write_files(*files: tuple[str, str]) -> Callable[[Path], None]:
    """Several :func:`write_file` at once."""
    def damage(case: Path) -> None:
        for rel, text in files:
            write_file(rel, text)(case)
    return damage


def read_only_folder(case: Path) -> None:
    (case / "ro").mkdir()
    (case / "ro").chmod(0o555)


def unparseable_train_name(case: Path) -> None:
    """A stray camera export among the training images."""
    shutil.copyfile(train_files(case)[0], case / DUKE / "bounding_box_train" / "IMG_2041.jpg")


def run_cfg(case: Path, *opts: str):
    """The config of :func:`tiny` on ``case``, plus ``opts``."""
    from config import load_cfg

    return load_cfg(DEMO_CFG, [fill(a, case) for a in tiny(*opts)[2:]])


def saved_run(*opts: str, config_only: bool = False) -> Callable[[Path], None]:
    """A run in ``{case}/out`` made with ``opts``: its ``last.pth`` holds the config (tiny config + ``opts``),
    or with ``config_only``, a weight file ``{case}/weight.pth`` with the run's ``config.yaml`` beside it."""
    def damage(case: Path) -> None:
        cfg = run_cfg(case, *opts)
        if config_only:
            parts = cfg.MODEL.NUM_PARTS
            torch.save(tiny_model(num_parts=parts).state_dict(), case / WEIGHT)
            (case / "config.yaml").write_text(cfg.dump())
        else:
            (case / "out").mkdir()
            torch.save({"model": {}, "epoch": 1, "config": cfg.dump()}, case / "out" / "last.pth")
    return damage


def payload_checkpoint(rel: str, as_state: bool) -> Callable[[Path], None]:
    """A checkpoint whose pickle would run :class:`Payload` (a training state, or a weight file)."""
    def damage(case: Path) -> None:
        path = case / rel
        path.parent.mkdir(exist_ok=True)
        payload = Payload(case)
        torch.save({"model": payload, "epoch": 1} if as_state else {"base.cls_token": payload}, path)
    return damage


NO_GPU = "" if not torch.cuda.is_available() else "a GPU is visible: MODEL.DEVICE cuda is valid here"
NOT_ROOT = "" if os.geteuid() != 0 else "root ignores permission bits: a 0o555 folder is writable"


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
    Every case also checks that no payload of a crafted file ran (:data:`PAYLOAD_MARKER`).
    """

    id: str
    damage: Callable[[Path], None]
    script: str
    argv: list[str]
    expect: list[str]
    logged: bool = True
    skip: str = ""  # why the case cannot run here (empty: it runs)


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
    Case("train_jpegs_truncated", truncate_train_jpegs, "train.py", tiny("DATALOADER.NUM_WORKERS", "2"),
         ["71 of 71 training images are truncated JPEGs (cut mid-stream: no end-of-image marker; first: "
          "{data}/Occluded_Duke/bounding_box_train/", "replace the file or delete it",
          "set DATASETS.TRUNCATED_IMAGES warn (or ignore, the reference's behaviour)"]),
    Case("train_jpegs_damaged_found_by_worker", scramble_train_jpegs, "train.py", tiny("DATALOADER.NUM_WORKERS", "2"),
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
    Case("config_parts_inconsistent", nothing, "train.py",
         tiny("MODEL.NUM_PARTS", "8", "INPUT.MASK_PREPROCESS", "five"),
         ["MODEL.NUM_PARTS is 8 but INPUT.MASK_PREPROCESS 'five' makes 5 parts",
          "set INPUT.MASK_PREPROCESS eight for 8 parts, or MODEL.NUM_PARTS 5"], logged=False),
    Case("config_part_count_without_grouping", nothing, "train.py", tiny("MODEL.NUM_PARTS", "4"),
         ["MODEL.NUM_PARTS 4 in the command line: no INPUT.MASK_PREPROCESS grouping makes 4 parts",
          "use 8 (eight), 5 (five), 3 (three) or 1 (one)"], logged=False),
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
    # test.py checks TEST.WEIGHT (and the config.yaml beside it) with the config, before its log file exists.
    Case("cli_test_weight_not_given", nothing, "test.py", tiny(),
         ["no checkpoint given", "add TEST.WEIGHT"], logged=False),
    Case("cli_test_weight_not_found", nothing, "test.py", tiny("TEST.WEIGHT", "{case}/transformer_90.pth"),
         ["TEST.WEIGHT {case}/transformer_90.pth does not exist"], logged=False),
    # --- mask files: every header before the first step, values when read, never pickle ----------
    Case("masks_with_nan", every_mask(with_nan), "train.py", tiny(),
         ["mask file {data}/Occluded_Duke/masks/pifpaf_maskrcnn_filtering/bounding_box_train/", "has NaN in 1 of",
          "expected confidences in [0, 1]"]),
    Case("masks_with_nan_found_by_worker", every_mask(with_nan), "train.py", tiny("DATALOADER.NUM_WORKERS", "2"),
         ["mask file {data}/Occluded_Duke/masks/pifpaf_maskrcnn_filtering/bounding_box_train/", "has NaN in 1 of"]),
    Case("masks_with_inf", every_mask(with_inf), "train.py", tiny(), ["mask file", "has inf in 1 of"]),
    Case("masks_saved_as_0_255", every_mask(lambda m: m.astype(np.float32) * 255), "train.py", tiny(),
         ["mask file", "has values in [0, 2", "saved as 0-255"]),
    Case("masks_negative", every_mask(lambda m: m - 0.5), "train.py", tiny(), ["mask file", "has values in [-0.5,"]),
    Case("mask_in_the_middle_truncated", one_mask(lambda p: p.write_bytes(p.read_bytes()[:-200])), "train.py",
         tiny(), ["cannot read mask file {data}/Occluded_Duke/masks/", "it is truncated", "copy it again"]),
    Case("mask_in_the_middle_empty_file", one_mask(lambda p: p.write_bytes(b"")), "train.py", tiny(),
         ["cannot read mask file {data}/Occluded_Duke/masks/", ".npy"]),
    Case("mask_in_the_middle_2d", one_mask(lambda p: np.save(p, np.load(p)[0])), "train.py", tiny(),
         ["mask file {data}/Occluded_Duke/masks/", "has shape (", "expected (36, h, w)"]),
    Case("mask_in_the_middle_zero_height", one_mask(lambda p: np.save(p, np.zeros((36, 0, 4), np.float16))),
         "train.py", tiny(), ["mask file {data}/Occluded_Duke/masks/", "has shape (36, 0, 4)"]),
    Case("mask_in_the_middle_uint8", one_mask(lambda p: np.save(p, (np.load(p) * 255).astype(np.uint8))),
         "train.py", tiny(), ["mask file {data}/Occluded_Duke/masks/", "has dtype uint8", "float16/float32"]),
    Case("mask_in_the_middle_pickle_payload", one_mask(pickle_payload), "train.py", tiny(),
         ["mask file {data}/Occluded_Duke/masks/", "holds pickled Python objects", "never loaded"]),
    Case("train_file_name_unparseable", unparseable_train_name, "train.py", tiny(),
         ["image file name {data}/Occluded_Duke/bounding_box_train/IMG_2041.jpg does not match",
          "rename it or move it out of {data}/Occluded_Duke/bounding_box_train"]),
    # --- config files and values -----------------------------------------------------------------
    Case("config_yaml_syntax_error", write_file("bad.yml", "MODEL:\n  NAME: 'a'\n NUM_PARTS: 5\n"), "train.py",
         ["--config_file", "{case}/bad.yml"], ["config file {case}/bad.yml:3:", "not valid YAML", "fix the syntax"],
         logged=False),
    Case("config_yaml_python_tag", write_file("evil.yml", "MODEL:\n  NAME: !!python/object/apply:os.system "
                                                           "['touch {case}/" + PAYLOAD_MARKER + "']\n"),
         "train.py", ["--config_file", "{case}/evil.yml"],
         ["config file {case}/evil.yml:2:", "tags that build Python objects are not allowed"], logged=False),
    Case("config_base_missing", write_file("child.yml", "_BASE_: parent.yml\n"), "train.py",
         ["--config_file", "{case}/child.yml"], ["config file {case}/child.yml: its _BASE_ {case}/parent.yml not found",
                                                 "fix the _BASE_ line"], logged=False),
    Case("config_base_cycle", write_files(("a.yml", "_BASE_: b.yml\n"), ("b.yml", "_BASE_: a.yml\n")), "train.py",
         ["--config_file", "{case}/a.yml"], ["inherits from itself through _BASE_",
                                             "({case}/a.yml -> {case}/b.yml -> {case}/a.yml)"], logged=False),
    Case("config_num_workers_negative", nothing, "train.py", tiny("DATALOADER.NUM_WORKERS", "-1"),
         ["DATALOADER.NUM_WORKERS must be >= 0, got -1"], logged=False),
    Case("config_learning_rate_negative", nothing, "train.py", tiny("SOLVER.BASE_LR", "-0.01"),
         ["SOLVER.BASE_LR must be >= ", "got -0.01"], logged=False),
    Case("config_flip_probability_above_1", nothing, "train.py", tiny("INPUT.PROB", "1.5"),
         ["INPUT.PROB must be in [0.0, 1.0], got 1.5"], logged=False),
    Case("config_batch_needs_more_identities", nothing, "train.py",
         tiny("SOLVER.IMS_PER_BATCH", "64", "DATALOADER.NUM_INSTANCE", "2"),
         ["identities but a batch needs 32", "lower SOLVER.IMS_PER_BATCH"]),
    Case("config_cuda_without_gpu", nothing, "train.py", tiny("MODEL.DEVICE", "cuda"),
         ["MODEL.DEVICE is 'cuda' but torch sees no GPU", "add MODEL.DEVICE cpu"], logged=False, skip=NO_GPU),
    # (test.py checks TEST.WEIGHT first: the case needs a real weight file to reach the device check)
    Case("test_cuda_without_gpu", with_weight(nothing), "test.py", tiny("MODEL.DEVICE", "cuda", *TEST_WEIGHT),
         ["MODEL.DEVICE is 'cuda' but torch sees no GPU"], logged=False, skip=NO_GPU),
    # --- places ------------------------------------------------------------------------------------
    Case("output_dir_below_a_file", write_file("results", "not a folder"), "train.py",
         tiny("OUTPUT_DIR", "{case}/results/run1"),
         ["OUTPUT_DIR {case}/results/run1 cannot be created: {case}/results is a plain file"], logged=False),
    Case("output_dir_cannot_be_created", nothing, "train.py", tiny("OUTPUT_DIR", "/sys/tsd_output"),
         ["OUTPUT_DIR /sys/tsd_output is not writable", "choose another OUTPUT_DIR"], logged=False),
    Case("output_dir_read_only", read_only_folder, "train.py", tiny("OUTPUT_DIR", "{case}/ro/run1"),
         ["OUTPUT_DIR {case}/ro/run1 is not writable"], logged=False, skip=NOT_ROOT),
    Case("test_output_dir_below_a_file", with_weight(write_file("results", "not a folder")), "test.py",
         tiny("OUTPUT_DIR", "{case}/results/eval", *TEST_WEIGHT), ["{case}/results is a plain file"], logged=False),
    # --- checkpoints against configs, crafted checkpoints ------------------------------------------
    Case("resume_with_other_part_count", saved_run("MODEL.NUM_PARTS", "3", "INPUT.MASK_PREPROCESS", "three"),
         "train.py", tiny() + ["--resume"],
         ["cannot resume from {case}/out/last.pth: it was trained with another model",
          "MODEL.NUM_PARTS 3 (now 5)", "INPUT.MASK_PREPROCESS 'three' (now 'five')", "start a new OUTPUT_DIR"]),
    Case("resume_with_other_image_size_and_sie", saved_run("INPUT.SIZE_TEST", "[256, 128]", "MODEL.SIE_CAMERA", "True"),
         "train.py", tiny() + ["--resume"], ["MODEL.SIE_CAMERA True (now False)", "INPUT.SIZE_TEST [256, 128]"]),
    Case("resume_with_changed_learning_rate", saved_run("SOLVER.BASE_LR", "0.5"), "train.py", tiny() + ["--resume"],
         ["the config differs from the one it was trained with: SOLVER.BASE_LR 0.5 (now 0.002)",
          "add --allow-config-change"]),
    Case("resume_last_pth_with_code_payload", payload_checkpoint("out/last.pth", as_state=True), "train.py",
         tiny() + ["--resume"], ["cannot resume from {case}/out/last.pth: the file is unreadable"]),
    Case("test_weight_from_other_part_count", saved_run("MODEL.NUM_PARTS", "3", "INPUT.MASK_PREPROCESS", "three",
                                                        config_only=True),
         "test.py", tiny(*TEST_WEIGHT),
         ["TEST.WEIGHT {case}/" + WEIGHT + " was trained with another config ({case}/config.yaml)",
          "MODEL.NUM_PARTS 3 (now 5)", "add MODEL.NUM_PARTS 3 INPUT.MASK_PREPROCESS three to the command line",
          "or leave out --config_file to evaluate with that config.yaml"], logged=False),
    Case("test_weight_from_other_stride", saved_run("MODEL.STRIDE_SIZE", "[12, 12]", config_only=True), "test.py",
         tiny(*TEST_WEIGHT), ["MODEL.STRIDE_SIZE [12, 12] (now [16, 16])", "add MODEL.STRIDE_SIZE '[12, 12]'"],
         logged=False),
    Case("test_weight_with_code_payload", payload_checkpoint(WEIGHT, as_state=False), "test.py", tiny(*TEST_WEIGHT),
         ["checkpoint {case}/" + WEIGHT]),
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
    if case.skip:
        pytest.skip(case.skip)
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
    assert not (case_folder / PAYLOAD_MARKER).exists(), "a crafted file ran code"


def test_the_payloads_are_live(tmp_path: Path):
    """The crafted files of the catalogue do run code when loaded with pickle: their cases prove something."""
    np.save(tmp_path / "m.npy", np.array([Payload(tmp_path)], dtype=object), allow_pickle=True)
    np.load(tmp_path / "m.npy", allow_pickle=True)
    assert (tmp_path / PAYLOAD_MARKER).exists()
    (tmp_path / PAYLOAD_MARKER).unlink()
    torch.save({"model": Payload(tmp_path)}, tmp_path / "c.pth")
    torch.load(tmp_path / "c.pth", weights_only=False)
    assert (tmp_path / PAYLOAD_MARKER).exists()


@pytest.mark.slow
def test_forked_run_matches_a_real_subprocess(case_folder: Path):
    """The forkserver shortcut reports what a fresh ``python train.py`` reports."""
    case = next(c for c in CASES if c.id == "train_jpegs_damaged_found_by_worker")
    case.damage(case_folder)
    argv = [fill(a, case_folder) for a in case.argv]
    forked = run_entry(case.script, argv, case_folder)
    shutil.rmtree(case_folder / "out")
    fresh = run_entry(case.script, argv, case_folder, fork=False)
    assert (forked.returncode, error_line(forked.stderr)) == (fresh.returncode, error_line(fresh.stderr))
    assert forked.returncode == 2 and "Traceback" not in fresh.stdout + fresh.stderr


# ----------------------------------------------------------------------------------------------
# Odd but valid inputs: they simply work
# ----------------------------------------------------------------------------------------------
def _resize_mask(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """``mask`` (36, h0, w0) at (36, h, w), channel by channel (OpenCV has no float16 resize)."""
    return np.stack([cv2.resize(c.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for c in mask]
                    ).clip(0, 1).astype(mask.dtype)


def make_odd(image: Path, kind: str, mask: Path | None) -> None:
    """Rewrite ``image`` (and its mask) as one kind of odd but valid input a real data set holds."""
    bgr = cv2.imread(str(image))
    h, w = bgr.shape[:2]
    if kind == "grayscale":  # a single-channel JPEG
        cv2.imwrite(str(image), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    elif kind == "tiny":  # a detector box of a distant person: 14 x 6 pixels, a 2 x 1 mask
        cv2.imwrite(str(image), cv2.resize(bgr, (6, 14), interpolation=cv2.INTER_AREA))
        if mask is not None:
            np.save(mask, _resize_mask(np.load(mask), 2, 1))
    elif kind == "huge":  # a person filling a 4K frame's height: 1600 x 640 pixels
        cv2.imwrite(str(image), cv2.resize(bgr, (640, 1600), interpolation=cv2.INTER_LINEAR))
        if mask is not None:
            np.save(mask, _resize_mask(np.load(mask), 200, 80))
    elif kind == "mask_full_resolution" and mask is not None:  # one mask at the image's resolution, not 1/8
        np.save(mask, _resize_mask(np.load(mask), h, w).astype(np.float32))


ODD_KINDS = ("grayscale", "tiny", "huge", "mask_full_resolution")


@pytest.mark.slow
def test_odd_but_valid_inputs_train_to_a_checkpoint(case_folder: Path):
    """Grayscale JPEGs, 14 x 6 and 1600 x 640 crops, masks at another resolution than the others (in
    training, query and gallery, a quarter of the files each) train and evaluate without a word."""
    for i, image in enumerate(train_files(case_folder)):
        make_odd(image, ODD_KINDS[i % len(ODD_KINDS)], mask_of(image))
    for split in ("query", "bounding_box_test"):
        for i, image in enumerate(sorted((case_folder / DUKE / split).iterdir())):
            make_odd(image, ODD_KINDS[i % 3], None)
    r = run_entry("train.py", [fill(a, case_folder) for a in tiny("SOLVER.MAX_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "1")],
                  case_folder)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "Traceback" not in r.stdout + r.stderr and "WARNING" not in r.log
    assert (case_folder / "out" / "transformer_1.pth").is_file() and "Validation results - epoch 1" in r.log


# ----------------------------------------------------------------------------------------------
# No run is lost: a rerun into a run's OUTPUT_DIR
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_rerun_into_a_run_is_refused_unless_resumed_or_overwritten(case_folder: Path):
    """train.py without --resume into a folder that holds a run says so in one line and touches nothing;
    --overwrite starts over (deleting the earlier checkpoints); a folder that a training writes right now
    is refused even with --resume."""
    from processor.run_folder import RunLock

    argv = [fill(a, case_folder) for a in tiny("SOLVER.MAX_EPOCHS", "1", "SOLVER.CHECKPOINT_PERIOD", "1")]
    out = case_folder / "out"
    assert run_entry("train.py", argv, case_folder).returncode == 0
    (out / "transformer_7.pth").write_bytes(b"an earlier, longer run's file")
    files = lambda: {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".train.lock"}  # noqa: E731
    before = files()
    r = run_entry("train.py", argv, case_folder)
    assert r.returncode == 2 and error_line(r.stderr) == (
        f"error: OUTPUT_DIR {out} holds a training run (last.pth after epoch 1 of 1, finished, transformer_1.pth, "
        f"transformer_7.pth); continue it with --resume, choose another OUTPUT_DIR, or add --overwrite to start "
        f"over (deleting its checkpoints)")
    assert files() == before  # not even the log was touched

    r = run_entry("train.py", [*argv, "--overwrite"], case_folder)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "--overwrite: deleted the earlier run's last.pth, transformer_1.pth, transformer_7.pth\n" in r.log
    assert not (out / "transformer_7.pth").exists() and (out / "transformer_1.pth").is_file()

    lock = RunLock(str(out)).acquire()  # as a training running in the folder holds it
    try:
        r = run_entry("train.py", [*argv, "--resume"], case_folder)
    finally:
        lock.release()
    assert r.returncode == 2 and error_line(r.stderr) == (
        f"error: OUTPUT_DIR {out} is in use: a training is running there now (pid {os.getpid()}); wait for it "
        f"to end or stop it, or choose another OUTPUT_DIR")
    r = run_entry("train.py", [*argv, "--resume"], case_folder)  # the finished run: nothing left to train
    assert r.returncode == 0 and "resumed from" in r.log
