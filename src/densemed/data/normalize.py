"""Per-image intensity normalisation (each image or volume on its own: MR intensities differ
wildly between scans, e.g. the hippocampus crops range from uint8 to 1.6e6)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
    x = image.astype(np.float32, copy=True)
    if method == "none":
        return x
    for c in range(x.shape[0]):
        ch = x[c]
        if method == "zscore":
            ch -= ch.mean()
            ch /= max(float(ch.std()), 1e-8)
        elif method in ("percentile", "window"):
            if method == "window":
                if window is None or len(window) != 2:
                    raise ValueError("normalize=window needs data.window: [lo, hi]")
                lo, hi = float(window[0]), float(window[1])
            else:
                lo, hi = (float(v) for v in np.percentile(ch, percentiles))
            np.clip(ch, lo, hi, out=ch)
            ch -= lo
            ch /= max(hi - lo, 1e-8)
        else:
            raise ValueError(f"unknown normalisation {method!r}; use zscore, percentile, window or none")
    return x
