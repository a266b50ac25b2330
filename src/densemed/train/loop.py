"""The training loop: recipe in, run folder out.

``train(cfg)`` builds the recipe's task (:mod:`densemed.tasks`), loads the data through it, builds
the network, loss and augmentation (:mod:`densemed.build`) and lets the task choose the training
module that owns networks, optimisers and the step (:mod:`densemed.train.module`). The loop itself
only draws batches, augments them and calls ``module.train_step``; everything that varies by task
(inputs, loss call, validation, after-fit work) is the task's.

Each epoch appends one line to ``metrics.jsonl`` (train loss and per-head terms, validation record,
learning rate, steps, seconds), rewrites ``curves.png`` and writes ``last.pt`` (and ``best.pt`` when
the validation score improves) atomically.

Time budget (``train.time_budget_s``): the budget counts training steps and the periodic
validations, and is checked **between optimiser steps**: the run stops within one step of it. The
epoch in which it stops is then validated once more (the *final validation*, reported separately
and not counted in the budget) so ``best.pt`` reflects the end of training. The learning-rate
schedule runs per step over a length fixed from the measured speed and stored in the checkpoint
(:mod:`densemed.train.schedule`), so a budgeted run ends at the end of its schedule. Resuming a
run whose budget is spent stops at once with one line; raising the budget continues, the schedule
stretched to the new budget (the learning rate continues from the cosine at the new progress).

Reproducibility: every step reseeds torch's generator (dropout) and the augmentation generator
from ``(seed, epoch, step)``; the patch sampler and the data order from ``(seed, epoch)``. So
``--resume`` continues exactly as the uninterrupted run would, from an epoch boundary or from the
step where a budget stopped it. A non-finite loss stops the run with an error; ``last.pt`` then
still holds the last completed epoch.

Several processes (``torchrun --nproc_per_node N -m densemed train RECIPE``, or ``densemed train
RECIPE --nproc N``; :mod:`densemed.train.distributed`): every rank builds the same network from the
same seed; the training module averages gradients over ranks (DDP). The split rule
(:func:`rank_samples`): with ``b = data.batch_size``, ``A = train.accumulate`` and ``W`` processes,
one optimiser step consumes a global batch of ``G = W A b`` samples, entries ``[kG, (k+1)G)`` of the
epoch's permutation (seeded by ``(seed, epoch)``), rank ``r`` taking the ``A b`` entries from
``kG + rAb``; sample ``i`` is the patch drawn by ``default_rng([seed, epoch, i])``. So every step
sees the same patches whatever ``W`` and ``A`` are as long as ``G`` is the same, and 2 processes with
batch ``b`` train exactly as 1 process with batch ``2b`` (to float rounding) for a loss that is a
mean over samples, without augmentation or dropout (their draws are seeded per rank, by ``(seed,
epoch, step, rank)``) and with ``train.sync_batchnorm`` when the network has batch norm (tested).

Only rank 0 writes the run folder (config, metrics, curves, checkpoints), prints and shows the
progress bar; it alone decides when the time budget or the schedule ends (its decision and the
schedule length fixed from its clock are broadcast after every step, so all ranks stop at the
same step). Validation runs on rank 0 while the others wait: a task's validation returns scores
that are already means (Dice of whole images, PSNR), which could not be reduced over ranks
without changing the task protocol, validation sets are small next to training, and its time is
counted in the budget either way. Resume: a checkpoint holds no trace of the world size, so a run
written by N processes resumes with M (weights, optimiser, schedule and step carry over); the data
order continues exactly when the global batch ``G`` is kept (e.g. half the processes with
``train.accumulate`` doubled) and differs otherwise. ``--resume`` of a killed run continues from its
``last.pt``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from densemed import __version__, config, tasks
from densemed.build import build_augment, build_loss, build_model, resolve_device
from densemed.checkpoint import load as load_checkpoint
from densemed.checkpoint import load_state, save_atomic
from densemed.config import Config
from densemed.data.dataset import PatchDataset, fixed_patches, load_cases
from densemed.errors import DensemedError
from densemed.train import distributed, lock
from densemed.train.schedule import budget_steps

CHECKPOINT_FORMAT = 2
#: steps of the first epoch after which a budgeted run first fixes its schedule length
EARLY_ESTIMATE_STEPS = 5


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def rank_samples(n: int, steps: int, per_rank: int, world: int, rank: int, seed: int, epoch: int,
                 start_step: int = 0) -> list[int]:
    """Dataset indices of ``rank`` for steps ``start_step .. steps - 1`` of one epoch (the split rule).

    The epoch's order is a permutation of the ``n`` samples seeded by ``(seed, epoch)``, followed by
    further permutations when one epoch holds fewer samples than its steps need; step ``k`` takes the
    global batch ``order[k G : (k + 1) G]`` with ``G = world * per_rank`` and rank ``r`` its entries
    ``[r per_rank, (r + 1) per_rank)``. The union over ranks depends only on ``G``.

    Example:
        >>> print(rank_samples(8, 2, 2, 2, 1, seed=0, epoch=0) == rank_samples(8, 2, 4, 1, 0, 0, 0)[2:4] + \
        ...       rank_samples(8, 2, 4, 1, 0, 0, 0)[6:8])
        True
    """
    g = world * per_rank
    gen = torch.Generator().manual_seed(_seed(seed, epoch, 1))
    order = torch.randperm(n, generator=gen)
    while len(order) < steps * g:
        order = torch.cat([order, torch.randperm(n, generator=gen)])
    out: list[int] = []
    for k in range(start_step, steps):
        lo = k * g + rank * per_rank
        out += order[lo : lo + per_rank].tolist()
    return out


@dataclass
class RunResult:
    """What a finished run reports."""

    out: Path
    epochs: int
    best: float
    history: list[dict[str, Any]]
    train_seconds: float = 0.0
    val_seconds: float = 0.0
    final_val_seconds: float = 0.0

    def summary(self) -> str:
        """The one line ``densemed train`` (and ``synth train``) prints at the end of a run."""
        best = f"{self.best:.4f}" if self.best > float("-inf") else "none (no validation images)"
        return (f"run: {self.out}  epochs: {self.epochs}  best val score: {best}  "
                f"(training {self.train_seconds:.0f} s, validation {self.val_seconds:.0f} s, "
                f"final validation {self.final_val_seconds:.0f} s)")


class Trainer:
    """Holds the pieces of one run; :meth:`fit` runs the epochs.

    Args:
        cfg: the recipe.
        resume: continue the run in ``cfg.train.out`` from its ``last.pt``.
        log: where progress lines go.
        clock: seconds counter for the time budget (tests pass a fake one).
    """

    def __init__(
        self, cfg: Config, resume: bool = False, log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.cfg, self.log, self.clock = cfg, log, clock
        t = cfg.train
        self.out = Path(t.out)
        if int(t.accumulate) < 1:
            raise DensemedError(f"train.accumulate: must be a positive number of batches, got {t.accumulate}")
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = distributed.init(resolve_device(t.device))
        self.rank, self.world = distributed.rank(), distributed.world()
        self.is_main = self.rank == 0
        if not self.is_main:  # rank 0 alone prints
            self.log = lambda line: None
        distributed.run_on_main(lambda: self._claim_out(resume))
        torch.manual_seed(t.seed)
        self.task = tasks.build(cfg)
        # rank 0 fills the preprocessed-case cache first, so the other ranks only open it
        self.train_cases, self.val_cases = distributed.main_first(lambda: load_cases(cfg, self.task))
        self.in_channels = self.train_cases[0].image.shape[0] if self.train_cases else 1
        model = build_model(cfg, self.in_channels)
        if t.sync_batchnorm and self.world > 1:
            model = distributed.convert_sync_batchnorm(model, self.device)
        model = model.to(self.device)
        self.loss_fn = build_loss(cfg).to(self.device)
        self.module = self.task.training_module(model, self.loss_fn, self.device)
        if int(t.accumulate) > 1 and not self.module.accumulates:
            raise DensemedError(f"train.accumulate: the training module of task {self.task.name!r} "
                                f"({type(self.module).__name__}) does not accumulate gradients; use 1")
        self.module.distribute()
        self.augment = build_augment(cfg)
        self.nearest = self.task.nearest_keys()
        self.dataset = PatchDataset(
            self.train_cases, cfg.data.patch_size, cfg.data.foreground_fraction, cfg.data.samples_per_epoch, t.seed
        )
        #: samples per rank and optimiser step, and per step over all ranks (the split rule: rank_samples)
        self.rank_batch = cfg.data.batch_size * int(t.accumulate)
        self.global_batch = self.rank_batch * self.world
        n = len(self.dataset)
        self.steps_per_epoch = n // self.global_batch if n > self.global_batch else 1
        self.module.set_total_steps(t.epochs * self.steps_per_epoch)
        self.val_patches = fixed_patches(self.val_cases, cfg.data.patch_size, cfg.data.val_patches_per_image)
        self.start_epoch, self.start_step, self.best, self.elapsed = 0, 0, -math.inf, 0.0
        self.history: list[dict[str, Any]] = []
        if resume:
            self._resume()
        if self.is_main:
            config.save(cfg, self.out / "config.yaml")

    def _claim_out(self, resume: bool) -> None:
        """Refuse to overwrite a run unless resuming; create the run folder (rank 0)."""
        if not resume and (self.out / "last.pt").exists():
            raise DensemedError(
                f"{self.out}: already holds a run (last.pt); resume it with --resume {self.out} "
                "or choose another train.out"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        lock.acquire(self.out, owner=self, log=self.log)  # a second run on this folder is refused

    @property
    def model(self) -> torch.nn.Module:
        """The main network of the training module."""
        return self.module.model

    # -- resume --------------------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.out / "last.pt"
        # rank 0 reads the run folder; every rank receives the same checkpoint (no shared file system needed)
        ckpt = distributed.run_on_main(lambda: load_checkpoint(path, self.device if self.world == 1 else "cpu"))
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise DensemedError(
                f"{path}: written by an older densemed (before tasks had their own recipe section); "
                "it can still predict, but not resume — start a new run"
            )
        load_state(self.model, ckpt["networks"]["model"], path, self.cfg.model["name"], ckpt.get("net"))
        try:
            self.module.load_state_dict(ckpt)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise DensemedError(f"{path}: cannot restore the training state ({exc})") from None
        old_epochs = int(ckpt["config"]["train"]["epochs"])
        if old_epochs != self.cfg.train.epochs:
            self.log(f"train.epochs changed from {old_epochs} to {self.cfg.train.epochs}: the schedule now spans "
                     f"{self.cfg.train.epochs} epochs and continues from the learning rate of the new progress")
        if self.cfg.train.time_budget_s is None:  # the schedule spans the epochs again
            self.module.set_total_steps(self.cfg.train.epochs * self.steps_per_epoch)
        self.start_step = int(ckpt.get("epoch_step", 0))
        self.start_epoch = int(ckpt["epoch"]) + (0 if self.start_step else 1)
        if self.start_step >= self.steps_per_epoch:  # a larger global batch than the run's: its epoch is done
            self.start_step, self.start_epoch = 0, self.start_epoch + 1
        self.best = float(ckpt.get("best", -math.inf))
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        old_world = int(ckpt.get("world_size", 1))
        if old_world != self.world or int(ckpt.get("global_batch", self.global_batch)) != self.global_batch:
            self.log(f"resuming a run of {old_world} process(es) (global batch {ckpt.get('global_batch', '?')}) with "
                     f"{self.world} (global batch {self.global_batch}): weights, optimiser and schedule carry over"
                     + ("" if ckpt.get("global_batch") == self.global_batch else "; the data order differs"))
        if self.is_main:
            metrics = self.out / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            records = [json.loads(x) for x in lines if x.strip()]
            last = int(ckpt["epoch"])
            self.history = [r for r in records if r["epoch"] < last or (r["epoch"] == last and not self.start_step)]
            self._write_history()
        budget = self.cfg.train.time_budget_s
        if budget is not None and self.elapsed >= budget:
            raise DensemedError(
                f"{self.out}: the time budget of {budget:g} s is used up; raise train.time_budget_s to continue"
            )
        if budget is not None:
            self._fix_schedule()
        where = f"epoch {self.start_epoch + 1}" + (f" step {self.start_step}" if self.start_step else "")
        self.log(f"resumed {self.out} at {where}")

    # -- epochs --------------------------------------------------------------------------------
    def _budget_spent(self, epoch_tic: float) -> bool:
        budget = self.cfg.train.time_budget_s
        return budget is not None and self.elapsed + (self.clock() - epoch_tic) >= budget

    def _fix_schedule(self, extra_s: float = 0.0) -> None:
        """Re-fix the schedule length from the measured seconds per step (budgeted runs only; rank 0's clock)."""
        t = self.cfg.train
        if t.time_budget_s is None or self.module.step == 0 or not self.is_main:
            return
        spent = self.elapsed + extra_s
        per_step = spent / self.module.step
        total = budget_steps(self.module.step, spent, t.time_budget_s, per_step, t.epochs * self.steps_per_epoch)
        self.module.set_total_steps(total)

    def _sync_schedule(self) -> None:
        """Rank 0's schedule length on every rank (the learning rates must agree)."""
        if self.world > 1:
            total = int(distributed.broadcast_values([self.module.total_steps])[0])
            if total != self.module.total_steps:
                self.module.set_total_steps(total)

    def _should_stop(self, tic: float) -> bool:
        """Whether the schedule or the budget ended: rank 0 decides and every rank follows (same step)."""
        stop = self.module.step >= self.module.total_steps or self._budget_spent(tic)
        if self.world == 1:
            return stop
        flag, total = distributed.broadcast_values([float(stop), float(self.module.total_steps)])
        if int(total) != self.module.total_steps:
            self.module.set_total_steps(int(total))
        return bool(flag)

    def _over_val_share(self, val_s: float, last_val_s: float, train_s: float) -> bool:
        """Whether one more validation would take periodic validation above ``train.val_share``.

        The next validation is assumed to cost ``last_val_s`` like the previous one; the share is of
        the elapsed time (budgeted runs; never before the first validation).

        Args:
            val_s: seconds of periodic validation so far in this process.
            last_val_s: seconds of the previous validation (0: none yet, so validate).
            train_s: seconds of training of the epoch that just ended (not yet in ``elapsed``).
        """
        t = self.cfg.train
        if t.time_budget_s is None or t.val_share is None or last_val_s <= 0.0:
            return False
        return val_s + last_val_s > t.val_share * (self.elapsed + train_s + last_val_s)

    def fit(self) -> RunResult:
        """Train until the epochs, the schedule or the time budget end; returns the run summary."""
        t = self.cfg.train
        val_s = final_val_s = last_val_s = 0.0
        stopped_epoch: int | None = None
        for epoch in range(self.start_epoch, t.epochs):
            start_step = self.start_step if epoch == self.start_epoch else 0
            tic = self.clock()
            record, stopped = self._train_epoch(epoch, start_step, tic)
            train_s = self.clock() - tic
            last_epoch = epoch + 1 == t.epochs
            due = not stopped and ((epoch + 1) % t.val_every == 0 or last_epoch) and self.is_main
            if due and self._over_val_share(val_s, last_val_s, train_s):
                record["skipped_validation"] = True
            elif due:
                vtic = self.clock()
                record.update(self.task.validate(self.model, self.loss_fn, self.val_cases, self.val_patches,
                                                 self.device))
                last_val_s = self.clock() - vtic
                val_s += last_val_s
            record["seconds"] = self.clock() - tic
            self.elapsed += record["seconds"]
            if stopped and self.is_main:  # the final validation: outside the budget, reported on its own
                vtic = self.clock()
                record.update(self.task.validate(self.model, self.loss_fn, self.val_cases, self.val_patches,
                                                 self.device))
                final_val_s = self.clock() - vtic
                record["final_val_seconds"] = final_val_s
            record["train_seconds"] = train_s
            score = record.get("val_score")
            # until a validation has run, best.pt follows last.pt
            improved = score > self.best if score is not None else self.best == -math.inf
            if score is not None and improved:
                self.best = float(score)
            if not stopped:
                self._fix_schedule()
            self.history.append(record)
            if self.is_main:
                self._write_history()
                self._checkpoint(epoch, record.get("steps_in_epoch", 0) if record.get("partial") else 0, improved)
            self.log(_summary(record, t.epochs))
            if stopped:
                stopped_epoch = epoch
                why = "the schedule ended" if self.module.step >= self.module.total_steps else (
                    f"time budget of {t.time_budget_s:g} s reached")
                self.log(f"{why} after {self.module.step} steps (epoch {epoch + 1}, lr {self.module.lr():.3g})")
                break
        if self.is_main:
            self._after_fit()
        train_total = sum(h.get("train_seconds", 0.0) for h in self.history)
        self.log(
            f"training {train_total:.0f} s, validation {val_s:.0f} s"
            + (f", final validation {final_val_s:.0f} s" if stopped_epoch is not None else "")
        )
        return RunResult(self.out, len(self.history), self.best, self.history, train_total, val_s, final_val_s)

    def _train_epoch(self, epoch: int, start_step: int, tic: float) -> tuple[dict[str, Any], bool]:
        """Steps of one epoch from ``start_step``; returns the record and whether the run must stop."""
        cfg, t = self.cfg, self.cfg.train
        self._sync_schedule()
        self.dataset.set_epoch(epoch)
        order = rank_samples(len(self.dataset), self.steps_per_epoch, self.rank_batch, self.world, self.rank, t.seed,
                             epoch, start_step)
        # items are seeded by their index (PatchDataset), so workers draw no duplicated randomness
        loader = DataLoader(self.dataset, batch_size=self.rank_batch, sampler=order, num_workers=cfg.data.num_workers)
        per_rank = (self.rank,) if self.world > 1 else ()  # augmentation and dropout differ between ranks
        self.module.set_epoch(epoch)
        self.module.train()
        sums: dict[str, float] = {}
        count = 0
        steps = start_step
        bar = _progress(self.steps_per_epoch, start_step, f"epoch {epoch + 1}/{t.epochs}", t.progress and self.is_main)
        stopped = False
        for batch in loader:
            torch.manual_seed(_seed(t.seed, epoch, 0, steps, *per_rank))
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            if self.augment is not None:
                gen = torch.Generator().manual_seed(_seed(t.seed, epoch, 2, steps, *per_rank))
                batch = self.augment(batch, generator=gen, nearest=self.nearest)
            try:
                rec = self.module.train_step(batch)
            except FloatingPointError as exc:
                raise DensemedError(
                    f"{self.out}: loss became {exc} at epoch {epoch + 1} step {steps + 1}; training stopped, "
                    "last.pt keeps the last completed epoch (try a lower train.lr)"
                ) from None
            steps += 1
            n = batch["image"].shape[0]
            for k, v in rec.items():
                sums[k] = sums.get(k, 0.0) + v * n
            count += n
            if bar is not None:
                self._update_bar(bar, rec, tic, steps - start_step)
            if epoch == self.start_epoch and steps - start_step == EARLY_ESTIMATE_STEPS and self.elapsed == 0:
                self._fix_schedule(self.clock() - tic)  # a first estimate before the first epoch ends
            if self._should_stop(tic):
                # the natural end (last step of the last epoch) is not a stop
                stopped = not (epoch + 1 == t.epochs and steps == self.steps_per_epoch)
                break
        if bar is not None:
            bar.close()
        if self.world > 1:  # the epoch's mean loss over every rank's samples
            sums = distributed.sum_dict({**sums, "_count": float(count)})
            count = int(sums.pop("_count"))
        record: dict[str, Any] = {
            "epoch": epoch, "train_loss": sums.get("loss", 0.0) / max(count, 1), "lr": self.module.lr(),
            "steps": self.module.step,
        }
        terms = {k[5:]: v / max(count, 1) for k, v in sums.items() if k.startswith("term_")}
        if terms:
            record["train_terms"] = terms
        if steps < self.steps_per_epoch:
            record["partial"] = True
            record["steps_in_epoch"] = steps
        return record, stopped

    def _update_bar(self, bar: Any, rec: dict[str, float], tic: float, done: int) -> None:
        t = self.cfg.train
        spent = self.elapsed + self.clock() - tic
        post = {"loss": f"{rec['loss']:.4f}", "it/s": f"{done / max(self.clock() - tic, 1e-9):.2f}"}
        if t.time_budget_s is not None:
            post["time"] = f"{spent:.0f}/{t.time_budget_s:g}s"
            post["left"] = f"{max(t.time_budget_s - spent, 0):.0f}s"
        if self.history and self.history[-1].get("val_score") is not None:
            post["val"] = f"{self.history[-1]['val_score']:.4f}"
        bar.set_postfix(post)
        bar.update(1)

    def validate(self) -> dict[str, Any]:
        """The task's validation of the current weights (``val_score`` picks ``best.pt``)."""
        return self.task.validate(self.model, self.loss_fn, self.val_cases, self.val_patches, self.device)

    # -- outputs -------------------------------------------------------------------------------
    def _checkpoint(self, epoch: int, epoch_step: int, improved: bool) -> None:
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "net": self.cfg.model["name"],
            "in_channels": self.in_channels,
            **self.module.state_dict(),
            "epoch": epoch,
            "epoch_step": epoch_step,
            "best": self.best,
            "elapsed": self.elapsed,
            "world_size": self.world,
            "global_batch": self.global_batch,
            "version": __version__,
        }
        save_atomic(ckpt, self.out / "last.pt")
        if improved or not (self.out / "best.pt").exists():
            save_atomic(ckpt, self.out / "best.pt")

    def _after_fit(self) -> None:
        """The task's after-fit work with the weights of best.pt, then of last.pt (the model ends with those).

        Recipe updates it returns (e.g. a tuned ``h``) are written into each checkpoint's ``task``.
        """
        done: dict[int, dict[str, Any]] = {}
        ctx = tasks.FitContext(self.out, self.model, self.val_cases, self.device, self.log)
        for name in ("best.pt", "last.pt"):
            path = self.out / name
            if not path.exists():
                continue
            ckpt = load_checkpoint(path, self.device)
            key = int(ckpt.get("step", ckpt["epoch"]))
            if key not in done:
                self.model.load_state_dict(ckpt["networks"]["model"])
                done[key] = self.task.after_fit(ctx)
            updates = dict(done[key])
            if not updates:
                continue
            state = updates.pop("_scores", None)
            ckpt["config"]["task"].update(updates)
            if state is not None:
                ckpt["task_state"] = state
            save_atomic(ckpt, path)

    def _write_history(self) -> None:
        from densemed.data.io import write_text_atomic

        # a full disk or a read-only folder: one line naming metrics.jsonl, the previous one kept
        write_text_atomic(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        try:
            from densemed.train.plots import plot_curves

            plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")
        except ImportError:
            pass


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, disable=None)


def _summary(rec: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {rec['epoch'] + 1}/{epochs}", f"train_loss {rec['train_loss']:.4f}"]
    for key in ("val_loss", "val_dice", "val_psnr"):
        if key in rec:
            parts.append(f"{key} {rec[key]:.4f}")
    parts.append(f"lr {rec['lr']:.3g}")
    parts.append(f"{rec['seconds']:.1f}s")
    if rec.get("partial"):
        parts.append(f"(stopped after step {rec['steps_in_epoch']})")
    return "  ".join(parts)


def train(cfg: Config, resume: bool = False, log: Callable[[str], None] = print) -> RunResult:
    """Train a recipe; with ``resume`` continue the run in ``cfg.train.out`` from ``last.pt``.

    Under torchrun every process calls this; the process group is left at the end.
    """
    finished = False
    try:
        result = Trainer(cfg, resume, log).fit()
        finished = True
        return result
    finally:
        distributed.cleanup(finished)
