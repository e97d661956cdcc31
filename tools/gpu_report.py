#!/usr/bin/env python
"""One-command speed and memory report of TSD on one GPU: a markdown table for README.

    python tools/gpu_report.py --out gpu_report.md                     # CUDA, paper config, <= 5 minutes
    python tools/gpu_report.py --device cpu --smoke --out smoke.md     # every row on the tiny model, < 1 minute

Rows (each measured in this run, on the paper config configs/OCC_Duke/vit_base.yml: ViT-B TSD, 5 parts,
batch 64, 256x128, random weights; ``--smoke``: the tiny ViT, 64x32, batch 8, the tiny set):

* training step on a fixed in-memory batch (``tools/bench_train.py``'s step): img/s and peak GiB for
  fp16 + GradScaler (fused SGD; the note gives the loss scale before and after), bf16 and fp32, each
  eager and with ``torch.compile`` (``SOLVER.COMPILE``; the compilation is timed apart and excluded from
  img/s; ``--smoke`` compiles with dynamo's code-generation-free 'eager' backend: inductor's C++ build
  would take minutes on a CPU), and fp32 with TF32 matmuls (``MODEL.TF32``; on a CPU the same as fp32).
  A row whose loss went non-finite fails (skipped steps run no backward and would flatter img/s);
* end to end: the real loader and the real step, built by ``processor.builder.build_trainer`` as ``train.py`` does,
  at several ``DATALOADER.NUM_WORKERS``, next to the loader alone at the same worker counts (whichever is
  lower bounds training);
* evaluation of an Occluded-Duke-size query + gallery: feature extraction img/s (real loader) in fp32
  and with ``TEST.AMP``, then distance + metrics seconds (``evaluation.ReidEvaluator``);
* ``torchrun`` with one process (NCCL; gloo on the CPU): ``train.py`` for one short epoch.

The data set is a synthetic Occluded-Duke with the real names and image sizes
(``tools/make_synthetic_data.py --scale full``; the training split cut to ``--train-images``), generated
into ``--root`` unless it is already there, so a rerun skips it. Every row runs in its own try/except
("failed: <reason>") and the whole report keeps to ``--budget`` seconds (rows that would start after it
are "skipped"); the compiled rows, the slowest, run last. Progress lines go to stderr as they happen; the
table to stdout and ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

PAPER_CONFIG = os.path.join(REPO, "configs", "OCC_Duke", "vit_base.yml")
TINY_CONFIG = os.path.join(REPO, "configs", "demo", "tsd_tiny.yml")
# Where the real Occluded-Duke name lists may be (beside the checkout, or inside it on a copied tree).
REAL_LISTS = (os.path.join(os.path.dirname(REPO), "shared", "data", "Occluded_Duke"),
              os.path.join(REPO, "shared", "data", "Occluded_Duke"))
# Occluded-Duke's split sizes: (identities, images) of train, query and gallery; query ids are in the gallery.
DUKE_SPLITS = {"bounding_box_train.list": (702, 15618), "query.list": (519, 2210),
               "bounding_box_test.list": (1110, 17661)}
DATASET_DIR = "Occluded_Duke"
SPLIT_LISTS = ("bounding_box_train.list", "query.list", "bounding_box_test.list", "new_query.txt", "new_gallery.txt")
PRECISIONS = {"fp16 + GradScaler": torch.float16, "bf16": torch.bfloat16, "fp32": None}
# Eager rows only: fp32 with MODEL.TF32 (TF32 tensor-core matmuls on CUDA; on a CPU the same as fp32).
TF32_ROW = "fp32 + TF32"


def log(msg: str) -> None:
    """A progress line on stderr, flushed at once (the report may be killed by an outer time limit)."""
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Setup:
    """What the rows share: device, model config and sizes, data root, worker counts, step counts."""

    device: str
    config: str
    backbone: str
    size: tuple[int, int]
    batch: int
    root: str
    workers: list[int]
    step_iters: int
    e2e_iters: int
    compile_backend: str  # 'inductor' (what SOLVER.COMPILE gives) or 'eager' (dynamo only: --smoke)
    tmp: str
    overrides: list[str] = field(default_factory=list)
    # DATALOADER.CACHE_DIR: kept between runs (a rerun reuses it), never inside a user's data root.
    cache_dir: str = os.path.join(REPO, "data", "gpu_report_cache")

    def cfg(self, *opts: str):
        """The config with the report's overrides (random weights, this device, the data root) + ``opts``."""
        from config import load_cfg

        return load_cfg(self.config, [
            "MODEL.PRETRAIN_CHOICE", "none", "MODEL.DEVICE", self.device, "MODEL.TRANSFORMER_TYPE", self.backbone,
            "INPUT.SIZE_TRAIN", str(list(self.size)), "INPUT.SIZE_TEST", str(list(self.size)),
            "SOLVER.IMS_PER_BATCH", str(self.batch), "DATASETS.ROOT_DIR", self.root,
            "OUTPUT_DIR", os.path.join(self.tmp, "run"), "SOLVER.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "0",
            "DATALOADER.CACHE_DIR", self.cache_dir, *self.overrides, *opts])


