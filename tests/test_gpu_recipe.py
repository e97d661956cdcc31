"""The CUDA training recipe run on the CPU: the same mechanisms the users' GPU runs go through.

``sh run_tsd.sh`` trains with fp16 autocast + GradScaler, a fused SGD, optionally ``SOLVER.COMPILE``, and
``torchrun`` over NCCL; CI has no GPU. torch runs each of those mechanisms on the CPU too: CPU fp16
autocast and ``torch.amp.GradScaler('cpu')``, the fused SGD / Adam kernels, inductor. What only a GPU has
is imitated: CUDA graphs' reuse of output memory (a model returning one buffer), the CUDA RNG and device
counts (monkeypatched ``torch.cuda``), NCCL's process-group arguments (monkeypatched
``init_process_group``). Amp is forced to fp16 on the CPU by :func:`force_fp16` (a test helper: the
library never silently changes the precision a run asked for).
"""
from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
from torch import nn

from processor.trainer import HookBase
from tests.test_train import tiny_cfg
from tools.bench_train import count_host_reads

# The paper's solver (configs/OCC_Duke/vit_base.yml) on the tiny demo model.
SGD_OPTS = ("SOLVER.OPTIMIZER_NAME", "SGD", "SOLVER.BASE_LR", "0.008", "SOLVER.BIAS_LR_FACTOR", "2",
            "SOLVER.WEIGHT_DECAY", "1e-4", "SOLVER.WEIGHT_DECAY_BIAS", "1e-4", "SOLVER.MOMENTUM", "0.9",
            "SOLVER.CHECKPOINT_PERIOD", "0")
# The tiny model's fp16 gradients overflow at scale >= ~8192 in its first steps (65,536 on a GPU run).
INIT_SCALE = 2.0 ** 15


def force_fp16(monkeypatch) -> None:
    """Make ``processor.builder.build_trainer`` train with fp16 autocast + GradScaler on the CPU, as on CUDA."""
    import processor.trainer

    monkeypatch.setattr(processor.trainer, "amp_settings", lambda enabled, dtype, device: (torch.float16, True))


def force_foreach(monkeypatch) -> None:
    """Make ``solver.make_optimizer`` pick the multi-tensor (non-fused) update."""
    import importlib

    module = importlib.import_module("solver.make_optimizer")  # the package's make_optimizer is the function
    monkeypatch.setattr(module, "_fast_update", lambda opt_cls, groups: {"foreach": True})


