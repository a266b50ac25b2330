"""``densemed train --check``: build a run as training would and take one step on a tiny batch, writing nothing.

The recipe is already validated key by key when it is loaded (:mod:`densemed.validate`); the dry
run finds what only the data and a real forward pass show: unreadable or inconsistent files, a
network that does not accept the patch size, a loss that does not fit the network's output, an
augmentation that fails on the batch, a first step whose loss is not finite. Each ends in one
:class:`~densemed.errors.DensemedError` line naming the recipe key (``model``, ``loss``,
``augment``, ``train``) or the file.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import default_collate

from densemed.checkpoint import load, load_state
from densemed.config import Config
from densemed.errors import DensemedError
from densemed.train.loop import Trainer
from densemed.train.module import SupervisedModule
from densemed.validate import guard


def dry_run(cfg: Config, resume: bool = False, log: Callable[[str], None] | None = None) -> str:
    """Build the run of ``cfg`` as training would and take one step on a tiny batch; write nothing.

    The :class:`~densemed.train.Trainer` is built in a temporary folder with the data read as for
    training (every case), ``data.batch_size`` at most 2, one sample per epoch and one validation
    patch per image; then one batch is drawn and augmented as in epoch 1, the network's forward
    pass and the loss are tried on their own (so a failure names ``model`` or ``loss``; only for
    the plain supervised step, since a task's own step completes the batch first), and one
    optimiser step is taken. With ``resume``, ``train.out/last.pt`` is also loaded into the
    training module. ``train.out`` is only read. Returns a one-line summary.
    """
    out = Path(cfg.train.out)
    if not resume and (out / "last.pt").exists():
        raise DensemedError(f"{out}: already holds a run (last.pt); resume it with --resume {out} "
                            "or choose another train.out")
    tic = time.perf_counter()
    trial = copy.deepcopy(cfg)
    bs = min(cfg.data.batch_size, 2)
    trial.data.batch_size, trial.data.samples_per_epoch = bs, bs
    trial.data.val_patches_per_image, trial.data.num_workers = 1, 0
    trial.train.epochs, trial.train.time_budget_s, trial.train.progress = 1, None, False
    tmp = Path(tempfile.mkdtemp(prefix="densemed-check-"))
    try:
        trial.train.out = str(tmp / "run")
        tr = Trainer(trial, resume=False, log=log or (lambda s: None))
        if resume:
            ckpt = load(out / "last.pt", tr.device)
            load_state(tr.model, ckpt["networks"]["model"], out / "last.pt", cfg.model["name"], ckpt.get("net"))
            try:
                tr.module.load_state_dict(ckpt)
            except (KeyError, ValueError, RuntimeError) as exc:
                raise DensemedError(f"{out / 'last.pt'}: cannot restore the training state ({exc})") from None
        tr.dataset.set_epoch(0)
        batch = default_collate([tr.dataset[i] for i in range(bs)])
        batch = {k: v.to(tr.device) for k, v in batch.items()}
        if tr.augment is not None:
            gen = torch.Generator().manual_seed(0)
            batch = guard("augment", lambda: tr.augment(batch, generator=gen, nearest=tr.nearest), str(out),
                          "augmenting the first batch failed")
        shape = "x".join(map(str, batch["image"].shape))
        model, task = tr.model, tr.task
        model.train()
        # a task's own training step (GAN, simulated measurements, derived classes) completes the batch
        # before the network sees it: only the plain supervised step can be tried in parts
        if type(tr.module).train_step is SupervisedModule.train_step:
            with torch.no_grad():
                output = guard("model", lambda: model(*task.model_args(model, batch)), str(out),
                               f"the forward pass of {cfg.model['name']!r} on a {shape} batch failed")
                guard("loss", lambda: task.compute_loss(tr.loss_fn, output, batch), str(out),
                      f"loss {cfg.loss['name']!r} on the output of {cfg.model['name']!r} failed")
        torch.manual_seed(cfg.train.seed)
        try:
            rec = tr.module.train_step(batch)
        except FloatingPointError as exc:
            raise DensemedError(f"{out}: the first training step gave a loss of {exc} (check train.lr and the data "
                                "normalisation)") from None
        except DensemedError:
            raise
        except Exception as exc:
            raise DensemedError(f"{out}: train: the first training step failed: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}"[:400]) from None
        params = sum(p.numel() for p in model.parameters())
        n_train, n_val, channels = len(tr.train_cases), len(tr.val_cases), tr.in_channels
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (f"check passed: {n_train} training and {n_val} validation case(s), {channels} input channel(s), "
            f"{cfg.model['name']} with {params:,} parameters, one step on a {shape} batch: loss {rec['loss']:.4g} "
            f"({time.perf_counter() - tic:.1f} s); nothing written to {out}")