class Report:
    """Runs rows within a time budget and renders them as one markdown table (in a fixed row order)."""

    COLUMNS = ("measurement", "setting", "img/s", "peak GiB", "seconds", "note")

    def __init__(self, budget_s: float, out: str | None, header: list[str]):
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.out = out
        self.header = header
        self.rows: dict[tuple[str, str], dict] = {}

    def remaining(self) -> float:
        """Seconds left of the budget."""
        return self.budget_s - (time.perf_counter() - self.start)

    def reserve(self, measurement: str, setting: str) -> None:
        """Fix a row's place in the table before it runs (rows run in another order than printed)."""
        self.rows[(measurement, setting)] = {"note": "skipped: not run"}

    def run(self, measurement: str, setting: str, fn: Callable[[], dict], needs_s: float = 0.0) -> dict | None:
        """Run ``fn`` (returns the row's cells) unless the budget cannot hold ``needs_s`` more seconds;
        any exception becomes ``failed: <reason>`` in the row and the report goes on."""
        key = (measurement, setting)
        if self.remaining() < needs_s:
            self.rows[key] = {"note": f"skipped: time budget ({self.remaining():.0f} s left, needs ~{needs_s:.0f} s)"}
            log(f"{measurement} / {setting}: {self.rows[key]['note']}")
            self.write()
            return None
        log(f"{measurement} / {setting} ...")
        t = time.perf_counter()
        try:
            cells = fn()
        except Exception as e:  # one row's failure must not cost the others
            reason = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")[:300]
            cells = {"note": f"failed: {reason}"}
            log(f"{measurement} / {setting}: failed\n{traceback.format_exc()}")
        finally:
            _free_memory()
        self.rows[key] = cells
        log(f"{measurement} / {setting}: {cells} ({time.perf_counter() - t:.1f} s)")
        self.write()
        return cells

    def table(self) -> str:
        """The header and the markdown table of every row so far."""
        lines = [*self.header, "", "| " + " | ".join(self.COLUMNS) + " |", "|" + "---|" * len(self.COLUMNS)]
        for (measurement, setting), cells in self.rows.items():
            values = [measurement, setting, *(cells.get(c, "") for c in self.COLUMNS[2:])]
            lines.append("| " + " | ".join(str(v) for v in values) + " |")
        lines.append("")
        lines.append(f"Report time {time.perf_counter() - self.start:.0f} s.")
        return "\n".join(lines)

    def write(self) -> None:
        """Write the table so far to ``--out`` (also after every row: a later kill keeps what was measured)."""
        if self.out:
            tmp = f"{self.out}.tmp"
            with open(tmp, "w") as f:
                f.write(self.table() + "\n")
            os.replace(tmp, self.out)