def snapshot(trainer) -> dict:
    """Copies of the weights, the optimizer state, the buffers (BatchNorm) and the loss scale."""
    opt = trainer.optimizer.state_dict()["state"]
    return {"params": {k: v.detach().clone() for k, v in trainer.model.named_parameters()},
            "buffers": {k: v.clone() for k, v in trainer.model.named_buffers()},
            "optimizer": {(i, k): torch.as_tensor(v).clone() for i, s in opt.items() for k, v in s.items()},
            "scale": trainer.scaler.get_scale()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class StepAudit(HookBase):
    """Per step: was it skipped by the GradScaler (the scale backed off), and did it change the weights,
    the optimizer state and the buffers?"""

    def __init__(self):
        self.steps: list[dict] = []

    def before_train(self) -> None:
        self.last = snapshot(self.trainer)

    def after_step(self) -> None:
        now = snapshot(self.trainer)
        self.steps.append({"skipped": now["scale"] < self.last["scale"], "scale": now["scale"],
                           **{k: not same(now[k], self.last[k]) for k in ("params", "buffers", "optimizer")}})
        self.last = now


def train_fp16(root: str, out: str, monkeypatch, *opts: str, foreach: bool = False):
    """The tiny config with the paper's SGD, fp16 + GradScaler from INIT_SCALE; returns (trainer, audit)."""
    from processor.builder import build_trainer
    from utils.misc import set_seed

    with monkeypatch.context() as m:
        force_fp16(m)
        if foreach:
            force_foreach(m)
        cfg = tiny_cfg(root, out, *SGD_OPTS, "SOLVER.MAX_EPOCHS", "2", *opts)
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        set_seed(cfg.SOLVER.SEED)
        trainer = build_trainer(cfg)
    assert trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    assert trainer.optimizer.defaults["fused" if not foreach else "foreach"]
    trainer.scaler.load_state_dict({**trainer.scaler.state_dict(), "scale": INIT_SCALE})
    audit = StepAudit()
    trainer.register_hooks([audit])
    trainer.train()
    return trainer, audit


# ----------------------------------------------------------------------------------- fused optimizers


def _toy_steps(cfg_opts: tuple, overflow: list[bool], fused: bool) -> torch.Tensor:
    """A small model trained through ``make_optimizer`` with a CPU GradScaler, one step per entry of
    ``overflow`` (True: the loss is scaled into fp32 overflow, so the scaler must skip the step)."""
    from config import get_cfg_defaults
    from solver import make_optimizer

    cfg = get_cfg_defaults()
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.1", "SOLVER.WEIGHT_DECAY", "0.01", *cfg_opts])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.MonkeyPatch.context() as m:
        if not fused:
            force_foreach(m)
        opt = make_optimizer(cfg, model)
    assert opt.defaults["fused" if fused else "foreach"]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    x = torch.randn(4, 8)
    for big in overflow:
        opt.zero_grad()
        loss = model(x).square().mean() * (1e36 if big else 1.0)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fused_sgd_after_an_overflowing_step_equals_plain_sgd():
    """The issue's reproduction: one step skipped by the GradScaler, then a finite one. torch's fused SGD
    allocates its momentum buffers with empty_like in the skipped step and then applied 0.9 x garbage
    (weights off by 2.6e31 here); with the buffers zero from the start it is plain SGD bit for bit."""
    opts = ("SOLVER.OPTIMIZER_NAME", "SGD", "SOLVER.MOMENTUM", "0.9")
    fused = _toy_steps(opts, [True, False, False], fused=True)
    plain = _toy_steps(opts, [True, False, False], fused=False)
    assert torch.equal(fused, plain), f"max difference {(fused - plain).abs().max():.3g}"
    # and a skipped step is no step at all
    assert torch.equal(fused, _toy_steps(opts, [False, False], fused=True))


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fused_adam_skipped_steps_change_nothing(name):
    """Adam's state (step, moments) already starts at zero: a skipped fused step is no step at all."""
    opts = ("SOLVER.OPTIMIZER_NAME", name)
    assert torch.equal(_toy_steps(opts, [True, False, True, False], fused=True),
                       _toy_steps(opts, [False, False], fused=True))


def test_sgd_momentum_buffers_exist_zero_before_the_first_step():
    from config import get_cfg_defaults
    from solver import make_optimizer

    cfg = get_cfg_defaults()
    cfg.SOLVER.OPTIMIZER_NAME = "SGD"
    model = nn.Linear(4, 2)
    opt = make_optimizer(cfg, model)
    assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.zeros_like(p)) for p in model.parameters())


# ----------------------------------------------------------------------------------- the users' recipe


def check_recipe(audit: StepAudit, trainer) -> None:
    """Skipped steps (the scale backed off) left weights, optimizer and BatchNorm state untouched; the
    others changed them; the run ends finite."""
    skipped = [s for s in audit.steps if s["skipped"]]
    done = [s for s in audit.steps if not s["skipped"]]
    assert skipped and audit.steps[0]["skipped"], audit.steps  # INIT_SCALE overflows at first
    assert len(done) >= 2, audit.steps
    assert audit.steps[0]["scale"] == INIT_SCALE / 2
    for s in skipped:
        assert not (s["params"] or s["optimizer"] or s["buffers"]), s
    for s in done:
        assert s["params"] and s["optimizer"] and s["buffers"], s
    assert trainer.skipped_steps == 0  # the loss itself stayed finite: these are the scaler's skips
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in trainer.step_terms.values())


@pytest.mark.slow
def test_fp16_gradscaler_training_through_the_trainer(synthetic_root, tmp_path, monkeypatch):
    """processor.builder.build_trainer's run with fp16 autocast + GradScaler + fused SGD, as on a GPU: steps the scaler
    skips leave no trace, the scale backs off, and the weights equal those of a foreach-SGD run."""
    fused, audit = train_fp16(synthetic_root, str(tmp_path / "fused"), monkeypatch)
    check_recipe(audit, fused)
    foreach, audit_foreach = train_fp16(synthetic_root, str(tmp_path / "foreach"), monkeypatch, foreach=True)
    assert [s["skipped"] for s in audit_foreach.steps] == [s["skipped"] for s in audit.steps]
    a, b = fused.model.state_dict(), foreach.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# The COMPILE_MODEs that work on a CPU: 'default' and 'max-autotune-no-cudagraphs'. 'reduce-overhead' is CUDA
