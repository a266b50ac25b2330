"""Per-image intensity normalisation (each image or volume on its own).

MR intensities differ wildly between scans, e.g. the hippocampus crops range from uint8 to 1.6e6.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def intensity_params(
    image: np.ndarray,
    method: str = "zscore",
    percentiles: Sequence[float] = (0.5, 99.5),
    window: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-channel ``(shift, scale, clip)`` so that normalised = (clip(x) - shift) / scale.

    ``clip`` says whether values are first clipped to ``[shift, shift + scale]``.
    """
    c = image.shape[0]
    if method == "none":
        return np.zeros(c), np.ones(c), False
    if method == "zscore":
        flat = image.reshape(c, -1).astype(np.float64)
        return flat.mean(1), np.maximum(flat.std(1), 1e-8), False
    if method == "window":
        if window is None or len(window) != 2:
            raise ValueError("normalize=window needs data.window: [lo, hi]")
        lo, hi = np.full(c, float(window[0])), np.full(c, float(window[1]))
    elif method == "percentile":
        lo, hi = (np.asarray(v, np.float64) for v in np.percentile(image.reshape(c, -1), percentiles, axis=1))
    else:
        raise ValueError(f"unknown normalisation {method!r}; use zscore, percentile, window or none")
    return lo, np.maximum(hi - lo, 1e-8), True


def normalize(
    image: np.ndarray,
    method: str = "zscore",
    percentiles: Sequence[float] = (0.5, 99.5),
    window: Sequence[float] | None = None,
) -> np.ndarray:
    """Normalise ``image`` ``(C, *S)`` channel by channel; returns float32.

    * ``zscore``: (x - mean) / std per channel (std floored at 1e-8).
    * ``percentile``: clip to the given percentiles, then scale to [0, 1].
    * ``window``: clip to the fixed window ``[lo, hi]`` (CT Hounsfield units), then scale to [0, 1].
    * ``none``: unchanged.
    """
    shift, scale, clip = intensity_params(image, method, percentiles, window)
    x = image.astype(np.float32, copy=True)
    for c in range(x.shape[0]):
        if clip:
            np.clip(x[c], shift[c], shift[c] + scale[c], out=x[c])
        x[c] -= np.float32(shift[c])
        x[c] /= np.float32(scale[c])
    return x