def _free_memory() -> None:
    """Release what a row built: dynamo's compiled graphs (they hold the compiled model and its CUDA-graph
    memory pools), then the objects and the allocator's cache, so the next row's peak is its own."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device == "cuda" else "-"


def _precision(trainer) -> str:
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32"}
    return names[trainer.amp_dtype] + (" + GradScaler" if trainer.scaler.is_enabled() else "")


def _rate(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if n / seconds >= 100 else f"{n / seconds:.1f}"


# ----------------------------------------------------------------------------------------- data set


def _made_up_lists(dst: str) -> None:
    """Name lists with Occluded-Duke's split sizes (identities, images, 8 cameras) when the real ones are
    not at hand; the new-benchmark files stay empty."""
    first_pid = {"bounding_box_train.list": 1, "query.list": 2001, "bounding_box_test.list": 2001}
    for k, (name, (ids, images)) in enumerate(DUKE_SPLITS.items()):
        # Frame numbers differ between splits: a name in two lists would be one shared image.
        lines = [f"{first_pid[name] + i % ids:04d}_c{1 + (i // ids) % 8}_f{k * 10**6 + i:07d}.jpg"
                 for i in range(images)]
        with open(os.path.join(dst, name), "w") as f:
            f.write("\n".join(sorted(lines)) + "\n")
    for name in SPLIT_LISTS[3:]:
        open(os.path.join(dst, name), "w").close()


def _sliced_lists(dst: str, names_from: str | None, train_images: int) -> str:
    """The Occluded-Duke lists in ``dst`` with the training list cut to its first ``train_images`` names
    (the identity sampler draws K per identity, with replacement when an identity has fewer). Query,
    gallery and the new benchmark stay whole: the evaluation row needs the real size. The lists come from
    ``names_from`` or else are made up with the real split sizes."""
    from tools.synthetic.occ_duke import write_name_lists

    os.makedirs(dst, exist_ok=True)
    if names_from is None:
        _made_up_lists(dst)
        names_from = dst
    return write_name_lists(names_from, dst, {"bounding_box_train.list": train_images} if train_images > 0 else None)


def ensure_data(root: str, smoke: bool, train_images: int, workers: int, tmp: str) -> str:
    """``root`` holding a synthetic Occluded-Duke (generated when ``root/Occluded_Duke`` is missing).

    Returns a description of the set for the report's header.
    """
    from tools.synthetic.writer import generate

    marker = os.path.join(root, DATASET_DIR, "SYNTHETIC.json")
    if os.path.exists(marker):
        import json

        with open(marker) as f:
            info = json.load(f)
        return f"reused {root} ({info.get('scale')}: {info.get('images')})"
    if os.path.isdir(os.path.join(root, DATASET_DIR)):  # e.g. the real data set: use it, never write into it
        return f"the data set in {root}/{DATASET_DIR} (not synthetic)"
    if smoke:
        stats = generate(root, scale="tiny", seed=0)
        return f"generated into {root} in {stats['seconds']:.0f} s (tiny: {stats['images']})"
    names_from = next((d for d in REAL_LISTS if os.path.isfile(os.path.join(d, SPLIT_LISTS[0]))), None)
    lists = _sliced_lists(os.path.join(tmp, "lists"), names_from, train_images)
    stats = generate(root, scale="full", seed=0, names_from=lists, workers=workers)
    origin = "the real Occluded-Duke names" if names_from else "made-up names (real lists not found)"
    return f"generated into {root} in {stats['seconds']:.0f} s ({origin}, real image sizes: {stats['images']})"


def prepare_loader(s: Setup) -> str:
    """Build the training loader once, so that a ``DATALOADER.CACHE`` is built (with every core) here and
    not inside the first loader row. Returns a note for the report's header."""
    from datasets import make_dataloader

    cfg = s.cfg("DATALOADER.NUM_WORKERS", str(max(os.cpu_count() or 1, 1)))
    t = time.perf_counter()
    make_dataloader(cfg)
    cache = (f"training-data cache ready in {time.perf_counter() - t:.0f} s" if cfg.DATALOADER.CACHE
             else "no training-data cache")
    augment = ("device-side batch augmentation (INPUT.BATCH_AUGMENT), timed with the step, not the loader"
               if cfg.INPUT.BATCH_AUGMENT else "augmentation in the loader workers")
    return f"{cache}; {augment}"


# ----------------------------------------------------------------------------------------- rows


