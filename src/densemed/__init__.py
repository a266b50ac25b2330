"""densemed: dense prediction networks for medical image segmentation.

Sub-packages: ``nets`` (one network per module, a registry), ``blocks`` (shared layers),
``losses``, ``targets`` (label -> training target encodings), ``augment``, ``metrics``,
``data``, ``train``, ``infer``; ``config`` holds the typed recipe and ``cli`` the console script.
``densemed.load(path)`` (:mod:`densemed.api`) gives a predictor for a checkpoint or an exported model;
it is imported on first use, so ``import densemed`` stays light (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``densemed.load`` on first use (PEP 562), so importing the package does not import torch."""
    if name == "load":
        from densemed.api import load

        return load
    raise AttributeError(f"module 'densemed' has no attribute {name!r}")
