"""How real do generated images look: a radial power-spectrum distance and a Fréchet distance.

No downloaded Inception weights are reachable here, so both scores are defined without them.

**Spectral distance** (:func:`spectral_distance`, the per-epoch realism score of the ``synthesis``
task). An L1-trained generator blurs (it predicts the conditional mean), and a GAN that overfits
adds high-frequency artefacts; both show in the power spectrum. For an image ``x`` (per channel,
mean removed) with discrete Fourier transform ``X(f)`` and frequency radius ``|f|`` in cycles per
pixel, the radial spectrum is the mean power in ``n_bins`` equal-width rings of ``(0, 0.5]``::

    P(k) = mean_{f : r_k < |f| <= r_{k+1}} |X(f)|^2 / N,     r_k = 0.5 k / n_bins

    D_spec(x, y) = (1 / n_bins) sum_k | log10 P_x(k) - log10 P_y(k) |

0 for equal spectra; a spectrum off by a factor 10 everywhere gives 1. Sets of images are compared
by their mean spectra (geometric detail of a single image averages out). Rings outside the image's
frequency grid (none for square images) are skipped.

**Fréchet distance** (:func:`frechet_distance`; Heusel et al., "GANs Trained by a Two Time-Scale
Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017, Eq. 6)::

    FD = ||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))

between Gaussians fitted to two feature sets. ``(C_a C_b)^(1/2)`` is computed as
``C_a^(1/2) (C_a^(1/2) C_b C_a^(1/2))^(1/2) C_a^(-1/2)``, whose trace equals the trace of the
symmetric PSD square root ``(C_a^(1/2) C_b C_a^(1/2))^(1/2)`` (similar matrices), so only symmetric
eigendecompositions are needed and the result is real.

**Features** (:func:`encoder_features`): the activations of one module of a network trained here
(the ``densemed`` choice: the deepest encoder level ``encoders.<depth>`` of a segmentation U-Net
trained on the real images). Every spatial position of that feature map is one sample, as in the
single-image FID of Shaham, Dekel, Michaeli (SinGAN, ICCV 2019): with a handful of validation
images, one vector per image would give far fewer samples than feature dimensions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from densemed.errors import DensemedError


def radial_spectrum(image: np.ndarray, n_bins: int = 16) -> np.ndarray:
    """Mean power per frequency ring of a channel-first image, averaged over channels.

    Args:
        image: ``(C, *S)`` (2D or 3D spatial).
        n_bins: equal-width rings over radii ``(0, 0.5]`` cycles per pixel.

    Returns:
        ``(n_bins,)`` float64; ``nan`` for a ring without frequencies.

    Shape:
        ``(C, *S) -> (n_bins,)``.

    Example:
        >>> print(radial_spectrum(np.random.default_rng(0).normal(size=(1, 32, 32))).shape)
        (16,)
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim < 2:
        raise DensemedError(f"spectral distance: expected a (C, *S) image, got shape {x.shape}")
    spatial = x.shape[1:]
    axes = tuple(range(1, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    power = (np.abs(np.fft.fftn(x, axes=axes)) ** 2).mean(axis=0) / float(np.prod(spatial))
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in spatial], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    out = np.full(n_bins, np.nan)
    for k in range(n_bins):
        ring = (radius > edges[k]) & (radius <= edges[k + 1])
        if ring.any():
            out[k] = power[ring].mean()
    return out


def spectral_distance(a: Iterable[np.ndarray], b: Iterable[np.ndarray], n_bins: int = 16) -> float:
    """Mean absolute difference of log10 mean radial spectra of two image sets (see the module docstring).

    Args:
        a: images ``(C, *S)`` (sizes may differ between images; the rings are in cycles per pixel).
        b: images of the other set.
        n_bins: rings over ``(0, 0.5]`` cycles per pixel.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(1, 32, 32))
        >>> print(round(spectral_distance([x], [10 * x]), 6))  # power x100 in every ring
        2.0
    """
    pa, pb = _mean_spectrum(a, n_bins), _mean_spectrum(b, n_bins)
    tiny = 1e-20  # a flat image has no power; keeps log10 finite
    ok = np.isfinite(pa) & np.isfinite(pb)
    return float(np.mean(np.abs(np.log10(pa[ok] + tiny) - np.log10(pb[ok] + tiny))))


def _mean_spectrum(images: Iterable[np.ndarray], n_bins: int) -> np.ndarray:
    """Mean radial spectrum over images, per ring over the images that have frequencies there (else nan)."""
    spectra = np.array([radial_spectrum(x, n_bins) for x in images])
    if spectra.size == 0:
        raise DensemedError("spectral distance: an empty image set")
    seen = np.isfinite(spectra)
    total = np.where(seen, spectra, 0.0).sum(0)
    count = seen.sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (Heusel et al. 2017).

    Args:
        a: ``(N_a, D)`` features, one sample per row.
        b: ``(N_b, D)`` features.

    Returns:
        ``||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` (sample covariances, ``N - 1``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a = rng.normal(size=(4000, 2)); b = rng.normal(size=(4000, 2)) + [3.0, 0.0]
        >>> print(round(frechet_distance(a, b)))  # ~ |mu_a - mu_b|^2 = 9
        9
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise DensemedError(f"frechet distance: expected (N, D) feature sets of equal D, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise DensemedError("frechet distance: each feature set needs at least 2 samples")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrt_psd(ca)
    cross = _sqrt_psd(root_a @ cb @ root_a)  # tr of this = tr((C_a C_b)^(1/2))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb) - 2.0 * np.trace(cross))


def default_feature_layer(model: nn.Module) -> str:
    """The deepest encoder level of a U-Net-like network (``encoders.<last>``), else its last child."""
    encoders = getattr(model, "encoders", None)
    if isinstance(encoders, nn.ModuleList) and len(encoders):
        return f"encoders.{len(encoders) - 1}"
    names = [n for n, _ in model.named_children()]
    if not names:
        raise DensemedError(f"realism features: {type(model).__name__} has no sub-modules to read features from")
    return names[-1]


def encoder_features(model: nn.Module, images: Sequence[torch.Tensor], layer: str | None = None,
                     device: torch.device | str = "cpu") -> np.ndarray:
    """Activations of ``model``'s module ``layer`` on each image, one row per spatial position.

    Args:
        model: a network (put in eval mode here).
        images: normalised images ``(C, *S)`` or ``(1, C, *S)``.
        layer: dotted module name (default :func:`default_feature_layer`).
        device: where the network runs.

    Returns:
        ``(sum of positions, D)`` float64, ``D`` the layer's channels.

    Example:
        >>> from densemed.nets.unet import UNet
        >>> feats = encoder_features(UNet(1, 2, depth=2, base_width=4), [torch.zeros(1, 16, 16)])
        >>> print(feats.shape)  # 16 positions of the 4x4 bottleneck, 16 channels
        (16, 16)
    """
    layer = layer or default_feature_layer(model)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise DensemedError(f"realism features: {type(model).__name__} has no module {layer!r}")
    grabbed: list[torch.Tensor] = []
    hook = modules[layer].register_forward_hook(lambda _m, _i, out: grabbed.append(out.detach()))
    rows = []
    model.eval()
    try:
        with torch.inference_mode():
            for x in images:
                x = x if x.ndim == model_dims(model) + 2 else x[None]
                grabbed.clear()
                model(x.to(device))
                f = grabbed[0].float().cpu()
                rows.append(f.movedim(1, -1).reshape(-1, f.shape[1]).numpy())  # (B * positions, D)
    finally:
        hook.remove()
    return np.concatenate(rows).astype(np.float64)


def model_dims(model: nn.Module) -> int:
    """Spatial dimensionality of a network (its ``dims`` attribute, else that of its first convolution)."""
    dims = getattr(model, "dims", None)
    if isinstance(dims, int):
        return dims
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            return 2 if isinstance(m, nn.Conv2d) else 3
    return 2