def train_step_row(s: Setup, dtype: torch.dtype | None, compiled: bool, tf32: bool = False) -> dict:
    """img/s of the training step on a fixed batch; compilation (first steps) timed apart.

    Every timed step must have updated the model: a step skipped for a non-finite loss runs no backward
    and would flatter img/s (the row fails instead). With fp16 the note gives the GradScaler's loss scale
    before and after (it backs off while the scaled gradients overflow, skipping those updates).
    """
    from tools.bench_train import build, timed_steps
    from utils.misc import set_tf32

    set_tf32(tf32, s.device)
    try:
        trainer, data = build(s.backbone, s.device, dtype, s.batch, s.size, s.compile_backend if compiled else None,
                              config=s.config)
        scale = trainer.scaler.get_scale()
        t = time.perf_counter()
        timed_steps(trainer, data, s.device, 2)  # first step compiles; the second settles (GradScaler, allocator)
        warm = time.perf_counter() - t
        _reset_peak(s.device)
        sec = timed_steps(trainer, data, s.device, s.step_iters)
    finally:
        set_tf32(False, s.device)
    if trainer.skipped_steps:
        raise RuntimeError(f"the loss was non-finite in {trainer.skipped_steps} of {s.step_iters + 2} steps (skipped "
                           f"steps run no backward: img/s would be too high)")
    row = {"img/s": _rate(s.batch, sec), "peak GiB": _peak(s.device), "seconds": f"{sec * 1000:.1f} ms/step"}
    notes = []
    if compiled:
        notes.append(f"compile + 2 warm-up steps {warm:.0f} s" + (" (dynamo only, no codegen)"
                                                                  if s.compile_backend == "eager" else ""))
    if trainer.scaler.is_enabled():
        notes.append(f"loss scale {scale:g} -> {trainer.scaler.get_scale():g}, fused SGD")
    if notes:
        row["note"] = "; ".join(notes)
    return row


def e2e_rows(s: Setup, report: Report, workers: int) -> None:
    """Loader alone, then loader + step, both on the trainer ``processor.builder.build_trainer`` builds."""
    state = {}

    def build():
        from processor.builder import build_trainer
        from utils.misc import set_seed

        state["cfg"] = cfg = s.cfg("DATALOADER.NUM_WORKERS", str(workers))
        set_seed(cfg.SOLVER.SEED)
        state["trainer"] = build_trainer(cfg)
        state["trainer"].scheduler.step(1)
        state["trainer"].model.train()
        return state["trainer"]

    def batches():
        """The training loader, epoch after epoch (as the trainer's loop runs it)."""
        while True:
            yield from state["trainer"].train_loader

    # Enough batches that the prefetched ones (2 per worker) do not flatter either measurement.
    warmup = 2 * workers + 1
    iters = max(s.e2e_iters, 3 * warmup)

    def loader_alone() -> dict:
        build()
        it = batches()
        for _ in range(warmup):
            next(it)
        t, n = time.perf_counter(), 0
        for _ in range(iters):
            n += len(next(it))
        return {"img/s": _rate(n, time.perf_counter() - t), "note": f"{iters} batches after {warmup}"}

    def end_to_end() -> dict:
        trainer = state.get("trainer") or build()
        it = batches()
        for _ in range(warmup):
            trainer.run_step(next(it))
        _sync(s.device)
        _reset_peak(s.device)
        t, n = time.perf_counter(), 0
        for _ in range(iters):
            batch = next(it)
            trainer.run_step(batch)
            n += len(batch)
        _sync(s.device)
        return {"img/s": _rate(n, time.perf_counter() - t), "peak GiB": _peak(s.device),
                "note": f"{iters} steps after {warmup}, {_precision(trainer)}, eager"}

    setting = f"NUM_WORKERS {workers}"
    try:
        loader = report.run("loader alone", setting, loader_alone, needs_s=10)
        train_row = report.run("end to end (loader + step)", setting, end_to_end, needs_s=15)
        if loader and train_row and "img/s" in loader and "img/s" in train_row:
            a, b = (float(x["img/s"].replace(",", "")) for x in (loader, train_row))
            train_row["note"] += "; loader-bound" if b >= 0.85 * a else "; step-bound"
    finally:
        state.clear()  # shuts the persistent workers down


