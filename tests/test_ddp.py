"""DistributedDataParallel on the CPU with gloo: ``torchrun --nproc_per_node 2 train.py``, and two
``torchrun`` "nodes" of one process each joined by a c10d rendezvous on 127.0.0.1.

A driver runs ``train.py``'s ``main`` unchanged, with one extra hook (added by wrapping
``train.build_trainer``) that saves every rank's final weights, so the tests can check that the ranks
stayed in lockstep. In the one-node run a NaN loss on rank 1 at one step must be skipped by both ranks
(a rank that went on to backward() would wait forever for the other's gradients), and the run evaluates
at its last epoch, i.e. the gathered evaluation runs too.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.test_train import DEMO_CFG, REPO, tiny_cfg

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo"}

DRIVER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    import torch
    import train
    from processor.checkpointer import unwrap
    from processor.trainer import HookBase
    from utils import comm

    class SaveRankWeights(HookBase):
        def __init__(self, folder):
            self.path = os.path.join(folder, f"rank{{comm.get_rank()}}.pth")

        def after_train(self):
            torch.save(unwrap(self.trainer.model).state_dict(), self.path)

    def build_trainer(cfg, resume=None):
        trainer = build(cfg, resume)
        trainer.register_hooks([SaveRankWeights(cfg.OUTPUT_DIR)])
        if comm.get_rank() == {poison_rank}:  # a NaN loss on this rank only (-1: none), at its second step
            loss_fn, calls = trainer.loss_fn, []

            def poisoned(outputs, labels):
                terms = loss_fn(outputs, labels)
                calls.append(1)
                if len(calls) == 2:
                    terms[{poison_term!r}] = terms[{poison_term!r}] * float("nan")
                return terms

            trainer.loss_fn = poisoned
        return trainer

    build, train.build_trainer = train.build_trainer, build_trainer
    train.run_main(train.main)
""")


@pytest.mark.slow
def test_torchrun_two_ranks_train_in_lockstep_and_gather_the_evaluation(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=REPO, poison_rank=1, poison_term="mimic"))
    opts = ["MODEL.DEVICE", "cpu", "DATASETS.ROOT_DIR", synthetic_root, "OUTPUT_DIR", str(out),
            "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]",
            "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCHS", "2", "SOLVER.WARMUP_EPOCHS", "1",
            "SOLVER.EVAL_PERIOD", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.LOG_PERIOD", "1",
            "TEST.IMS_PER_BATCH", "64", "TEST.PER_PART", "True"]
    env = ENV
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(driver), "--config_file", DEMO_CFG, *opts],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    w0 = torch.load(out / "rank0.pth", weights_only=True)
    w1 = torch.load(out / "rank1.pth", weights_only=True)
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "the ranks' weights diverged"
    ckpt = torch.load(out / "transformer_2.pth", weights_only=True)
    assert all(torch.equal(ckpt[k], w0[k]) for k in w0)
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 2

    log = (out / "train_log.txt").read_text()
    assert "(2 process(es))" in log
    assert "iter 2: non-finite loss (on another rank); step skipped" in log
    # Rank 1 logs to its own file, never to the console.
    assert "iter 2: non-finite loss (mimic); step skipped" in (out / "train_log.txt.rank1").read_text()
    assert "Validation results - epoch 2" in r.stdout

    # The gathered evaluation equals a single-process evaluation of the same weights: shards came
    # back complete and in order.
    from datasets import make_dataloader
    from model import make_model
    from processor.inference import evaluate, results_to_json

    val = json.loads((out / "val_results.json").read_text())["2"]["ALL"]
    cfg = tiny_cfg(synthetic_root, str(tmp_path / "single"), "TEST.PER_PART", "True")
    _, val_loader, num_query, num_classes, cams, views = make_dataloader(cfg)
    model = make_model(cfg, num_classes, cams, views)
    model.load_state_dict(w0)
    single = results_to_json(evaluate(cfg, model, val_loader, num_query, "cpu"))["ALL"]
    assert single["num_valid"] == val["num_valid"]
    assert abs(single["mAP"] - val["mAP"]) < 1e-5 and abs(single["rank1"] - val["rank1"]) < 1e-5
    assert list(val["per_part"]) == ["global", "head", "arm", "torso", "leg", "feet"]
    for name, part in val["per_part"].items():  # per-part metrics of the gathered evaluation too
        assert part["num_valid"] == single["per_part"][name]["num_valid"]
        assert abs(part["mAP"] - single["per_part"][name]["mAP"]) < 1e-5, name


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_with_c10d_rendezvous_end_with_the_same_weights(synthetic_root, tmp_path):
    """Two launchers on localhost, as two machines would run them: same code, config and data paths, a
    c10d rendezvous at node 0's address, each node its own OUTPUT_DIR (no shared storage needed)."""
    driver = tmp_path / "driver.py"
    # no NaN: only the weights are saved
    driver.write_text(DRIVER.format(repo=REPO, poison_rank=-1, poison_term="mimic"))
    endpoint = f"127.0.0.1:{free_port()}"
    procs, outs = [], []
    for node in range(2):
        out = tmp_path / f"node{node}"
        outs.append(out)
        opts = ["MODEL.DEVICE", "cpu", "DATASETS.ROOT_DIR", synthetic_root, "OUTPUT_DIR", str(out),
                "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
                "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1",
                "SOLVER.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.LOG_PERIOD", "1"]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(node), "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
               "--rdzv_id", "tsd_test", "--rdzv_conf", "join_timeout=120", "--max_restarts", "0",
               str(driver), "--config_file", DEMO_CFG, *opts]
        # Own session: a hung run is killed with all its workers.
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                      env=ENV, start_new_session=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for p, text in zip(procs, logs):
        assert p.returncode == 0, text[-3000:]

    weights = {f.name: torch.load(f, weights_only=True) for out in outs for f in out.glob("rank*.pth")}
    assert set(weights) == {"rank0.pth", "rank1.pth"}
    w0, w1 = weights["rank0.pth"], weights["rank1.pth"]
    assert w0.keys() == w1.keys()
    # Every parameter agrees bitwise. BatchNorm running statistics are each rank's own after the last
    # step (DDP copies rank 0's at the start of each forward; checkpoints hold rank 0's).
    running = ("running_mean", "running_var")
    diverged = [k for k in w0 if not k.endswith(running) and not torch.equal(w0[k], w1[k])]
    assert not diverged, f"the nodes' weights diverged: {diverged}"
    main_out = next(out for out in outs if (out / "rank0.pth").exists())
    assert "gloo backend, rank 0 of 2" in (main_out / "train_log.txt").read_text()
    ckpt = torch.load(main_out / "transformer_1.pth", weights_only=True)
    assert all(torch.equal(ckpt[k], w0[k]) for k in w0)


