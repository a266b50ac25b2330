"""The training loop: recipe in, run folder out.

``train(cfg)`` loads the data, builds the network, loss and augmentation named in the recipe and
runs epochs of random patches. Each epoch appends one line to ``metrics.jsonl`` (train loss,
validation loss, validation Dice per class and mean, lr, seconds), rewrites ``curves.png`` and
writes ``last.pt`` (and ``best.pt`` when the validation score improves) atomically.

Reproducibility: epoch ``e`` reseeds every source of randomness from ``(seed, e)`` — the patch
sampler, the data order, the augmentation generator and torch's global generator (dropout) —
so ``--resume`` from ``last.pt`` of epoch ``e`` continues exactly as the uninterrupted run would.
A non-finite loss stops the run with an error; ``last.pt`` then still holds the last completed
epoch.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from densemed import __version__, config, nets
from densemed.config import Config
from densemed.data.dataset import PatchDataset, fixed_patches, load_cases
from densemed.errors import DensemedError
from densemed.train.checkpoint import load as load_checkpoint
from densemed.train.checkpoint import load_state, save_atomic
from densemed.typing import Batch, NetOutput


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise DensemedError(f"train.device: unknown device {spec!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DensemedError(f"train.device: {spec!r} requested but no CUDA device is available")
    return dev


def build_model(cfg: Config, in_channels: int | None = None) -> nn.Module:
    """The recipe's network, with ``in_channels``/``out_channels``/``dims`` filled from the data."""
    params = dict(cfg.model)
    name = params.pop("name")
    entry = nets.info(name)
    if cfg.data.dims not in entry.dims:
        raise DensemedError(
            f"model.name: {name!r} supports {entry.dims}D data, the recipe has data.dims={cfg.data.dims}"
        )
    sig = inspect.signature(entry.builder).parameters
    params.setdefault("in_channels", in_channels or cfg.data.in_channels or 1)
    if cfg.task == "segmentation" and "out_channels" in sig:
        params.setdefault("out_channels", cfg.data.num_classes)
    if "dims" in sig:
        params.setdefault("dims", cfg.data.dims)
    try:
        return nets.build(name, **params)
    except (TypeError, ValueError) as exc:
        raise DensemedError(f"model: cannot build {name!r}: {exc}") from None


def build_loss(cfg: Config) -> nn.Module:
    """The recipe's loss module."""
    from densemed import losses

    params = dict(cfg.loss)
    name = params.pop("name")
    try:
        return losses.build(name, **params)
    except (TypeError, ValueError) as exc:
        raise DensemedError(f"loss: cannot build {name!r}: {exc}") from None


def build_augment(cfg: Config) -> Callable[..., Batch] | None:
    """The recipe's batch augmentation, or None when ``augment`` is null."""
    if cfg.augment is None:
        return None
    from densemed import augment

    try:
        return augment.build(cfg.augment)
    except (TypeError, ValueError, KeyError) as exc:
        raise DensemedError(f"augment: {exc}") from None


def compute_loss(loss_fn: nn.Module, out: NetOutput, batch: Batch, task: str) -> torch.Tensor:
    """Call the loss the way it asks: the whole batch, or ``(output, target, weights=...)``."""
    if getattr(loss_fn, "takes_batch", False):
        return loss_fn(out, batch)
    if task == "sr":
        return loss_fn(out, batch["target"])
    weights = batch.get("weights")
    return loss_fn(out, batch["label"], weights=weights) if weights is not None else loss_fn(out, batch["label"])


def _seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


@dataclass
class RunResult:
    """What a finished run reports."""

    out: Path
    epochs: int
    best: float
    history: list[dict[str, Any]]