def eval_rows(s: Setup, report: Report) -> None:
    """Feature extraction over query + gallery (real loader), then the evaluator, as processor.inference does."""
    from datasets import make_dataloader
    from evaluation import ReidEvaluator
    from model import make_model
    from processor.inference import eval_amp_dtype, extract_features

    state = {}

    def features(amp: bool) -> dict:
        cfg = s.cfg("DATALOADER.NUM_WORKERS", str(max(s.workers)), "TEST.AMP", str(amp))
        _, val_loader, num_query, num_classes, cams, views = make_dataloader(cfg)
        model = make_model(cfg, num_classes, cams, views).to(s.device)
        amp_dtype = eval_amp_dtype(cfg, s.device)
        _reset_peak(s.device)
        t = time.perf_counter()
        data = extract_features(model, val_loader, s.device, amp_dtype=amp_dtype)
        _sync(s.device)
        sec = time.perf_counter() - t
        if not amp:  # the metrics row uses the reference's float32 features
            state.update(cfg=cfg, data=data, num_query=num_query)
        n = len(data["paths"])
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32"}[amp_dtype]
        return {"img/s": _rate(n, sec), "peak GiB": _peak(s.device), "seconds": f"{sec:.1f}",
                "note": f"{num_query:,} query + {n - num_query:,} gallery, {precision}, batch "
                        f"{cfg.TEST.IMS_PER_BATCH}, {cfg.DATALOADER.NUM_WORKERS} workers (incl. their start)"}

    def metrics() -> dict:
        if "data" not in state:
            raise RuntimeError("no features (the extraction row failed)")
        data, cfg = state["data"], state["cfg"]
        t = time.perf_counter()
        evaluator = ReidEvaluator.from_cfg(cfg, state["num_query"])
        evaluator.update(data["feats"], data["vis"], data["pids"], data["camids"])
        evaluator.compute()
        _sync(s.device)
        return {"seconds": f"{time.perf_counter() - t:.1f}", "note": "part-visibility distance, CMC, mAP, mINP"}

    try:
        report.run("evaluation: feature extraction", "query + gallery", lambda: features(False), needs_s=20)
        report.run("evaluation: feature extraction", "query + gallery, TEST.AMP", lambda: features(True), needs_s=20)
        report.run("evaluation: distance + metrics", "query x gallery", metrics, needs_s=5)
    finally:
        state.clear()


def torchrun_row(s: Setup, timeout: float) -> dict:
    """``torchrun --nproc_per_node 1 train.py`` for one epoch; success, seconds and the backend it used."""
    out = os.path.join(s.tmp, "torchrun")
    workers = str(min(max(s.workers), 8))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           os.path.join(REPO, "train.py"), "--config_file", s.config,
           "MODEL.PRETRAIN_CHOICE", "none", "MODEL.DEVICE", s.device, "MODEL.TRANSFORMER_TYPE", s.backbone,
           "INPUT.SIZE_TRAIN", str(list(s.size)), "INPUT.SIZE_TEST", str(list(s.size)),
           "SOLVER.IMS_PER_BATCH", str(s.batch), "DATASETS.ROOT_DIR", s.root, "OUTPUT_DIR", out,
           "SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "0",
           "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.LOG_PERIOD", "10", "DATALOADER.NUM_WORKERS", workers,
           "DATALOADER.CACHE_DIR", s.cache_dir, *s.overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    sec = time.perf_counter() - t
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {r.returncode}: {tail}")
    text = open(os.path.join(out, "train_log.txt")).read()
    backend = re.search(r"torch.distributed: (\w+) backend", text)
    steps = re.search(r"(\d+) iterations/epoch", text)
    epoch = re.search(r"Epoch 1 done in [\d.]+s \(([\d.]+) img/s\)", text)
    return {"img/s": epoch.group(1) if epoch else "", "seconds": f"{sec:.0f}",
            "note": f"ok: {backend.group(1) if backend else 'no process group?'}, "
                    f"{steps.group(1) if steps else '?'} steps, launch to exit"}


