"""When networks return auxiliary outputs: in training mode, or inside :func:`all_outputs`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def wants_aux(module: nn.Module) -> bool:
    """True when ``module`` should return its auxiliary outputs (training, or forced)."""
    return module.training or getattr(module, "_force_aux", False)


@contextmanager
def all_outputs(model: nn.Module) -> Iterator[nn.Module]:
    """Make ``model`` return its training-mode outputs (lists, dicts) while staying in eval mode.

    Used for the validation loss and by post-processing that needs every head (DCAN contours,
    DeepDistance maps).
    """
    mods = list(model.modules())
    for m in mods:
        m._force_aux = True
    try:
        yield model
    finally:
        for m in mods:
            m._force_aux = False
