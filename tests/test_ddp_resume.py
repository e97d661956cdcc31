"""A 2-process DDP run killed with ``kill -9`` and resumed ends bit for bit where an uninterrupted run ends.

Each rank has its own random streams (the model's teacher noise is seeded with ``SOLVER.SEED + rank``);
``last.pth`` stores every rank's RNG state and each rank restores its own. Both runs go through the real
``torchrun ... train.py`` on the CPU (gloo); the victim runs ``train.py``'s ``main`` through a driver that
holds rank 0 after the first step of epoch 2 (an epoch lasts well under a second), and its whole process
group is then killed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tests.test_train import DEMO_CFG, REPO

EPOCHS = 2
DRIVER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r})
    import train
    from processor.trainer import HookBase
    from utils import comm

    class HoldAfterFirstStepOfEpoch2(HookBase):
        def after_step(self):
            if self.trainer.epoch == 2 and self.trainer.iter == 0 and comm.get_rank() == 0:
                open({ready!r}, "w").close()
                time.sleep(600)  # rank 1 waits in its next all-reduce

    def build_trainer(cfg, resume=None):
        with open({ready!r} + f".rank{{comm.get_rank()}}.pid", "w") as f:  # torchrun starts ranks in own sessions
            f.write(str(os.getpid()))
        trainer = build(cfg, resume)
        trainer.register_hooks([HoldAfterFirstStepOfEpoch2()])
        return trainer

    build, train.build_trainer = train.build_trainer, build_trainer
    train.run_main(train.main)
""")


def torchrun(out: str, root: str, *extra: str, script: str = os.path.join(REPO, "train.py")) -> list[str]:
    """``torchrun --nproc_per_node 2 script`` on the tiny config: 2 ranks x (2 ids x 2 images) per step."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            script, "--config_file", DEMO_CFG, *extra, "MODEL.DEVICE", "cpu",
            "DATASETS.ROOT_DIR", root, "OUTPUT_DIR", out, "DATALOADER.NUM_WORKERS", "0",
            "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]", "SOLVER.IMS_PER_BATCH", "8",
            "DATALOADER.NUM_INSTANCE", "2",
            "SOLVER.MAX_EPOCHS", str(EPOCHS), "SOLVER.WARMUP_EPOCHS", "1", "SOLVER.EVAL_PERIOD", "0",
            "SOLVER.CHECKPOINT_PERIOD", str(EPOCHS), "SOLVER.LOG_PERIOD", "1"]


@pytest.mark.slow
def test_ddp_kill_9_then_resume_matches_an_uninterrupted_run(synthetic_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo"}
    straight_dir, killed_dir = str(tmp_path / "straight"), str(tmp_path / "killed")
    straight = subprocess.Popen(torchrun(straight_dir, synthetic_root), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready = tmp_path / "held"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=REPO, ready=str(ready)))
    victim = subprocess.Popen(torchrun(killed_dir, synthetic_root, script=str(driver)), cwd=REPO, env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ready.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    for rank in range(2):  # both ranks and torchrun, like a lost node
        pid_file = tmp_path / f"held.rank{rank}.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    os.killpg(victim.pid, signal.SIGKILL)
    _, err = victim.communicate(timeout=60)
    assert ready.exists() and victim.returncode == -signal.SIGKILL, err[-3000:]
    state = torch.load(os.path.join(killed_dir, "last.pth"), weights_only=True)
    assert state["epoch"] == 1 and len(state["rng_per_rank"]) == 2
    assert not torch.equal(state["rng_per_rank"][0]["torch"], state["rng_per_rank"][1]["torch"])

    resumed = subprocess.run(torchrun(killed_dir, synthetic_root, "--resume"), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resumed from {killed_dir}/last.pth (epoch 1)" in resumed.stdout
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-3000:]

    name = f"transformer_{EPOCHS}.pth"
    a = torch.load(os.path.join(straight_dir, name), weights_only=True)
    b = torch.load(os.path.join(killed_dir, name), weights_only=True)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ: {differ[:5]}"
    sa = torch.load(os.path.join(straight_dir, "last.pth"), weights_only=True)
    sb = torch.load(os.path.join(killed_dir, "last.pth"), weights_only=True)
    opt_a, opt_b = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    assert all(torch.equal(torch.as_tensor(opt_a[i][k]), torch.as_tensor(opt_b[i][k])) for i in opt_a for k in opt_a[i])
    # Every rank's random streams continued exactly as in the uninterrupted run.
    for ra, rb in zip(sa["rng_per_rank"], sb["rng_per_rank"]):
        assert torch.equal(ra["torch"], rb["torch"]) and ra["python"] == rb["python"]
