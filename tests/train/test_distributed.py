"""Several processes over gloo: 2 ranks equal 1 rank with the same global batch, kill and resume, rank 0 writes.

The processes are forked from the test (no second import of torch), join a gloo group on a free
local port through the variables torchrun sets, and run the real :class:`densemed.train.Trainer`.
The split rule under test (``densemed.train.loop.rank_samples``): a step's global batch of
``G = world * accumulate * batch_size`` samples is the same entries of the epoch's permutation
whatever the world size, rank ``r`` taking the ``r``-th slice; so 2 ranks with batch 2 see the
patches of 1 rank with batch 4, and with a per-sample mean loss (cross entropy), no augmentation
and synchronised batch norm they take the same optimiser steps. The runs use SGD: its step is
linear in the gradient, so float rounding (~1e-8) stays that small, where Adam's normalised first
step would turn it into differences of the learning rate's size for parameters with near-zero
gradients.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from densemed import config
from densemed.checkpoint import load, network_state
from densemed.errors import DensemedError
from densemed.train import Trainer
from densemed.train import distributed as D
from densemed.train.loop import rank_samples

BASE = [
    "data.synthetic={n: 8, size: 32, seed: 1}", "data.patch_size=[32,32]", "data.samples_per_epoch=8",
    "model={name: unet, base_width: 4, depth: 2}", "loss={name: ce}", "train.progress=false", "augment=null",
    "train.threads=1", "train.lr=0.01", "train.optimizer=sgd", "train.momentum=0.9",
]


def _cfg(out, *extra):
    return config.load(None, BASE + [f"train.out={out}", *extra])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str, extra: list[str], resume: bool, kill_at_save: int,
               record: str) -> None:
    """One rank: join the group, train, and record every write it made inside the run folder."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    run = os.path.realpath(out)
    writes: list[str] = []

    def audit(event: str, args: tuple) -> None:
        paths = []
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            if (mode and any(c in mode for c in "wax+")) or (not mode and isinstance(flags, int)
                                                                and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                paths = [args[0]]
        elif event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
            paths = [a for a in args[:2] if isinstance(a, (str, os.PathLike))]
        for p in paths:
            if os.path.realpath(os.fspath(p)).startswith(run):
                writes.append(f"{event} {p}")

    sys.addaudithook(audit)
    from densemed.train import loop

    saves = [0]
    save = loop.save_atomic

    def save_or_die(obj, path):
        if Path(path).name == "last.pt":
            saves[0] += 1
            if saves[0] == kill_at_save:  # killed while writing, as by `kill -9` or a lost node
                os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, path)

    loop.save_atomic = save_or_die
    cfg = config.load(None, BASE + [f"train.out={out}", *extra])
    loop.train(cfg, resume=resume, log=lambda s: None)
    Path(record).write_text(json.dumps(writes))


def _spawn(world: int, out: Path, extra: list[str], tmp: Path, resume: bool = False, kill_at_save: int = 0):
    ctx = multiprocessing.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, str(out), extra, resume, kill_at_save,
                                                  str(tmp / f"writes_{out.name}_{r}.json")))
             for r in range(world)]
    for p in procs:
        p.start()
    return procs


def _warm_imports() -> None:
    """Import in the parent what the ranks would each import (forked children share it): tasks, plots."""
    import matplotlib.pyplot  # noqa: F401
    import torch._dynamo  # noqa: F401  (imported by the first optimiser)

    from densemed import tasks  # noqa: F401


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return network_state(load(path))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6)


def test_rank_samples_of_two_ranks_partition_the_global_batch_of_one():
    one = rank_samples(16, 3, 4, 1, 0, seed=5, epoch=2)
    r0, r1 = (rank_samples(16, 3, 2, 2, r, seed=5, epoch=2) for r in (0, 1))
    for k in range(3):  # step k: rank 0 takes the first half of the global batch, rank 1 the second
        assert r0[2 * k : 2 * k + 2] + r1[2 * k : 2 * k + 2] == one[4 * k : 4 * k + 4]
    assert sorted(one[:12]) == sorted(set(one[:12]))  # within an epoch no sample repeats
    # resuming at step 1 skips exactly the first global batch
    assert rank_samples(16, 3, 2, 2, 1, seed=5, epoch=2, start_step=1) == r1[2:]