@pytest.mark.slow
def test_ddp_static_graph_with_compile_matches_find_unused_parameters(synthetic_root, tmp_path):
    """SOLVER.DDP_STATIC_GRAPH (DDP learns the never-used parameters in the first step instead of searching
    the graph after every forward) together with SOLVER.COMPILE on 2 gloo ranks: the ranks stay in lockstep
    through a step skipped for rank 1's NaN loss, and end where find_unused_parameters ends up to float
    rounding (not bitwise: from the second step on the gradients differ in the last bits, hence the switch
    is off by default). The ViT baseline at 64x32 keeps inductor's build short (the second
    run reuses its cache)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=REPO, poison_rank=1, poison_term="tri_global"))
    weights = {}
    for static in (True, False):
        out = tmp_path / f"static_{static}"
        opts = ["MODEL.DEVICE", "cpu", "MODEL.ARCH", "vit", "DATASETS.ROOT_DIR", synthetic_root, "OUTPUT_DIR", str(out),
                "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
                "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "1",
                "SOLVER.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.LOG_PERIOD", "1",
                "SOLVER.COMPILE", "True", "SOLVER.DDP_STATIC_GRAPH", str(static)]
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            str(driver), "--config_file", DEMO_CFG, *opts],
                           capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        log = (out / "train_log.txt").read_text()
        assert "compiled (default)" in log and "iter 2: non-finite loss (on another rank); step skipped" in log
        w0, w1 = (torch.load(out / f"rank{k}.pth", weights_only=True) for k in (0, 1))
        # BatchNorm running statistics are each rank's own after the last step (no evaluation here)
        diverged = [k for k in w0 if not k.endswith(("running_mean", "running_var")) and not torch.equal(w0[k], w1[k])]
        assert not diverged, f"the ranks' weights diverged: {diverged}"
        weights[static] = w0
    # AdamW turns the rounding noise of ~zero gradients (the attention's key biases) into full-size steps, so
    # single tiny tensors differ relatively much; the whole model agrees to ~1e-8.
    a, b = (torch.cat([w[k].flatten().double() for k in sorted(w) if w[k].is_floating_point()])
            for w in (weights[True], weights[False]))
    assert (a - b).norm() <= 1e-6 * b.norm(), float((a - b).norm() / b.norm())