# graphs and 'max-autotune' is 'max-autotune-no-cudagraphs' + CUDA graphs: on a CPU inductor skips the graphs
# ("skipping cudagraphs due to cpu device"), so those two would only rerun the modes below; their one hazard,
# outputs overwritten by the next call, is imitated in test_evaluation_copies_what_a_cuda_graph_overwrites.
# The ViT baseline (MODEL.ARCH vit: backbone, BNNeck, classifier) keeps inductor's cold C++ build to about a
# third of the full TSD model's (28 vs 88 kernels, minutes on 2 cores); the recipe's mechanisms are the same.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "max-autotune-no-cudagraphs"])
def test_fp16_gradscaler_training_compiled(synthetic_root, tmp_path, monkeypatch, mode):
    import torch._inductor.config as inductor_config

    opts = ("SOLVER.COMPILE", "True", "SOLVER.COMPILE_MODE", mode, "INPUT.SIZE_TRAIN", "[64, 32]", "MODEL.ARCH", "vit")
    # The teacher noise drawn as eager draws it, so that fused and foreach runs see the same noise.
    with inductor_config.patch(fallback_random=True):
        fused, audit = train_fp16(synthetic_root, str(tmp_path / "fused"), monkeypatch, *opts)
        check_recipe(audit, fused)
        foreach, audit_foreach = train_fp16(synthetic_root, str(tmp_path / "foreach"), monkeypatch, *opts,
                                            foreach=True)
    assert [s["skipped"] for s in audit_foreach.steps] == [s["skipped"] for s in audit.steps]
    a, b = fused.model.state_dict(), foreach.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------- host-device syncs

@pytest.mark.parametrize("fp16", [False, True], ids=["demo-config", "fp16-gradscaler-fused-sgd"])
def test_a_training_step_reads_the_device_once(synthetic_root, tmp_path, monkeypatch, fp16):
    """One ``Trainer.run_step`` of the tiny config (batched augmentation on the device, every loss, the
    update) reads one value back to the host: the non-finite check. Before: 6 (3 x the part triplet's
    ``if torch.isinf(loss)``, the check, 2 x ``.tolist()`` of the erasing rectangles)."""
    from processor.builder import build_trainer
    from utils.misc import set_seed

    with monkeypatch.context() as m:
        if fp16:
            force_fp16(m)
        cfg = tiny_cfg(synthetic_root, str(tmp_path), *(SGD_OPTS if fp16 else ()), "INPUT.RE_PROB", "1.0")
        set_seed(0)
        trainer = build_trainer(cfg)
    assert cfg.INPUT.BATCH_AUGMENT and trainer.scaler.is_enabled() == fp16
    trainer.scheduler.step(1)
    trainer.model.train()
    batches = iter(trainer.train_loader)
    trainer.run_step(next(batches))  # the first step sets up lazily (optimizer state, scaler)
    batch = next(batches)
    with count_host_reads() as counts:
        trainer.run_step(batch)
    assert trainer.step_terms, "the step was skipped"
    assert counts == {"item utils/comm.py:" + str(_all_true_read_line()): 1}, counts


def _all_true_read_line() -> int:
    """Line of ``utils.comm.all_true``'s one host read."""
    import inspect

    from utils import comm

    lines, start = inspect.getsourcelines(comm.all_true)
    return start + next(i for i, line in enumerate(lines) if ".item()" in line)


# ----------------------------------------------------------------------------------- CUDA graphs


class ReusedOutputs(nn.Module):
    """An eval forward that returns its results in the same two tensors at every call, as a model compiled
    with CUDA graphs (COMPILE_MODE 'reduce-overhead' / 'max-autotune') does: the next call overwrites them."""

    def __init__(self, reuse: bool = True):
        super().__init__()
        self.reuse = reuse
        self.weight = nn.Parameter(torch.linspace(-1, 1, 8 * 3 * 4).view(8, 3, 4))  # per column, token, channel
        self.out: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, imgs: torch.Tensor, cam_label=None) -> tuple[torch.Tensor, torch.Tensor]:
        """imgs (B, 3, H, 8) -> features (B, 3, 4), visibility (B, 3); position-dependent (flip matters)."""
        feats = torch.einsum("bw,wtc->btc", imgs.mean((1, 2)), self.weight)
        vis = feats.mean(-1).sigmoid()
        if not self.reuse:
            return feats, vis
        if self.out is None:
            self.out = (torch.empty_like(feats), torch.empty_like(vis))
        self.out[0].copy_(feats)
        self.out[1].copy_(vis)
        return self.out