def test_fewer_samples_than_a_global_batch_cycle_the_permutation():
    idx = rank_samples(3, 1, 4, 2, 1, seed=0, epoch=0)
    assert len(idx) == 4 and set(idx) <= {0, 1, 2}


def test_accumulating_two_batches_of_two_equals_one_batch_of_four(tmp_path):
    # no batch norm: the micro-batches' statistics would differ from the whole batch's
    extra = ["train.epochs=1", "model.norm=null"]
    a = Trainer(_cfg(tmp_path / "a", "data.batch_size=4", *extra), log=lambda s: None).fit()
    b = Trainer(_cfg(tmp_path / "b", "data.batch_size=2", "train.accumulate=2", *extra), log=lambda s: None).fit()
    _assert_same_weights(_weights(a.out / "last.pt"), _weights(b.out / "last.pt"))
    assert a.history[-1]["steps"] == b.history[-1]["steps"] == 2
    assert b.history[0]["train_loss"] == pytest.approx(a.history[0]["train_loss"], rel=1e-5)


def test_accumulate_below_one_is_refused(tmp_path):
    with pytest.raises(DensemedError, match="train.accumulate"):
        Trainer(_cfg(tmp_path / "a", "train.accumulate=0"), log=lambda s: None)


def test_killed_two_rank_run_resumes_with_two_or_one_rank_to_the_weights_of_one_rank(tmp_path):
    """2 ranks x batch 2 (sync batch norm) killed mid-run, resumed by 2 ranks and by 1 rank x batch 4."""
    two = ["data.batch_size=2", "train.epochs=2", "train.sync_batchnorm=true"]
    run = tmp_path / "ddp"
    _warm_imports()
    procs = _spawn(2, run, two, tmp_path, kill_at_save=2)  # rank 0 dies writing the last epoch's last.pt
    procs[0].join(120)
    assert procs[0].exitcode == -signal.SIGKILL
    procs[1].kill()  # as torchrun stops the remaining workers
    procs[1].join(30)
    killed = load(run / "last.pt")
    assert (killed["epoch"], killed["step"], killed["world_size"], killed["global_batch"]) == (0, 2, 2, 4)
    shutil.copytree(run, tmp_path / "single")

    procs = _spawn(2, run, two, tmp_path, resume=True)
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    # rank 0 wrote the run folder, rank 1 nothing at all inside it
    rank0 = json.loads((tmp_path / "writes_ddp_0.json").read_text())
    rank1 = json.loads((tmp_path / "writes_ddp_1.json").read_text())
    assert any("last.pt" in w for w in rank0) and any("metrics.jsonl" in w for w in rank0)
    assert rank1 == []

    reference = Trainer(_cfg(tmp_path / "ref", "data.batch_size=4", "train.epochs=2"), log=lambda s: None).fit()
    ref = _weights(reference.out / "last.pt")
    resumed = load(run / "last.pt")
    assert (resumed["epoch"], resumed["step"]) == (1, 4)
    _assert_same_weights(network_state(resumed), ref)
    # the running statistics of the synchronised batch norm are those of the global batch
    assert any("running_mean" in k for k in ref)

    # the killed run resumed by ONE process with the same global batch: the same weights again
    logs: list[str] = []
    one = Trainer(_cfg(tmp_path / "single", "data.batch_size=4", "train.epochs=2"), resume=True, log=logs.append)
    one.fit()
    assert any("resuming a run of 2 process(es)" in line for line in logs)
    _assert_same_weights(_weights(tmp_path / "single" / "last.pt"), ref)
    ref_loss = [json.loads(x)["train_loss"] for x in (reference.out / "metrics.jsonl").read_text().splitlines()]
    ddp_loss = [json.loads(x)["train_loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(ddp_loss, ref_loss, rtol=1e-4)  # the loss is averaged over both ranks' samples


def test_a_head_without_loss_does_not_hang_two_ranks_and_matches_one_rank(tmp_path):
    """Deep supervision with the auxiliary level's weight at 0: its head's parameters never get a gradient."""
    ds = ["model={name: unet, base_width: 4, depth: 2, deep_supervision: true, ds_levels: 1}", "train.epochs=1",
          "loss={name: deep_supervision, loss: {name: ce}, weights: [1.0, 0.0]}"]
    _warm_imports()
    procs = _spawn(2, tmp_path / "ddp", ["data.batch_size=2", "train.sync_batchnorm=true", *ds], tmp_path)
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    ref = Trainer(_cfg(tmp_path / "ref", "data.batch_size=4", *ds), log=lambda s: None).fit()
    a, b = _weights(tmp_path / "ddp" / "last.pt"), _weights(ref.out / "last.pt")
    _assert_same_weights(a, b)
    start = Trainer(_cfg(tmp_path / "init", *ds), log=lambda s: None).model.state_dict()  # same seed, untrained
    assert torch.equal(a["ds_heads.0.weight"], start["ds_heads.0.weight"])  # unused: never stepped
    assert not torch.equal(a["head.weight"], start["head.weight"])


def test_sync_batchnorm_over_two_ranks_equals_batchnorm_over_the_joint_batch(tmp_path):
    ctx = multiprocessing.get_context("fork")
    port = _free_port()
    gen = torch.Generator().manual_seed(0)
    x, probe = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    ref = torch.nn.BatchNorm2d(3)
    ref.weight.data.uniform_(0.5, 1.5)
    xr = x.clone().requires_grad_(True)
    (ref(xr) * probe).sum().backward()  # a loss whose gradient does not vanish (sum of y^2 would be constant)

    def rank_main(r: int) -> None:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE="2",
                          LOCAL_RANK=str(r))
        D.init(torch.device("cpu"))
        bn = D.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), torch.device("cpu"))[0]
        bn.weight.data.copy_(ref.weight.data)
        xi = x[2 * r : 2 * r + 2].clone().requires_grad_(True)
        (bn(xi) * probe[2 * r : 2 * r + 2]).sum().backward()
        D.average_gradients(bn.parameters())  # DDP would average; the reference summed over the joint batch
        torch.save({"grad_x": xi.grad, "grad_w": bn.weight.grad * 2, "mean": bn.running_mean,
                    "var": bn.running_var}, tmp_path / f"bn{r}.pt")
        D.cleanup()

    procs = [ctx.Process(target=rank_main, args=(r,)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    got = [torch.load(tmp_path / f"bn{r}.pt") for r in range(2)]
    # batch norm's input gradient cancels terms of the gradient's size: tolerance relative to that size
    scale = float(xr.grad.abs().max())
    torch.testing.assert_close(torch.cat([g["grad_x"] for g in got]), xr.grad, rtol=1e-5, atol=1e-5 * scale)
    for g in got:
        torch.testing.assert_close(g["grad_w"], ref.weight.grad, rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(g["mean"], ref.running_mean)
        torch.testing.assert_close(g["var"], ref.running_var)


def test_a_module_without_ddp_averages_its_gradients_in_the_optimiser_step(tmp_path):
    """A GAN-like module calling bare networks: 2 ranks step like 1 rank on the joint batch."""
    from densemed.config import TrainConfig
    from densemed.train.module import TrainingModule

    class Plain(TrainingModule):  # uses_ddp is False: backward_step all-reduces
        def __init__(self):
            torch.manual_seed(3)
            super().__init__({"model": torch.nn.Linear(3, 2)}, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.5,
                                                                              scheduler="none"), torch.device("cpu"))
            self.add_optimizer("model", torch.optim.SGD(self.model.parameters(), lr=0.1))

        def train_step(self, batch):
            self.backward_step("model", self.model(batch["image"]).square().mean(), self.model.parameters())
            return {}

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    ref = Plain()
    ref.train_step({"image": x})
    port = _free_port()

    def rank_main(r: int) -> None:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE="2",
                          LOCAL_RANK=str(r))
        D.init(torch.device("cpu"))
        m = Plain()
        m.distribute()
        assert m.wrapped == {}
        m.train_step({"image": x[2 * r : 2 * r + 2]})
        torch.save(m.model.state_dict(), tmp_path / f"plain{r}.pt")
        D.cleanup()

    procs = [multiprocessing.get_context("fork").Process(target=rank_main, args=(r,)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    for r in range(2):
        _assert_same_weights(torch.load(tmp_path / f"plain{r}.pt"), ref.model.state_dict())


def test_leaving_after_a_finished_run_waits_for_the_slower_rank_and_after_a_failure_does_not(tmp_path):
    """A rank that leaves while its peer still writes the run folder aborted at interpreter exit
    (gloo work freed without the GIL; the torchrun test failed 2 runs in 24): a finished rank
    waits in ``cleanup`` until every rank is there; after a failure it leaves at once."""
    import time

    def rank_main(r: int, finished: bool) -> None:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r), WORLD_SIZE="2",
                          LOCAL_RANK=str(r), DENSEMED_DIST_TIMEOUT_S="60")
        D.init(torch.device("cpu"))
        D.barrier()
        if r == 0:
            time.sleep(1.5)  # rank 0 still writing checkpoints and predictions
        start = time.perf_counter()
        D.cleanup(finished)
        (tmp_path / f"left{r}_{finished}").write_text(f"{time.perf_counter() - start:.3f}")

    for finished in (True, False):
        port = _free_port()
        procs = [multiprocessing.get_context("fork").Process(target=rank_main, args=(r, finished)) for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0]
    waited = float((tmp_path / "left1_True").read_text())
    assert waited > 1.0, waited
    assert float((tmp_path / "left1_False").read_text()) < 1.0


def test_one_process_helpers_are_no_ops():
    assert (D.rank(), D.world(), D.is_main(), D.is_distributed()) == (0, 1, True, False)
    assert D.broadcast_values([1.5, 2]) == [1.5, 2.0] and D.sum_dict({"a": 2.0}) == {"a": 2.0}
    assert D.shard([1, 2, 3]) == [1, 2, 3]
    assert D.run_on_main(lambda: 7) == 7 and D.main_first(lambda: 8) == 8
    assert D.main_only(lambda: 9)() == 9


def test_nproc_launches_torchrun_with_the_same_train_arguments(monkeypatch):
    from densemed import cli

    calls = []
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr("subprocess.call", lambda cmd: calls.append(cmd) or 0)
    assert cli.main(["train", "r.yaml", "--nproc", "2", "--set", "train.epochs=1", "--device", "cpu"]) == 0
    cmd = calls[0]
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert cmd[6:] == ["densemed", "train", "r.yaml", "--set", "train.epochs=1", "--device", "cpu"]


@pytest.mark.slow
def test_densemed_train_nproc_two_runs_under_torchrun(tmp_path):
    """End to end: the console command starts torchrun, two gloo ranks train, rank 0 reports once."""
    import subprocess

    out = tmp_path / "run"
    sets = [s for s in BASE if not s.startswith("train.threads")] + ["data.batch_size=2", "train.epochs=1",
                                                                       f"train.out={out}", "train.threads=1"]
    env = {**os.environ, "DENSEMED_DIST_TIMEOUT_S": "120"}
    proc = subprocess.run([sys.executable, "-m", "densemed", "train", "--nproc", "2", "--set", *sets],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run: ") == 1
    ckpt = load(out / "last.pt")
    assert (ckpt["world_size"], ckpt["global_batch"], ckpt["step"]) == (2, 4, 2)