class Trainer:
    """Holds the pieces of one run; :meth:`fit` runs the epochs."""

    def __init__(self, cfg: Config, resume: bool = False, log: Callable[[str], None] = print) -> None:
        self.cfg, self.log = cfg, log
        t = cfg.train
        self.out = Path(t.out)
        if not resume and (self.out / "last.pt").exists():
            raise DensemedError(
                f"{self.out}: already holds a run (last.pt); resume it with --resume {self.out} "
                "or choose another train.out"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        torch.manual_seed(t.seed)
        self.train_cases, self.val_cases = load_cases(cfg)
        self.in_channels = self.train_cases[0].image.shape[0] if self.train_cases else 1
        self.model = build_model(cfg, self.in_channels).to(self.device)
        self.loss_fn = build_loss(cfg).to(self.device)
        self.augment = build_augment(cfg)
        self.opt = self._optimizer()
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.dataset = PatchDataset(
            self.train_cases, cfg.data.patch_size, cfg.data.foreground_fraction, cfg.data.samples_per_epoch, t.seed
        )
        self.val_patches = fixed_patches(self.val_cases, cfg.data.patch_size, cfg.data.val_patches_per_image)
        self.start_epoch, self.best = 0, -math.inf
        self.history: list[dict[str, Any]] = []
        if resume:
            self._resume()
        config.save(cfg, self.out / "config.yaml")

    # -- set-up --------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        if t.optimizer == "adam":
            return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
        if t.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        if t.optimizer == "sgd":
            return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True)
        raise DensemedError(f"train.optimizer: unknown optimizer {t.optimizer!r} (use adam, adamw or sgd)")

    def _lr_factor(self, epoch: int) -> float:
        t = self.cfg.train
        frac = min(epoch / max(t.epochs, 1), 1.0)
        if t.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * frac))
        if t.scheduler == "poly":  # nnU-Net's (1 - e/E)^0.9
            return (1 - frac) ** 0.9
        if t.scheduler == "none":
            return 1.0
        raise DensemedError(f"train.scheduler: unknown scheduler {t.scheduler!r} (use cosine, poly or none)")

    def _resume(self) -> None:
        path = self.out / "last.pt"
        ckpt = load_checkpoint(path, self.device)
        load_state(self.model, ckpt["model"], path, self.cfg.model["name"], ckpt.get("net"))
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.best = float(ckpt.get("best", -math.inf))
        lines = (self.out / "metrics.jsonl").read_text().splitlines() if (self.out / "metrics.jsonl").exists() else []
        self.history = [json.loads(x) for x in lines if x.strip() and json.loads(x)["epoch"] < self.start_epoch]
        self._write_history()
        self.log(f"resumed {self.out} at epoch {self.start_epoch}")

    # -- epochs --------------------------------------------------------------------------
    def fit(self) -> RunResult:
        """Train until ``train.epochs`` or ``train.time_budget_s``; returns the run summary."""
        t = self.cfg.train
        start = time.perf_counter()
        spent = sum(h.get("seconds", 0.0) for h in self.history)
        for epoch in range(self.start_epoch, t.epochs):
            tic = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": self.opt.param_groups[0]["lr"]}
            if (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs:
                record.update(self.validate())
            self.sched.step()
            record["seconds"] = time.perf_counter() - tic
            score = record.get("val_score")
            # until a validation has run, best.pt follows last.pt
            improved = score > self.best if score is not None else self.best == -math.inf
            if score is not None and improved:
                self.best = float(score)
            self.history.append(record)
            self._write_history()
            self._checkpoint(epoch, improved)
            self.log(_summary(record, t.epochs))
            if t.time_budget_s is not None and spent + time.perf_counter() - start >= t.time_budget_s:
                self.log(f"time budget of {t.time_budget_s:g} s reached after epoch {epoch + 1}")
                break
        self._tune_instances()
        return RunResult(self.out, len(self.history), self.best, self.history)

    def _train_epoch(self, epoch: int) -> float:
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(_seed(t.seed, epoch, 0))
        self.dataset.set_epoch(epoch)
        order = torch.Generator().manual_seed(_seed(t.seed, epoch, 1))
        aug_gen = torch.Generator().manual_seed(_seed(t.seed, epoch, 2))
        loader = DataLoader(
            self.dataset, batch_size=cfg.data.batch_size, shuffle=True, generator=order,
            num_workers=cfg.data.num_workers, drop_last=len(self.dataset) > cfg.data.batch_size,
        )
        if hasattr(self.loss_fn, "set_epoch"):
            self.loss_fn.set_epoch(epoch)
        self.model.train()
        total, count = 0.0, 0
        bar = _progress(len(loader), f"epoch {epoch + 1}/{t.epochs}", t.progress)
        tic = time.perf_counter()
        for step, batch in enumerate(loader):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            if self.augment is not None:
                batch = self.augment(batch, generator=aug_gen)
            with torch.autocast(
                self.device.type, enabled=t.amp, dtype=torch.bfloat16 if self.device.type == "cpu" else torch.float16
            ):
                out = self.model(batch["image"])
                loss = compute_loss(self.loss_fn, out, batch, cfg.task)
            if not torch.isfinite(loss):
                raise DensemedError(
                    f"{self.out}: loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; training stopped, "
                    f"last.pt keeps the last completed epoch (try a lower train.lr)"
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.opt.step()
            n = batch["image"].shape[0]
            total += loss.item() * n
            count += n
            if bar is not None:
                bar.set_postfix(
                    step=step + 1, loss=f"{loss.item():.4f}", img_s=f"{count / (time.perf_counter() - tic):.1f}"
                )
                bar.update(1)
        if bar is not None:
            bar.close()
        return total / max(count, 1)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Validation loss on fixed patches and Dice (or PSNR) on whole validation images."""
        if not self.val_cases:
            return {}
        from densemed.infer.predict import predict_probabilities, to_labels

        self.model.eval()
        losses = []
        sr_outputs: list[torch.Tensor] = []
        bs = self.cfg.data.batch_size
        for k in range(0, len(self.val_patches), bs):
            chunk = self.val_patches[k : k + bs]
            batch = {key: torch.stack([p[key] for p in chunk]).to(self.device) for key in chunk[0]}
            with nets.all_outputs(self.model):
                out = self.model(batch["image"])
            losses.append(compute_loss(self.loss_fn, out, batch, self.cfg.task).item())
            if self.cfg.task == "sr":
                sr_outputs.append(out.float().cpu())
        rec: dict[str, Any] = {"val_loss": float(np.mean(losses))}
        from densemed.infer.predict import output_kind

        if output_kind(self.model, self.cfg) == "regression":  # no classes to score: lower loss is better
            rec["val_score"] = -rec["val_loss"]
            return rec
        if self.cfg.task == "sr":
            rec["val_psnr"] = self._val_psnr(sr_outputs)
            rec["val_score"] = rec["val_psnr"]
            return rec
        from densemed.metrics.confusion import confusion, dice

        k = max(self.cfg.data.num_classes, 2)
        per_class = []
        for case in self.val_cases:
            x = torch.from_numpy(case.image)[None]
            pred = to_labels(predict_probabilities(self.model, x, self.cfg, self.device))[0]
            per_class.append(np.asarray(dice(confusion(pred, torch.from_numpy(case.label), k)))[1:])
        per_class_mean = np.mean(per_class, axis=0)
        rec["val_dice_per_class"] = [float(v) for v in per_class_mean]
        rec["val_dice"] = float(per_class_mean.mean())
        rec["val_score"] = rec["val_dice"]
        return rec

    def _val_psnr(self, patch_outputs: list[torch.Tensor]) -> float:
        """Mean PSNR (dB) of the validation patches' predictions.

        ``patch_outputs`` are in the order of ``self.val_patches``; each is measured against its
        volume's intensity range. With ``train.val_full_images``, whole volumes instead.
        """
        from densemed.infer.predict import predict_probabilities
        from densemed.metrics.image_quality import psnr

        ranges = [float(c.maps["target"].max() - c.maps["target"].min()) for c in self.val_cases]
        if self.cfg.train.val_full_images:
            scores = []
            for case, rng in zip(self.val_cases, ranges):
                pred = predict_probabilities(self.model, torch.from_numpy(case.image)[None], self.cfg, self.device)
                scores.append(psnr(pred[0].numpy(), case.maps["target"], data_range=rng))
            return float(np.mean(scores))
        per_case = self.cfg.data.val_patches_per_image  # fixed_patches: per_case patches per case, in order
        preds = torch.cat(patch_outputs).numpy()
        scores = [
            psnr(pred, patch["target"].numpy(), data_range=ranges[k // per_case])
            for k, (pred, patch) in enumerate(zip(preds, self.val_patches))
        ]
        return float(np.mean(scores))

    # -- outputs -------------------------------------------------------------------------
    def _checkpoint(self, epoch: int, improved: bool) -> None:
        ckpt = {
            "config": self.cfg.to_dict(),
            "net": self.cfg.model["name"],
            "in_channels": self.in_channels,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": epoch,
            "best": self.best,
            "version": __version__,
        }
        save_atomic(ckpt, self.out / "last.pt")
        if improved or not (self.out / "best.pt").exists():
            save_atomic(ckpt, self.out / "best.pt")

    def _tune_instances(self) -> None:
        """``infer.instances.h: auto`` (DeepDistance): choose ``h`` on the validation images.

        It is chosen with the weights of best.pt and of last.pt, and written into each checkpoint's recipe.
        """
        from densemed.infer.instances import DEFAULT_H, default_method, instance_params, tune_h

        params = instance_params(self.cfg)
        if params.get("h") != "auto" or (params.get("method") or default_method(self.cfg)) != "deepdistance":
            return
        done: dict[int, tuple[float, dict[float, float]] | None] = {}
        for name in ("best.pt", "last.pt"):  # last.pt second: the model ends with its weights
            path = self.out / name
            ckpt = load_checkpoint(path, self.device)
            epoch = int(ckpt["epoch"])
            if epoch not in done:
                self.model.load_state_dict(ckpt["model"])
                done[epoch] = tune_h(self.model, self.val_cases, self.cfg, self.device)
            found = done[epoch]
            h = DEFAULT_H if found is None else found[0]
            ckpt["config"]["infer"]["instances"]["h"] = h
            ckpt["h_scores"] = {} if found is None else found[1]
            save_atomic(ckpt, path)
            if found is None:
                self.log(f"{path}: no validation images with instance ids, DeepDistance h = {h:g} (default)")
            else:
                self.log(f"{path}: DeepDistance h = {h:g} chosen on {len(self.val_cases)} validation images "
                         f"(detection F1 {found[1][h]:.3f})")

    def _write_history(self) -> None:
        text = "".join(json.dumps(h) + "\n" for h in self.history)
        tmp = self.out / ".metrics.jsonl.tmp"
        tmp.write_text(text)
        tmp.replace(self.out / "metrics.jsonl")
        try:
            from densemed.train.plots import plot_curves

            plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")
        except ImportError:
            pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)  # off when not a TTY


def _summary(rec: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {rec['epoch'] + 1}/{epochs}", f"train_loss {rec['train_loss']:.4f}"]
    for key in ("val_loss", "val_dice", "val_psnr"):
        if key in rec:
            parts.append(f"{key} {rec[key]:.4f}")
    parts.append(f"{rec['seconds']:.1f}s")
    return "  ".join(parts)


def train(cfg: Config, resume: bool = False, log: Callable[[str], None] = print) -> RunResult:
    """Train a recipe; with ``resume`` continue the run in ``cfg.train.out`` from ``last.pt``."""
    return Trainer(cfg, resume, log).fit()
