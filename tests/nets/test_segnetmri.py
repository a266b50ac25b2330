"""SegNetMRI: the data-consistency layer (exact, hand-checked, gradcheck), outputs, parameter count, overfit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.data import kspace as ks
from densemed.nets.segnetmri import DataConsistency, SegNetMRI

SQRT2 = math.sqrt(2.0)


def _complex(x: torch.Tensor) -> torch.Tensor:
    return torch.complex(x[:, 0], x[:, 1])


def _measurement(h: int, w: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """kspace (1, 2, H, W) of a random real image, measured on a random mask (1, 1, H, W)."""
    s = ks.simulate(np.random.default_rng(seed).random((h, w)), rate=0.3, center_fraction=0.1, seed=seed)
    return torch.from_numpy(s["kspace"])[None].to(dtype), torch.from_numpy(s["mask"])[None].to(dtype)


@pytest.mark.parametrize("nu", [None, float("inf")])
def test_infinite_nu_makes_the_kspace_equal_the_measurements_on_the_mask(nu):
    k0, mask = _measurement(12, 10, seed=1)
    x = torch.randn(1, 2, 12, 10)
    out = DataConsistency(nu)(x, k0, mask)
    k_out, on = ks.fft2c(_complex(out)), mask[:, 0].bool()
    torch.testing.assert_close(k_out[on], _complex(k0)[on], atol=1e-5, rtol=0)
    # off the mask the prediction's own k-space is kept
    torch.testing.assert_close(k_out[~on], ks.fft2c(_complex(x))[~on], atol=1e-5, rtol=0)


def test_finite_nu_hand_checked_on_a_two_pixel_image():
    # image (1, 3) as a column: centred DFT of n=2 gives K = ((b - a)/sqrt2, (a + b)/sqrt2) = (sqrt2, 2 sqrt2);
    # only row 1 (the zero frequency) is measured.
    x = torch.tensor([[[[1.0], [3.0]], [[0.0], [0.0]]]])  # (1, 2, 2, 1): real (1, 3), imag 0
    mask = torch.tensor([[[[0.0], [1.0]]]])
    # nu = 1, k0 = 0 on the line: k_hat = (sqrt2, sqrt2) -> image (0, 2)
    k0 = torch.zeros(1, 2, 2, 1)
    out = DataConsistency(1.0)(x, k0, mask)
    torch.testing.assert_close(out, torch.tensor([[[[0.0], [2.0]], [[0.0], [0.0]]]]), atol=1e-6, rtol=0)
    # nu = 3, k0 = 4 sqrt2 on the line: k_hat(1) = (2 sqrt2 + 12 sqrt2) / 4 = 3.5 sqrt2 -> image (2.5, 4.5)
    k0[0, 0, 1, 0] = 4 * SQRT2
    out = DataConsistency(3.0)(x, k0, mask)
    torch.testing.assert_close(out, torch.tensor([[[[2.5], [4.5]], [[0.0], [0.0]]]]), atol=1e-6, rtol=0)
    # nu = 0 ignores the measurements: the image is unchanged
    torch.testing.assert_close(DataConsistency(0.0)(x, k0, mask), x, atol=1e-6, rtol=0)


def test_one_channel_input_keeps_the_real_part():
    k0, mask = _measurement(8, 6, seed=2)
    x = torch.randn(1, 1, 8, 6)
    two = DataConsistency()(torch.cat([x, torch.zeros_like(x)], 1), k0, mask)
    torch.testing.assert_close(DataConsistency()(x, k0, mask), two[:, :1])


@pytest.mark.parametrize("nu", [None, 0.7])
def test_data_consistency_gradcheck_float64(nu):
    k0, mask = _measurement(6, 5, seed=3, dtype=torch.float64)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    k0 = k0.expand(2, -1, -1, -1).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: DataConsistency(nu)(a, b, mask), (x, k0))


def test_negative_nu_and_wrong_channels_raise():
    with pytest.raises(ValueError, match="nu"):
        DataConsistency(-1.0)
    with pytest.raises(ValueError, match="input channels"):
        SegNetMRI(in_channels=3)


def test_reconstruction_output_is_consistent_with_the_measurements():
    torch.manual_seed(0)
    net = SegNetMRI(2, 3, num_blocks=2, depth=1, base_width=4).train()
    k0, mask = _measurement(13, 11, seed=4)
    zf = ks.complex_to_channels(ks.ifft2c(_complex(k0))).float()
    out = net(zf, k0, mask)
    assert out["segmentation"].shape == (1, 3, 13, 11) and out["reconstruction"].shape == (1, 2, 13, 11)
    on = mask[:, 0].bool()
    torch.testing.assert_close(ks.fft2c(_complex(out["reconstruction"]))[on], _complex(k0)[on], atol=1e-5, rtol=0)


def test_eval_returns_the_merged_segmentation_of_all_outputs():
    torch.manual_seed(0)
    net = SegNetMRI(2, 2, num_blocks=3, depth=1, base_width=4).eval()
    x = torch.randn(2, 2, 16, 12)
    extra = net.example_inputs(x)
    assert extra["kspace"].shape == (2, 2, 16, 12) and extra["mask"].shape == (2, 1, 16, 12)
    with torch.no_grad():
        y = net(x, extra["kspace"], extra["mask"])
        with nets.all_outputs(net):
            d = net(x, extra["kspace"], extra["mask"])
    assert torch.equal(y, d["segmentation"])
    assert net.merge.in_channels == 3 * 2 and net.merge.kernel_size == (1, 1)
    assert len({id(b.encoder) for b in net.blocks}) == 3  # no weight sharing across cascades


def _double_conv(cin: int, cout: int) -> int:
    return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout  # two bias-free 3x3 convs + batch norms


def _unet_encoder(cin: int, widths: list[int]) -> int:
    return sum(_double_conv(c, w) for c, w in zip([cin, *widths[:-1]], widths))


def _unet_decoder(widths: list[int], out: int) -> int:
    # per level: 2x2 transposed conv 2w -> w with bias, DoubleConv(2w, w); then a 1x1 head with bias
    levels = sum(4 * 2 * w * w + w + _double_conv(2 * w, w) for w in widths[:-1])
    return levels + widths[0] * out + out


def test_parameter_count_at_defaults_from_the_architecture():
    with torch.device("meta"):
        net = nets.build("segnetmri", in_channels=2, out_channels=2)
    c, k, widths = 2, 4, [32, 64, 128]  # defaults: 4 blocks, depth 2, base width 32
    block = _unet_encoder(c, widths) + _unet_decoder(widths, c) + _unet_decoder(widths, 2)
    merge = k * 2 * 2 + 2
    assert nets.count_parameters(net) == k * block + merge
    groups = net.parameter_groups()
    assert sum(p.numel() for p in groups["reconstruction"]) == k * (_unet_encoder(c, widths) + _unet_decoder(widths, c))


def test_overfits_one_tiny_slice_reconstruction_and_segmentation():
    torch.manual_seed(0)
    yy, xx = np.mgrid[:32, :32]
    label = ((yy - 15) ** 2 + (xx - 17) ** 2 < 64).astype(np.int64)
    image = 0.2 + 0.6 * label + 0.1 * np.sin(xx / 3.0)
    s = {k: torch.from_numpy(v)[None] for k, v in ks.simulate(image, rate=0.25, seed=0).items()}
    y = torch.from_numpy(label)[None]
    net = SegNetMRI(2, 2, num_blocks=2, depth=1, base_width=8).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def terms() -> tuple[torch.Tensor, torch.Tensor]:
        out = net(s["image"], s["kspace"], s["mask"])
        return F.mse_loss(out["reconstruction"], s["target"]), F.cross_entropy(out["segmentation"], y)

    first = sum(terms()).item()
    for _ in range(40):
        opt.zero_grad()
        mse, ce = terms()
        (mse + ce).backward()
        opt.step()
    assert (mse + ce).item() < 0.3 * first
    # the reconstruction ends better than the zero-filled input it started from
    assert mse.item() < F.mse_loss(s["image"], s["target"]).item()
    assert ce.item() < 0.1
