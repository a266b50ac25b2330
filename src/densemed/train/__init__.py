"""The training loop, checkpoints, logging."""

from densemed.train.loop import RunResult, Trainer, build_loss, build_model, resolve_device, train

__all__ = ["RunResult", "Trainer", "build_loss", "build_model", "resolve_device", "train"]