# ----------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--smoke", action="store_true", help="the tiny model and the tiny set: every row in < 1 minute")
    p.add_argument("--root", default=None,
                   help="data root: used as it is when ROOT/Occluded_Duke exists (also the real set), else "
                        "generated there (default data/gpu_report; --smoke: a temporary folder)")
    p.add_argument("--out", default=None, help="also write the table to this file (updated after every row)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole report (default 290; smoke 120)")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="NUM_WORKERS of the end-to-end rows (default 4 8 16; smoke 0 2)")
    p.add_argument("--train-images", type=int, default=4096,
                   help="first N names of the real training list to generate (0: all 15,618)")
    p.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1, help="processes generating the data")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no GPU is visible; use --device cpu --smoke for the CPU smoke run",
              file=sys.stderr)
        return 2
    budget = args.budget or (120 if args.smoke else 290)
    workers = args.workers or ([0, 2] if args.smoke else [4, 8, 16])
    if args.smoke:
        # One thread: the smoke run shows that every row works, not CPU speed, and with loader workers and
        # a torchrun child beside it two OpenMP threads per process oversubscribe a 2-core CI machine.
        torch.set_num_threads(1)
    else:
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory(prefix="tsd_gpu_report_") as tmp:
        root = args.root or (os.path.join(tmp, "data") if args.smoke else os.path.join(REPO, "data", "gpu_report"))
        if args.smoke:
            s = Setup(args.device, TINY_CONFIG, "vit_tiny_patch16_TransReID", (64, 32), 8, root, workers,
                      step_iters=2, e2e_iters=2, compile_backend="eager", tmp=tmp,
                      overrides=["DATALOADER.NUM_INSTANCE", "4", "TEST.IMS_PER_BATCH", "64"],
                      cache_dir=os.path.join(tmp, "data_cache"))
        else:
            s = Setup(args.device, PAPER_CONFIG, "vit_base_patch16_224_TransReID", (256, 128), 64, root, workers,
                      step_iters=20, e2e_iters=60, compile_backend="inductor", tmp=tmp)
        dev_name = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or "CPU")
        header = [f"**TSD speed and memory** — {dev_name}, torch {torch.__version__}, {os.cpu_count()} CPU cores, "
                  f"{datetime.date.today()}; `{' '.join(['python tools/gpu_report.py', *(argv or sys.argv[1:])])}`",
                  "",
                  f"Model: {os.path.relpath(s.config, REPO)} with {s.backbone}, batch {s.batch}, "
                  f"{s.size[0]}x{s.size[1]}, random weights."]
        report = Report(budget, args.out, header)
        step_m = f"train step ({'tiny' if args.smoke else 'ViT-B'} TSD, fixed batch)"
        for name in PRECISIONS:
            report.reserve(step_m, f"{name}, eager")
            report.reserve(step_m, f"{name}, compiled")
        report.reserve(step_m, f"{TF32_ROW}, eager")
        for w in workers:
            report.reserve("loader alone", f"NUM_WORKERS {w}")
            report.reserve("end to end (loader + step)", f"NUM_WORKERS {w}")
        report.reserve("evaluation: feature extraction", "query + gallery")
        report.reserve("evaluation: feature extraction", "query + gallery, TEST.AMP")
        report.reserve("evaluation: distance + metrics", "query x gallery")
        torchrun_setting = f"torchrun, 1 process, {'gloo' if args.device == 'cpu' else 'NCCL'}"
        report.reserve("distributed", torchrun_setting)

        data = report.run("data", "synthetic Occluded-Duke",
                          lambda: {"note": ensure_data(root, args.smoke, args.train_images, args.gen_workers, tmp)})
        report.header.append(f"Data: {(data or {}).get('note', 'unavailable')}.")
        loader = report.run("data", "training loader", lambda: {"note": prepare_loader(s)})
        report.header.append(f"Loader: {(loader or {}).get('note', 'unavailable')}.")
        for name, dtype in PRECISIONS.items():
            report.run(step_m, f"{name}, eager", lambda d=dtype: train_step_row(s, d, False), needs_s=10)
        report.run(step_m, f"{TF32_ROW}, eager", lambda: train_step_row(s, None, False, tf32=True), needs_s=10)
        for w in workers:
            e2e_rows(s, report, w)
        eval_rows(s, report)
        report.run("distributed", torchrun_setting,
                   lambda: torchrun_row(s, timeout=max(10.0, report.remaining() - 5)), needs_s=20)
        if args.no_compile:
            for name in PRECISIONS:
                report.rows[(step_m, f"{name}, compiled")] = {"note": "skipped: --no-compile"}
        else:
            # Slowest last; bf16 first (the likely fastest on a current GPU), fp32 last.
            for name in ("bf16", "fp16 + GradScaler", "fp32"):
                cells = report.run(step_m, f"{name}, compiled", lambda d=PRECISIONS[name]: train_step_row(s, d, True),
                                   needs_s=15 if args.smoke else 75)
                eager = report.rows.get((step_m, f"{name}, eager"), {})
                if cells and "img/s" in cells and "img/s" in eager:
                    ratio = float(cells["img/s"].replace(",", "")) / float(eager["img/s"].replace(",", ""))
                    cells["note"] = f"{ratio:.2f}x eager; " + cells["note"]
        for key in [("data", "synthetic Occluded-Duke"), ("data", "training loader")]:
            report.rows.pop(key, None)  # in the header instead
        report.write()
        print(report.table(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