@pytest.mark.parametrize("flip", [False, True])
def test_evaluation_copies_what_a_cuda_graph_overwrites(flip):
    from datasets.batch import EvalBatch
    from processor.inference import extract_features

    torch.manual_seed(0)
    loader = [EvalBatch(torch.randn(4, 3, 2, 8), torch.arange(4), torch.zeros(4, dtype=torch.long),
                        torch.zeros(4, dtype=torch.long), [f"b{i}_{k}.jpg" for k in range(4)]) for i in range(3)]
    expected = extract_features(ReusedOutputs(reuse=False), loader, "cpu", flip=flip)
    got = extract_features(ReusedOutputs(reuse=True), loader, "cpu", flip=flip)
    assert torch.equal(got["feats"], expected["feats"]) and torch.equal(got["vis"], expected["vis"])


# ----------------------------------------------------------------------------------- resume


def _toy_checkpointer(folder, scaler):
    from processor.checkpointer import Checkpointer

    model = nn.Linear(4, 4)
    return Checkpointer(model, str(folder), torch.optim.SGD(model.parameters(), lr=0.1), scaler=scaler)


def test_resume_turns_the_scaler_on_from_a_state_saved_without_one(tmp_path, caplog):
    """A CPU (or fp32 / bf16) run continued on a GPU with fp16: the disabled scaler saved ``{}``, which
    ``GradScaler.load_state_dict`` refuses ("The source state dict is empty"); the loss scale starts anew."""
    path = _toy_checkpointer(tmp_path, torch.amp.GradScaler("cpu", enabled=False)).save_state("last.pth", epoch=3)
    assert torch.load(path, weights_only=True)["scaler"] == {}
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    assert _toy_checkpointer(tmp_path, scaler).resume(path) == 3
    assert scaler.is_enabled() and scaler.get_scale() == 1024.0
    # an enabled scaler's state still carries over
    scaler.load_state_dict({**scaler.state_dict(), "scale": 256.0})
    path = _toy_checkpointer(tmp_path, scaler).save_state("last.pth", epoch=4)
    again = torch.amp.GradScaler("cpu")
    _toy_checkpointer(tmp_path, again).resume(path)
    assert again.get_scale() == 256.0


class FakeCuda:
    """``torch.cuda``'s RNG functions for a process that sees ``count`` GPUs and uses GPU ``current``."""

    def __init__(self, monkeypatch, count: int, current: int):
        self.count, self.current, self.restored = count, current, []
        for name in ("is_available", "device_count", "current_device", "get_rng_state", "get_rng_state_all",
                     "set_rng_state", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def current_device(self) -> int:
        return self.current

    def state(self, device: int) -> torch.Tensor:
        return torch.full((16,), 100 + device, dtype=torch.uint8)

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        return self.state(self.current if device == "cuda" else int(device))

    def get_rng_state_all(self) -> list[torch.Tensor]:
        return [self.state(i) for i in range(self.count)]

    def set_rng_state(self, state, device="cuda") -> None:
        index = self.current if device == "cuda" else int(device)
        if index >= self.count:  # torch: "IndexError: list index out of range" (no such device)
            raise IndexError(f"no GPU {index}: this process sees {self.count}")
        self.restored.append((index, int(state[0])))

    def set_rng_state_all(self, states) -> None:
        for i, state in enumerate(states):
            self.set_rng_state(state, i)


def test_cuda_rng_state_is_saved_and_restored_for_this_process_gpu_only(monkeypatch):
    """Rank 2 of a 4-GPU torchrun saves GPU 2's state only; resuming in one process that sees one GPU
    (a 4-GPU run continued with ``python train.py``, or a SLURM task with its own GPU) restores it there.
    Before: every visible GPU's state was saved and restoring 4 states on 1 GPU raised IndexError."""
    from processor.checkpointer import rng_state, set_rng_state

    FakeCuda(monkeypatch, count=4, current=2)
    state = rng_state()
    assert torch.equal(state["cuda"], torch.full((16,), 102, dtype=torch.uint8))
    one = FakeCuda(monkeypatch, count=1, current=0)
    set_rng_state(state)
    assert one.restored == [(0, 102)]
    # last.pth of earlier versions: a list with every GPU's state; this process's GPU takes its own
    old = {**state, "cuda": [torch.full((16,), 100 + i, dtype=torch.uint8) for i in range(4)]}
    other = FakeCuda(monkeypatch, count=4, current=3)
    set_rng_state(old)
    assert other.restored == [(3, 103)]


def _per_tensor_run(monkeypatch):
    """Make ``processor.builder.build_trainer`` build the per-tensor groups earlier versions saved in last.pth."""
    import importlib

    module = importlib.import_module("solver.make_optimizer")
    build = module.make_param_groups
    monkeypatch.setattr(module, "make_param_groups", lambda cfg, model, per_tensor=False: build(cfg, model, True))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["AdamW", "SGD"])
