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

Inside a mask (``mask=``, e.g. the tissue): PSNR takes the MSE over the masked voxels, with the
same ``R`` (the whole truth's range unless given), so the two PSNRs differ only by where the
error is averaged; SSIM computes its map on the whole image (a voxel at the mask's edge keeps its
whole window) and averages it over the masked voxels away from the border.

Folders (``densemed evaluate --task sr``): :func:`evaluate_sr_folders` matches prediction,
truth and optional baseline (e.g. tricubic) volumes by file stem and scores each with PSNR and
SSIM (uniform window, ``data_range`` from the whole truth volume) inside the truth's tissue mask
(:func:`densemed.data.sr.tissue_mask`, Otsu by default: keys ``psnr_tissue``, ``ssim_tissue``)
and over the whole volume (``psnr``, ``ssim``); :func:`format_sr_table` prints it and says which
is which. Over a whole brain volume most voxels are empty background that any method restores
almost exactly, so the tissue scores are the ones that tell methods apart (the MNI152 template
is 21 % tissue). Prediction and truth must be on the same intensity scale.
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


def psnr(pred: np.ndarray, truth: np.ndarray, data_range: float | None = None,
         mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` when ``pred == truth``.

    Args:
        pred: prediction, any shape.
        truth: reference of the same shape.
        data_range: ``R`` in the formula; default ``truth.max() - truth.min()`` (of the whole
            volume, also with a ``mask``, so the two PSNRs differ only by where the MSE is taken).
        mask: boolean array of the same shape: the MSE over these voxels only (e.g. the tissue).

    Example:
        >>> t = np.zeros((4, 4)); t[0, 0] = 1.0
        >>> print(round(psnr(t + 0.1, t), 6))
        20.0
    """
    pred, truth = _pair(pred, truth)
    r = _range(truth, data_range)
    err = (pred - truth) ** 2
    if mask is not None:
        mask = _mask(mask, truth.shape)
        err = err[mask]
    mse = float(np.mean(err))
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(r * r / mse)


def _mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} differs from the images' {shape}")
    if not mask.any():
        raise ValueError("the mask is empty")
    return mask


def ssim_map(
    pred: np.ndarray, truth: np.ndarray, data_range: float | None = None, gaussian: bool = False, win_size: int = 7
) -> tuple[np.ndarray, int]:
    """The local SSIM of every voxel and the border width its mean leaves out (see :func:`ssim`).

    Shape:
        ``(*S), (*S) -> (*S), int``.

    Example:
        >>> x = np.random.default_rng(0).random((16, 16))
        >>> m, pad = ssim_map(x, x)
        >>> print(m.shape, pad)
        (16, 16) 3
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
    local = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return local, (win - 1) // 2


def _map_mean(local: np.ndarray, pad: int, mask: np.ndarray | None) -> float:
    inner = tuple(slice(pad, side - pad) for side in local.shape)
    if mask is None:
        return float(local[inner].mean())
    keep = _mask(mask, local.shape)[inner]
    if not keep.any():
        raise ValueError("the mask holds no voxel away from the border the SSIM window overhangs")
    return float(local[inner][keep].mean())


def ssim(
    pred: np.ndarray,
    truth: np.ndarray,
    data_range: float | None = None,
    gaussian: bool = False,
    win_size: int = 7,
    mask: np.ndarray | None = None,
) -> float:
    """Mean structural similarity of two 2D or 3D images (see the module docstring).

    Args:
        pred: prediction ``(H, W)`` or ``(D, H, W)``.
        truth: reference of the same shape.
        data_range: ``R``; default ``truth.max() - truth.min()``.
        gaussian: Gaussian window (sigma 1.5, 11 voxels) instead of the uniform ``win_size`` one.
        win_size: uniform window side (odd, >= 3); ignored when ``gaussian``.
        mask: boolean array of the same shape: the SSIM map averaged over these voxels only
            (the map itself is computed on the whole image, so a voxel at the mask's edge sees
            its whole window); border voxels the window overhangs stay out as without a mask.

    Example:
        >>> x = np.random.default_rng(0).random((16, 16))
        >>> print(ssim(x, x))
        1.0
    """
    local, pad = ssim_map(pred, truth, data_range, gaussian, win_size)
    return _map_mean(local, pad, mask)


def volume_files(folder: PathType, role: str) -> dict[str, Path]:
    """``{stem: path}`` of the image files in ``folder``; ``role`` names the folder in the error."""
    from densemed.data.io import is_supported, split_name

    folder = Path(folder)
    if not folder.is_dir():
        raise DensemedError(f"{folder}: {role} folder not found")
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and is_supported(f):
            files[split_name(f)[0]] = f
    return files


def _scores(pred: np.ndarray, truth: np.ndarray, masks: list[np.ndarray], path: Path) -> dict[str, float]:
    """PSNR and SSIM inside the tissue masks (one per channel) and over the whole volume."""
    if pred.shape != truth.shape:
        raise DensemedError(f"{path}: shape {pred.shape} differs from the truth's {truth.shape}")
    r = float(truth.max() - truth.min())
    if r <= 0:
        raise DensemedError(f"{path}: the truth volume is constant; PSNR/SSIM undefined")
    mask = np.stack(masks)
    out = {"psnr_tissue": psnr(pred, truth, data_range=r, mask=mask), "psnr": psnr(pred, truth, data_range=r)}
    tissue, volume = [], []
    for p, t, m in zip(pred, truth, masks):  # (C, *S): SSIM per channel (it takes 2D/3D images), averaged
        local, pad = ssim_map(p, t, data_range=r)
        tissue.append(_map_mean(local, pad, m))
        volume.append(_map_mean(local, pad, None))
    out["ssim_tissue"], out["ssim"] = float(np.mean(tissue)), float(np.mean(volume))
    return {k: out[k] for k in SCORES}


#: the scores of one volume, in table order: inside the tissue mask, then over the whole volume (no suffix)
SCORES = ("psnr_tissue", "ssim_tissue", "psnr", "ssim")


def evaluate_sr_folders(pred: PathType, truth: PathType, baseline: PathType | None = None,
                        mask: str = "otsu", threshold: float = 0.1) -> dict[str, Any]:
    """PSNR/SSIM of every truth volume's prediction (and baseline), inside the tissue and over the volume.

    Volumes are matched by file stem. The tissue mask of each truth volume is
    :func:`densemed.data.sr.tissue_mask` (``mask``: ``otsu``, ``threshold`` with ``threshold``, or
    ``none``); the data range is the whole truth volume's ``max - min`` for both.

    Returns:
        ``{"images": [{"name", "tissue_share", "psnr_tissue", "ssim_tissue", "psnr", "ssim",
        "baseline_<score>"?, "gain_psnr_tissue"?}], "mean": {...}, "mask": mask}``; ``psnr`` and
        ``ssim`` without suffix are over the whole volume.
    """
    from densemed.data.io import read_image
    from densemed.data.sr import tissue_mask

    truths = volume_files(truth, "truth")
    preds = volume_files(pred, "prediction")
    bases = volume_files(baseline, "baseline") if baseline is not None else {}
    if not truths:
        raise DensemedError(f"{truth}: no truth volumes found")
    images = []
    for stem, tpath in truths.items():
        if stem not in preds:
            raise DensemedError(f"{pred}: no prediction for {tpath.name}")
        t = read_image(tpath)[0]
        masks = [tissue_mask(c, mask, threshold) for c in t]
        if not all(m.any() for m in masks):
            raise DensemedError(f"{tpath}: the tissue mask ({mask}) is empty")
        rec: dict[str, Any] = {"name": stem, "tissue_share": float(np.mean([m.mean() for m in masks]))}
        rec.update(_scores(read_image(preds[stem])[0], t, masks, preds[stem]))
        if baseline is not None:
            if stem not in bases:
                raise DensemedError(f"{baseline}: no baseline volume for {tpath.name}")
            b = _scores(read_image(bases[stem])[0], t, masks, bases[stem])
            rec.update({f"baseline_{k}": v for k, v in b.items()})
            rec["gain_psnr_tissue"] = rec["psnr_tissue"] - rec["baseline_psnr_tissue"]
        images.append(rec)
    keys = [k for k in images[0] if k != "name"]
    return {"images": images, "mean": {k: float(np.mean([im[k] for im in images])) for k in keys}, "mask": mask}


def format_sr_table(result: Mapping[str, Any]) -> str:
    """Plain-text table of :func:`evaluate_sr_folders`: one row per volume, then the mean."""
    keys = list(result["mean"])
    width = max([len("image"), len("mean")] + [len(im["name"]) for im in result["images"]])
    cols = {k: max(len(k), 8) for k in keys}
    header = f"{'image':<{width}}  " + "  ".join(f"{k:>{cols[k]}}" for k in keys)
    lines = [header, "-" * len(header)]
    for im in [*result["images"], {"name": "mean", **result["mean"]}]:
        lines.append(f"{im['name']:<{width}}  " + "  ".join(f"{im[k]:>{cols[k]}.4f}" for k in keys))
    lines.insert(len(lines) - 1, "-" * len(header))
    how = {"otsu": "Otsu threshold of the truth, holes filled", "threshold": "intensity threshold of the truth",
           "none": "every voxel"}.get(str(result.get("mask", "otsu")), str(result.get("mask")))
    lines.append(f"*_tissue: inside the tissue mask ({how}; tissue_share = its fraction of the volume); "
                 "psnr, ssim: over the whole volume")
    lines.append("psnr in dB, data range = truth max - min of the whole volume for both; ssim: uniform 7-voxel "
                 "window, its map averaged over the mask or the volume")
    if any(k.startswith("baseline_") for k in keys):
        lines.append("baseline_*: the same scores of the baseline folder (e.g. tricubic); "
                     "gain_psnr_tissue = psnr_tissue - baseline_psnr_tissue")
    return "\n".join(lines)
