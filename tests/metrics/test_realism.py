"""Realism scores: radial spectrum, spectral distance, Fréchet distance, encoder features."""

import numpy as np
import pytest
import scipy.linalg
import torch

from densemed.errors import DensemedError
from densemed.metrics.realism import (
    encoder_features,
    frechet_distance,
    radial_spectrum,
    spectral_distance,
)
from densemed.nets.unet import UNet


def test_radial_spectrum_of_a_single_cosine_has_all_power_in_its_ring():
    # cos(2 pi 4 x / 32): frequency 4/32 = 0.125 cycles/pixel, ring 4 of 16 (0.125 in (0.09375, 0.125])
    n = 32
    x = np.cos(2 * np.pi * 4 * np.arange(n) / n)[None, None].repeat(n, axis=1)  # (1, 32, 32)
    spec = radial_spectrum(x, n_bins=16)
    ring = 3  # edges 0.09375 .. 0.125
    # Parseval: total power sum |X|^2 / N = N * mean(x^2) = 1024 * 0.5, over the 2 frequencies (+-4, 0)
    total = n * n * 0.5
    k = np.fft.fftfreq(n)
    grid = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    in_ring = ((grid > 0.09375) & (grid <= 0.125)).sum()
    assert spec[ring] == pytest.approx(total / in_ring)
    others = np.delete(spec, ring)
    assert np.nanmax(others) < 1e-20


def test_spectral_distance_is_zero_for_equal_sets_and_two_for_a_tenfold_amplitude():
    rng = np.random.default_rng(0)
    imgs = [rng.normal(size=(1, 24, 24)) for _ in range(3)]
    assert spectral_distance(imgs, imgs) == pytest.approx(0.0, abs=1e-12)
    # x10 amplitude = x100 power in every ring: |log10 100| = 2
    assert spectral_distance([10 * x for x in imgs], imgs) == pytest.approx(2.0)


def test_spectral_distance_sees_blur():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(1)
    imgs = [rng.normal(size=(1, 32, 32)) for _ in range(2)]
    blurred = [ndi.gaussian_filter(x, (0, 2, 2)) for x in imgs]
    assert spectral_distance(blurred, imgs) > 1.0


def test_frechet_distance_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4))
    b = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 4)) + 1.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * np.real(scipy.linalg.sqrtm(ca @ cb)))
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    # one-dimensional: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2, here from exact sample moments
    a = np.array([[-1.0], [1.0]])  # mean 0, sample variance 2
    b = np.array([[2.0], [4.0], [6.0]])  # mean 4, sample variance 4
    assert frechet_distance(a, b) == pytest.approx(16 + (np.sqrt(2) - 2) ** 2)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_refuses_mismatched_features():
    with pytest.raises(DensemedError, match="equal D"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))


def test_encoder_features_are_the_bottleneck_activations_one_row_per_position():
    torch.manual_seed(0)
    net = UNet(1, 2, depth=2, base_width=4).eval()
    x = torch.randn(1, 20, 24)
    feats = encoder_features(net, [x, x])
    # bottleneck of depth 2: 16 channels at (20/4, 24/4) = (5, 6) positions, twice
    assert feats.shape == (2 * 30, 16)
    with torch.no_grad():
        h = net.encoders[0](x[None])
        h = net.encoders[1](net.pool(h))
        h = net.encoders[2](net.pool(h))
    ref = h[0].permute(1, 2, 0).reshape(-1, 16).numpy()
    np.testing.assert_allclose(feats[:30], ref, rtol=1e-5, atol=1e-6)


def test_encoder_features_refuse_an_unknown_layer():
    with pytest.raises(DensemedError, match="no module"):
        encoder_features(UNet(1, 2, depth=2, base_width=4), [torch.zeros(1, 8, 8)], layer="decoder.9")
