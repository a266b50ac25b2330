"""k-space simulation: mask rate and centre, FFT convention against an explicit DFT, zero filling, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from densemed.data import kspace as ks
from densemed.errors import DensemedError


def _centred_dft(x: np.ndarray) -> np.ndarray:
    """Explicit unitary DFT with the zero frequency and the origin at index n // 2 on both axes."""

    def matrix(n: int) -> np.ndarray:
        u = np.arange(n) - n // 2
        return np.exp(-2j * np.pi * np.outer(u, u) / n) / math.sqrt(n)

    return matrix(x.shape[0]) @ x @ matrix(x.shape[1]).T


@pytest.mark.parametrize("shape", [(8, 6), (7, 9), (5, 5)])
def test_fft2c_equals_explicit_centred_unitary_dft_and_numpy_convention(shape, rng):
    x = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    k = ks.fft2c(x)
    np.testing.assert_allclose(k, _centred_dft(x), atol=1e-12)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))
    np.testing.assert_allclose(k, ref, atol=1e-12)
    np.testing.assert_allclose(ks.ifft2c(k), x, atol=1e-12)


def test_zero_frequency_is_at_the_centre_and_scaled_by_one_over_sqrt_n():
    x = np.arange(12.0).reshape(3, 4)  # sum 66, 12 pixels
    k = ks.kspace(x)
    assert k[1, 2] == pytest.approx(66 / math.sqrt(12))
    # Parseval: the orthonormal transform keeps the energy
    assert np.sum(np.abs(k) ** 2) == pytest.approx(np.sum(x**2))


def test_torch_fft_equals_numpy_fft_on_batched_tensors(rng):
    x = rng.normal(size=(2, 3, 6, 7))
    k_t = ks.fft2c(torch.from_numpy(x))
    np.testing.assert_allclose(k_t.numpy(), ks.fft2c(x), atol=1e-12)
    np.testing.assert_allclose(ks.ifft2c(k_t).numpy(), ks.ifft2c(ks.fft2c(x)), atol=1e-12)


@pytest.mark.parametrize(("h", "rate", "center"), [(64, 0.25, 0.08), (37, 0.3, 0.1), (10, 0.15, 0.0), (20, 1.0, 0.08)])
def test_mask_rate_within_one_line_and_rows_are_whole_lines(h, rate, center):
    m = ks.cartesian_mask((h, 11), rate, center, seed=3)
    assert m.shape == (h, 11) and m.dtype == np.float32
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert (m == m[:, :1]).all()  # phase-encoding rows are sampled whole
    lines = m[:, 0].sum()
    assert abs(lines - rate * h) <= 1.0
    assert lines == math.floor(rate * h + 0.5)


def test_centre_rows_are_fully_sampled():
    h = 50  # 8 % of 50 = 4 centre rows: 23, 24, 25, 26 (25 = zero frequency)
    for seed in range(5):
        m = ks.cartesian_mask((h, 8), 0.25, 0.08, seed=seed)
        assert m[23:27].all()


def test_centre_never_exceeds_the_requested_line_count():
    m = ks.cartesian_mask((40, 4), rate=0.05, center_fraction=0.5, seed=0)
    assert m[:, 0].sum() == 2 and m[19:21].all()


def test_mask_is_identical_for_a_seed_and_redrawn_for_another():
    a = ks.cartesian_mask((64, 64), seed=7)
    b = ks.cartesian_mask((64, 64), seed=7)
    c = ks.cartesian_mask((64, 64), seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    gen = np.random.default_rng(0)
    assert not np.array_equal(ks.cartesian_mask((64, 64), seed=gen), ks.cartesian_mask((64, 64), seed=gen))


def test_fully_sampled_mask_gives_zero_filled_equal_to_the_image(rng):
    x = rng.random((23, 18)).astype(np.float32)
    np.testing.assert_allclose(ks.zero_filled(ks.kspace(x), np.ones_like(x)), x, atol=1e-6)
    s = ks.simulate(x, rate=1.0, seed=0)
    np.testing.assert_allclose(s["image"][0], x, atol=1e-6)
    np.testing.assert_allclose(s["image"][1], 0.0, atol=1e-6)
    np.testing.assert_array_equal(s["target"], np.stack([x, np.zeros_like(x)]))


def test_simulate_sample_holds_masked_kspace_of_the_image_and_its_zero_filling(rng):
    x = rng.random((16, 12))
    s = ks.simulate(x[None], rate=0.25, center_fraction=0.08, seed=5)
    assert {k: v.shape for k, v in s.items()} == {
        "image": (2, 16, 12), "kspace": (2, 16, 12), "mask": (1, 16, 12), "target": (2, 16, 12)
    }
    assert all(v.dtype == np.float32 for v in s.values())
    mask = s["mask"][0]
    np.testing.assert_array_equal(mask, ks.cartesian_mask((16, 12), 0.25, 0.08, seed=5))
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho")) * mask
    np.testing.assert_allclose(s["kspace"][0] + 1j * s["kspace"][1], ref, atol=1e-5)
    zf = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(ref), norm="ortho"))
    np.testing.assert_allclose(s["image"][0] + 1j * s["image"][1], zf, atol=1e-5)
    mag = ks.simulate(x, rate=0.25, seed=5, input_mode="magnitude")
    np.testing.assert_allclose(mag["image"][0], np.abs(zf), atol=1e-5)
    np.testing.assert_allclose(mag["target"][0], x, atol=1e-6)


def test_channel_round_trip_numpy_and_torch(rng):
    z = rng.normal(size=(3, 5)) + 1j * rng.normal(size=(3, 5))
    np.testing.assert_allclose(ks.channels_to_complex(ks.complex_to_channels(z)), z)
    zt = torch.from_numpy(z)[None]
    ch = ks.complex_to_channels(zt)
    assert ch.shape == (1, 2, 3, 5)
    torch.testing.assert_close(ks.channels_to_complex(ch), zt)
    np.testing.assert_allclose(ks.complex_to_channels(z, "magnitude")[0], np.abs(z))


def test_rgb_image_is_rejected_with_a_clear_message():
    with pytest.raises(DensemedError, match="needs single-channel \\(magnitude\\) images, got 3 channels"):
        ks.simulate(np.zeros((3, 8, 8)))


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_rate_outside_zero_one_is_rejected(rate):
    with pytest.raises(DensemedError, match=r"rate: the sampling rate must be in \(0, 1\]"):
        ks.simulate(np.zeros((8, 8)), rate=rate)
    with pytest.raises(DensemedError, match="data.kspace.rate"):
        ks.cartesian_mask((8, 8), rate=rate)


def test_bad_input_mode_and_shape_are_rejected():
    with pytest.raises(DensemedError, match="input_mode"):
        ks.simulate(np.zeros((8, 8)), input_mode="phase")
    with pytest.raises(DensemedError, match="2D slice"):
        ks.simulate(np.zeros((2, 1, 8, 8)))
