"""Image-quality scores for super-resolution: PSNR and SSIM of 2D/3D numpy arrays.

PSNR (peak signal-to-noise ratio), with ``R`` the data range:

    PSNR = 10 log10( R^2 / MSE ),   MSE = mean((pred - truth)^2).

SSIM (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 13:600-612, 2004), the mean over voxels of

    SSIM(x, y) = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),

with local means, variances and covariance over a window around each voxel,
``C1 = (0.01 R)^2`` and ``C2 = (0.03 R)^2``.

Documented choices (they match ``skimage.metrics`` so numbers are comparable with the
literature that uses it; equality is tested to 1e-8):

* ``data_range=None`` uses ``truth.max() - truth.min()`` (MR intensities have no fixed range;
  scikit-image instead infers it from the dtype and refuses float images outside [-1, 1]).
* Window: ``gaussian=False`` (default) a uniform 7-voxel window (7x7 or 7x7x7) with the
  unbiased sample covariance (``N / (N - 1)`` correction), as
  ``skimage.metrics.structural_similarity`` by default; ``gaussian=True`` is Wang's Gaussian
  window with sigma 1.5 truncated at 3.5 sigma (11 voxels) and the biased covariance, as
  skimage's ``gaussian_weights=True, use_sample_covariance=False``.
* Filtering reflects at the borders (``scipy.ndimage`` ``mode="reflect"``) and the SSIM map is
  averaged without the ``(window - 1) / 2`` voxels along each border that the window overhangs.
* Computation in float64.

Folders (``densemed evaluate --task sr``): :func:`evaluate_sr_folders` matches prediction,
truth and optional baseline (e.g. tricubic) volumes by file stem and scores each with PSNR and
SSIM (uniform window, ``data_range`` from the truth volume); :func:`format_sr_table` prints it.
Prediction and truth must be on the same intensity scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError
from densemed.typing import PathType


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth shapes differ: {pred.shape} vs {truth.shape}")
    return pred, truth


def _range(truth: np.ndarray, data_range: float | None) -> float:
    r = float(truth.max() - truth.min()) if data_range is None else float(data_range)
    if r <= 0:
        raise ValueError(f"data_range must be > 0, got {r} (constant truth? pass data_range)")
    return r


def psnr(pred: np.ndarray, truth: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` when ``pred == truth``.

    Args:
        pred: prediction, any shape.
        truth: reference of the same shape.
        data_range: ``R`` in the formula; default ``truth.max() - truth.min()``.

    Example:
        >>> t = np.zeros((4, 4)); t[0, 0] = 1.0
        >>> print(round(psnr(t + 0.1, t), 6))
        20.0
    """
    pred, truth = _pair(pred, truth)
    r = _range(truth, data_range)
    mse = float(np.mean((pred - truth) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(r * r / mse)


def ssim(
    pred: np.ndarray,
    truth: np.ndarray,
    data_range: float | None = None,
    gaussian: bool = False,
    win_size: int = 7,
) -> float:
    """Mean structural similarity of two 2D or 3D images (see the module docstring).

    Args:
        pred: prediction ``(H, W)`` or ``(D, H, W)``.
        truth: reference of the same shape.
        data_range: ``R``; default ``truth.max() - truth.min()``.
        gaussian: Gaussian window (sigma 1.5, 11 voxels) instead of the uniform ``win_size`` one.
        win_size: uniform window side (odd, >= 3); ignored when ``gaussian``.

    Example:
        >>> x = np.random.default_rng(0).random((16, 16))
        >>> print(ssim(x, x))
        1.0
    """
    pred, truth = _pair(pred, truth)
    if pred.ndim not in (2, 3):
        raise ValueError(f"ssim takes 2D or 3D images, got {pred.ndim} dims")
    r = _range(truth, data_range)
    if gaussian:
        sigma, truncate = 1.5, 3.5
        win = 2 * int(truncate * sigma + 0.5) + 1  # 11

        def filt(a: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(a, sigma=sigma, truncate=truncate, mode="reflect")

        cov_norm = 1.0
    else:
        if win_size < 3 or win_size % 2 == 0:
            raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
        win = win_size

        def filt(a: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(a, size=win, mode="reflect")

        n = win**pred.ndim
        cov_norm = n / (n - 1)  # unbiased local (co)variances
    if min(pred.shape) < win:
        raise ValueError(f"image side {min(pred.shape)} smaller than the SSIM window {win}")
    mx, my = filt(pred), filt(truth)
    vx = cov_norm * (filt(pred * pred) - mx * mx)
    vy = cov_norm * (filt(truth * truth) - my * my)
    vxy = cov_norm * (filt(pred * truth) - mx * my)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    inner = s[tuple(slice(pad, side - pad) for side in s.shape)]
    return float(inner.mean())


def _volumes(folder: PathType, role: str) -> dict[str, Path]:
    from densemed.data.io import is_supported, split_name

    folder = Path(folder)
    if not folder.is_dir():
        raise DensemedError(f"{folder}: {role} folder not found")
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and is_supported(f):
            files[split_name(f)[0]] = f
    return files


def _scores(pred: np.ndarray, truth: np.ndarray, path: Path) -> dict[str, float]:
    if pred.shape != truth.shape:
        raise DensemedError(f"{path}: shape {pred.shape} differs from the truth's {truth.shape}")
    r = float(truth.max() - truth.min())
    if r <= 0:
        raise DensemedError(f"{path}: the truth volume is constant; PSNR/SSIM undefined")
    # (C, *S): SSIM per channel (it takes 2D/3D images), averaged
    return {
        "psnr": psnr(pred, truth, data_range=r),
        "ssim": float(np.mean([ssim(p, t, data_range=r) for p, t in zip(pred, truth)])),
    }


def evaluate_sr_folders(pred: PathType, truth: PathType, baseline: PathType | None = None) -> dict[str, Any]:
    """PSNR/SSIM of every truth volume's prediction (and baseline), matched by file stem.

    Returns:
        ``{"images": [{"name", "psnr", "ssim", "baseline_psnr"?, "baseline_ssim"?}], "mean": {...}}``.
    """
    from densemed.data.io import read_image

    truths = _volumes(truth, "truth")
    preds = _volumes(pred, "prediction")
    bases = _volumes(baseline, "baseline") if baseline is not None else {}
    if not truths:
        raise DensemedError(f"{truth}: no truth volumes found")
    images = []
    for stem, tpath in truths.items():
        if stem not in preds:
            raise DensemedError(f"{pred}: no prediction for {tpath.name}")
        t = read_image(tpath)[0]
        rec: dict[str, Any] = {"name": stem, **_scores(read_image(preds[stem])[0], t, preds[stem])}
        if baseline is not None:
            if stem not in bases:
                raise DensemedError(f"{baseline}: no baseline volume for {tpath.name}")
            b = _scores(read_image(bases[stem])[0], t, bases[stem])
            rec.update({f"baseline_{k}": v for k, v in b.items()})
        images.append(rec)
    keys = [k for k in images[0] if k != "name"]
    return {"images": images, "mean": {k: float(np.mean([im[k] for im in images])) for k in keys}}


def format_sr_table(result: Mapping[str, Any]) -> str:
    """Plain-text table of :func:`evaluate_sr_folders`: one row per volume, then the mean."""
    keys = list(result["mean"])
    width = max([len("image"), len("mean")] + [len(im["name"]) for im in result["images"]])
    header = f"{'image':<{width}}  " + "  ".join(f"{k:>13}" for k in keys)
    lines = [header, "-" * len(header)]
    for im in [*result["images"], {"name": "mean", **result["mean"]}]:
        lines.append(f"{im['name']:<{width}}  " + "  ".join(f"{im[k]:>13.4f}" for k in keys))
    lines.insert(len(lines) - 1, "-" * len(header))
    lines.append("psnr in dB (data range = truth max - min); ssim: uniform 7-voxel window")
    return "\n".join(lines)
