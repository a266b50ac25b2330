"""Checkpoints: the recipe and state dicts, written atomically, loaded with clear errors.

A checkpoint (format 2) is a dict saved with ``torch.save``::

    {"format": 2, "config": recipe dict, "net": model name, "in_channels": int,
     "networks": {name: state_dict}, "optimizers": {name: state_dict}, "schedulers": {...},
     "epoch": last completed (or stopped) epoch, "step": optimiser steps done, "epoch_step": steps
     done inside ``epoch`` when the run stopped mid-epoch (else 0), "best": best validation score,
     "elapsed": training seconds spent, "total_steps": schedule length, "task_state": {...},
     "version": densemed version}

The training module's main network is ``networks["model"]``. Checkpoints written before the task
seam (format 1: a flat ``"model"`` state dict) still load for prediction (:func:`network_state`);
resuming them fails with one line. The model is rebuilt from the recipe, so no pickled objects
are needed. Writes go to a temporary file in the same folder and are then
renamed over the target (``os.replace`` is atomic on POSIX), so a kill at any moment leaves
either the old or the new checkpoint, never a truncated one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densemed.errors import DensemedError
from densemed.typing import PathType


def save_atomic(obj: dict[str, Any], path: PathType) -> None:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename.

    A write that fails (a full disk, a quota) raises one :class:`DensemedError` line naming ``path``;
    the previous checkpoint at ``path`` is left as it was and no temporary file remains.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk or a quota: one line naming the file; the previous checkpoint stays
        from densemed.data.io import write_error

        raise write_error(path, exc) from None
    except RuntimeError as exc:
        if "inline_container" not in str(exc):  # torch's zip writer reports a short write this way
            raise
        from densemed.data.io import write_error

        raise write_error(path, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: PathType, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a densemed checkpoint; a missing, truncated or foreign file raises DensemedError."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    if not path.is_file():
        raise DensemedError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DensemedError(f"{path}: cannot read checkpoint ({msg})") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or ("model" not in ckpt and "networks" not in ckpt):
        raise DensemedError(f"{path}: not a densemed checkpoint (no 'config' and network weights)")
    return ckpt


def network_state(ckpt: dict[str, Any], name: str = "model") -> dict[str, torch.Tensor]:
    """The state dict of network ``name`` (format 2), or the flat ``"model"`` entry of format 1."""
    if "networks" in ckpt:
        return ckpt["networks"][name]
    return ckpt["model"]


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], path: PathType, net_name: str, ckpt_net: str | None
) -> None:
    """Load weights, turning a mismatch into a one-line error naming both architectures."""
    if ckpt_net is not None and ckpt_net != net_name:
        raise DensemedError(f"{path}: checkpoint holds a {ckpt_net!r} network, but the recipe builds {net_name!r}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DensemedError(
            f"{path}: weights do not fit the {net_name!r} network built from the recipe "
            f"(different architecture or widths): {first}"
        ) from None