def test_last_pth_of_per_tensor_groups_resumes_bit_for_bit(synthetic_root, tmp_path, monkeypatch, optimizer):
    """A run of the old layout (one group per tensor, 101 here) stopped after epoch 1 continues under the
    merged groups and ends bit for bit where the old layout ends: same per-parameter update."""
    from tests.test_train import StopAfter, run_training

    opts = (*(SGD_OPTS if optimizer == "SGD" else ()), "SOLVER.MAX_EPOCHS", "2", "SOLVER.CHECKPOINT_PERIOD", "0")
    with monkeypatch.context() as m:
        _per_tensor_run(m)
        old = run_training(tiny_cfg(synthetic_root, str(tmp_path / "old"), *opts))
        assert len(old.optimizer.param_groups) > 100 and "name" in old.optimizer.param_groups[0]
        cfg = tiny_cfg(synthetic_root, str(tmp_path / "resumed"), *opts)
        with pytest.raises(KeyboardInterrupt):
            run_training(cfg, hooks=[StopAfter(1)])
    resumed = run_training(cfg, resume=os.path.join(cfg.OUTPUT_DIR, "last.pth"))
    assert len(resumed.optimizer.param_groups) == 2
    a, b = old.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [
        old.optimizer.param_groups[0]["lr"], next(g["lr"] for g in old.optimizer.param_groups if "bias" in g["name"])]


def test_an_optimizer_state_that_does_not_fit_is_one_clear_line(tmp_path):
    from config import get_cfg_defaults
    from processor.checkpointer import Checkpointer
    from solver import create_scheduler, make_optimizer
    from utils.errors import CheckpointError

    cfg = get_cfg_defaults()
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    opt = make_optimizer(cfg, model, per_tensor=True)
    path = Checkpointer(model, str(tmp_path), opt, create_scheduler(cfg, opt)).save_state("last.pth", epoch=1)
    state = torch.load(path, weights_only=True)
    state["optimizer"]["param_groups"][1]["name"] = "renamed.bias"
    torch.save(state, path)
    opt = make_optimizer(cfg, model)
    with pytest.raises(CheckpointError, match=r"^cannot resume from .*last.pth: its optimizer state has no entry "
                                              r"for parameter '0.bias'; start a new OUTPUT_DIR"):
        Checkpointer(model, str(tmp_path), opt, create_scheduler(cfg, opt)).resume(path)


# ----------------------------------------------------------------------------------- torchrun / NCCL


