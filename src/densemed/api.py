"""The Python API for notebooks and scripts: ``densemed.load(path)`` -> a :class:`Predictor`.

``load`` takes what ``densemed predict --checkpoint`` takes: a checkpoint (``RUN/best.pt``), a run
folder (its ``best.pt``, else ``last.pt``) or a model written by ``densemed export`` (``.onnx``,
run by onnxruntime with the normalisation, window and classes of its JSON sidecar). The
predictor applies the recipe's resampling, normalisation and sliding window to an array and
returns class indices; the command line's ``predict`` runs the same object over files
(:meth:`Predictor.predict_paths`), so both give the same label maps.

Example::

    import densemed
    predictor = densemed.load("runs/unet_hippocampus/best.pt")
    labels = predictor.predict(volume, spacing=(1.0, 1.0, 1.0))          # (X, Y, Z) int64
    labels, probs = predictor.predict(volume, probabilities=True)        # probs (K, X, Y, Z)
    print(predictor.class_names)                                         # {0: 'background', ...} or None
"""

from __future__ import annotations

import torch

from densemed.infer.predict import Predictor
from densemed.typing import PathType

__all__ = ["Predictor", "load"]


def load(path: PathType, device: torch.device | str = "auto") -> Predictor:
    """A predictor for a checkpoint, a run folder or an exported ``.onnx`` model.

    Args:
        path: ``RUN/best.pt``, ``RUN`` or ``model.onnx`` (with ``model.onnx.json`` beside it).
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; an
            exported model always runs on onnxruntime's CPU provider.

    Raises:
        DensemedError: a missing or unreadable checkpoint or sidecar, an unknown device.

    Example:
        >>> import densemed, numpy as np
        >>> predictor = densemed.load("runs/demo/best.pt")  # doctest: +SKIP
        >>> print(predictor.predict(np.zeros((128, 128), np.float32)).shape)  # doctest: +SKIP
        (128, 128)
    """
    from densemed.build import load_model, resolve_device

    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    model, cfg, _ = load_model(path, dev)
    return Predictor(model, cfg, dev)
