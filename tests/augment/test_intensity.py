"""Intensity transforms: hand-computed values, scipy reference for blur, image-only, per-sample draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from densemed.augment import (
    Blur,
    Brightness,
    Contrast,
    Gamma,
    Noise,
    RandomBlur,
    RandomBrightness,
    RandomContrast,
    RandomGamma,
    RandomNoise,
    build,
)


def test_brightness_adds_per_sample_offsets() -> None:
    x = torch.zeros(2, 1, 2, 2)
    y = Brightness(torch.tensor([0.5, -0.25]))(x)
    assert torch.equal(y[0], torch.full((1, 2, 2), 0.5)) and torch.equal(y[1], torch.full((1, 2, 2), -0.25))


def test_contrast_scales_about_channel_mean() -> None:
    x = torch.tensor([[[[1.0, 3.0]], [[10.0, 20.0]]]])  # (1, 2, 1, 2): channel means 2 and 15
    y = Contrast(torch.tensor([0.5]))(x)
    assert torch.allclose(y, torch.tensor([[[[1.5, 2.5]], [[12.5, 17.5]]]]))


def test_gamma_keeps_range_and_matches_power_law() -> None:
    x = torch.tensor([[[[-1.0, 0.0, 1.0, 3.0]]]])  # lo -1, hi 3
    y = Gamma(torch.tensor([2.0]))(x)
    expect = -1 + 4 * (torch.tensor([0.0, 0.25, 0.5, 1.0]) ** 2)
    assert torch.allclose(y.flatten(), expect)


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_equals_scipy_gaussian_filter(dims: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, *([20] * dims), generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.0, 1.3])
    y = Blur(sigma)(x)
    assert torch.equal(y[0], x[0])
    for c in range(2):
        ref = ndimage.gaussian_filter(x[1, c].numpy(), 1.3, mode="mirror", truncate=4 / 1.3)
        assert np.allclose(y[1, c].numpy(), ref, atol=1e-10)


def test_noise_statistics_and_seed() -> None:
    x = torch.zeros(3, 1, 64, 64)
    n = Noise(torch.tensor([0.0, 0.5, 2.0]), seed=7)
    y = n(x)
    assert torch.equal(y[0], x[0])
    assert abs(float(y[1].std()) - 0.5) < 0.03 and abs(float(y[2].std()) - 2.0) < 0.1
    assert torch.equal(Noise(torch.tensor([0.0, 0.5, 2.0]), seed=7)(x), y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_intensity_keeps_dtype_and_touches_only_the_image(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(4, 1, 16, 16, generator=g).to(dtype),
        "label": torch.randint(0, 2, (4, 1, 16, 16), generator=g),
        "weights": torch.rand(4, 1, 16, 16, generator=g),
    }
    aug = build({k: {"p": 1.0} for k in ("noise", "blur", "brightness", "contrast", "gamma")})
    out = aug(batch, torch.Generator().manual_seed(1))
    assert out["image"].dtype == dtype and torch.isfinite(out["image"].float()).all()
    assert not torch.allclose(out["image"].float(), batch["image"].float())
    assert out["label"] is batch["label"] and out["weights"] is batch["weights"]


@pytest.mark.parametrize(
    "random",
    [RandomNoise(0.5), RandomBlur(0.5), RandomBrightness(0.5), RandomContrast(0.5), RandomGamma(0.5)],
    ids=lambda t: type(t).__name__,
)
def test_probability_selects_samples(random: object) -> None:
    x = torch.rand(1, 1, 12, 12).expand(40, 1, 12, 12).contiguous()
    y = random.sample(40, torch.Generator().manual_seed(0))(x)  # type: ignore[attr-defined]
    changed = (y != x).flatten(1).any(1)
    assert 8 < int(changed.sum()) < 32  # about half of 40
    never = type(random)(0.0).sample(40, torch.Generator().manual_seed(0))(x)  # type: ignore[call-arg]
    assert torch.equal(never, x)