@pytest.mark.parametrize("visible", [8, 1], ids=["all-gpus-visible", "one-gpu-per-process"])
def test_init_distributed_picks_the_gpu_and_passes_the_timeout(monkeypatch, visible):
    """Local rank 5 uses GPU 5 when it sees the node's 8 GPUs and GPU 0 when the launcher gives each
    process its own (before: ``set_device(5)`` on a process that sees one GPU); the process group gets
    SOLVER.DIST_TIMEOUT_MINUTES (before: torch's default, 10 min for NCCL)."""
    import torch.distributed as dist

    from config import get_cfg_defaults
    from utils import comm

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.update(set_device=d))
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.update(init=kw))
    monkeypatch.setattr(dist, "barrier", lambda **kw: calls.update(barrier=kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 13)
    cfg = get_cfg_defaults()
    assert comm.init_distributed("cuda", cfg.SOLVER.DIST_TIMEOUT_MINUTES) == (13, 5)
    gpu = 5 % visible
    assert calls == {"set_device": gpu, "init": {"backend": "nccl", "timeout": datetime.timedelta(minutes=60)},
                     "barrier": {"device_ids": [gpu]}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_a_collective_timeout_is_one_line_naming_the_key(monkeypatch):
    """A real gloo timeout: rank 0 of 2 waits for a rank that never comes (1.2 s limit)."""
    import torch.distributed as dist

    from utils import comm
    from utils.errors import user_message

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with pytest.raises(comm.DistTimeoutError) as e:
        comm.init_distributed("cpu", 0.02)
    assert not dist.is_initialized()
    msg = user_message(e.value)
    assert msg.startswith("rank 0 waited longer than the process group's timeout (0.02 min, "
                          "SOLVER.DIST_TIMEOUT_MINUTES) for the other ranks at start-up") and "\n" not in msg
    # inside a run: a barrier that times out (gloo raises in the waiting call) names what it waited for
    monkeypatch.setattr(comm, "is_dist", lambda: True)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "get_rank", lambda: 1)

    def barrier():
        raise dist.DistBackendError("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 3600000ms for "
                                    "recv operation to complete")

    monkeypatch.setattr(dist, "barrier", barrier)
    with pytest.raises(comm.DistTimeoutError, match=r"^rank 1 waited longer .* at the end of the evaluation "
                                                    r"\(rank 0 computes the metrics\) .*raise SOLVER.DIST_TIMEOUT"):
        comm.synchronize("the end of the evaluation (rank 0 computes the metrics)")


# ----------------------------------------------------------------------------------- benchmarks and tools


def test_bench_train_measures_one_model_at_a_time(monkeypatch):
    """Each setting's peak memory must be its own: before, all six ViT-B settings were built first and
    every peak counted the other five (~6.5 GB too high)."""
    import sys
    import weakref

    from tools import bench_train

    alive: set[int] = set()
    most = []

    class Stub:
        """A trainer whose step does nothing; counts how many exist while one runs."""

        def __init__(self):
            alive.add(id(self))
            weakref.finalize(self, alive.discard, id(self))

        def run_step(self, data):
            most.append(len(alive))

    monkeypatch.setattr(bench_train, "build", lambda *a, **k: (Stub(), None))
    monkeypatch.setattr(bench_train, "free", lambda compiled: None, raising=False)
    monkeypatch.setattr(sys, "argv", ["bench_train.py", "--no-host", "--iters", "1", "--warmup", "1"])
    threads = torch.get_num_threads()
    try:
        bench_train.main()
    finally:
        torch.set_num_threads(threads)
    assert most and max(most) == 1, most


def test_gpu_report_resets_dynamo_between_rows(monkeypatch, tmp_path):
    """A compiled row's graphs (and on CUDA their graph memory pools) must not count in the next row."""
    from tools import gpu_report

    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    report = gpu_report.Report(budget_s=60, out=None, header=["title"])
    report.run("train step", "compiled", lambda: {"img/s": "1"})
    assert resets == [1]


def test_vis_rank_applies_device_id_before_the_first_cuda_query(synthetic_root, tmp_path, monkeypatch):
    """``MODEL.DEVICE_ID`` becomes CUDA_VISIBLE_DEVICES before anything asks CUDA (the loader's
    ``pin_memory`` does); once CUDA is initialised the variable no longer counts (before: it was set after
    the loaders, i.e. too late)."""
    from tests.test_train import DEMO_CFG
    from tools import vis_rank

    class FirstCudaQuery(Exception):
        pass

    seen = []

    def query(*args, **kwargs):
        seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
        raise FirstCudaQuery

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # so that teardown restores "unset"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for name in ("is_available", "device_count", "current_device", "init"):
        monkeypatch.setattr(torch.cuda, name, query)
    weight = tmp_path / "transformer_1.pth"
    weight.write_bytes(b"")
    with pytest.raises(FirstCudaQuery):
        vis_rank.main(["--config_file", DEMO_CFG, "MODEL.DEVICE", "cuda", "MODEL.DEVICE_ID", "'3'", "DATASETS.ROOT_DIR",
                       synthetic_root, "TEST.WEIGHT", str(weight), "OUTPUT_DIR", str(tmp_path), "INPUT.SIZE_TEST",
                       "[64, 32]", "DATALOADER.NUM_WORKERS", "0"])
    assert seen == ["3"]
