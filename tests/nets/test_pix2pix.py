"""pix2pix generator specifics: sizes, the layer formula's parameter count, one L1 step, dropout noise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.nets.heads import heads_of
from densemed.nets.pix2pix import Pix2PixGenerator


def small(**kw) -> Pix2PixGenerator:
    torch.manual_seed(0)
    opts = {"in_channels": 3, "out_channels": 1, "depth": 4, "base_width": 4, "max_width": 16}
    opts.update(kw)
    return Pix2PixGenerator(**opts)


@pytest.mark.parametrize(("dims", "size"), [(2, (37, 53)), (2, (16, 16)), (3, (19, 23, 17))])
def test_output_has_the_condition_size_for_odd_and_even_sizes(dims, size):
    net = small(dims=dims, depth=3).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, *size))
    assert y.shape == (2, 1, *size)


def test_declares_one_image_head_with_out_channels():
    heads = heads_of(small(out_channels=3))
    assert list(heads) == ["image"] and heads["image"].channels == 3 and heads["image"].kind == "image"


def _paper_count(c_in: int, c_out: int, norm_params_per_channel: int) -> int:
    """pix2pix appendix 6.1.1: C64-C128-C256-C512-C512-C512-C512-C512 / CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128.

    4x4 kernels (16 weights per channel pair); a bias only where no norm follows (first and innermost
    down convolution, last up convolution); a norm (2 parameters per channel) everywhere else.
    """
    enc = [64, 128, 256, 512, 512, 512, 512, 512]
    n, c = 0, c_in
    for i, w in enumerate(enc):
        normed = 0 < i < len(enc) - 1
        n += 16 * c * w + (norm_params_per_channel * w if normed else w)
        c = w
    for i in range(len(enc) - 1, 0, -1):  # up convolutions to enc[i - 1], input enc[i] or its concatenation
        c_up = enc[i] if i == len(enc) - 1 else 2 * enc[i]
        n += 16 * c_up * enc[i - 1] + norm_params_per_channel * enc[i - 1]
    return n + 16 * 2 * enc[0] * c_out + c_out


def test_paper_generator_parameter_count_follows_the_layer_formula():
    with torch.device("meta"):
        net = nets.build("pix2pix_generator", in_channels=3, out_channels=3)
    expected = _paper_count(3, 3, 2)
    assert nets.count_parameters(net) == expected
    assert abs(expected - 54.41e6) / 54.41e6 < 1e-3  # the 54.4 M of the authors' unet_256


def test_paper_depth_reaches_one_pixel_at_the_bottom_for_256():
    net = Pix2PixGenerator(3, 1, depth=8, base_width=2, max_width=8).eval()
    seen = {}
    net.down[-1].register_forward_hook(lambda m, i, o: seen.update(bottom=o.shape))
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 256, 256)
    assert seen["bottom"] == (1, 8, 1, 1)


def test_one_adam_step_lowers_the_l1_to_the_real_image_on_a_fixed_batch(one_step_lowers):
    net = small().train()
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(2, 3, 32, 32, generator=g)
    real = torch.randn(2, 1, 32, 32, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))  # pix2pix's optimiser

    def l1() -> torch.Tensor:
        torch.manual_seed(7)  # the same dropout masks before and after the step
        return F.l1_loss(net(cond), real)

    one_step_lowers(l1, opt)


def test_eval_is_deterministic_and_generate_adds_seeded_dropout_noise():
    net = small().eval()
    cond = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        plain = net(cond)
        torch.testing.assert_close(net(cond), plain, rtol=0, atol=0)
        a = net.generate(cond, torch.Generator().manual_seed(0))
        b = net.generate(cond, torch.Generator().manual_seed(0))
        c = net.generate(cond, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-4 and (a - plain).abs().max() > 1e-4
    assert not net.stochastic  # the flag is restored after generate


def test_without_dropout_levels_generation_equals_the_eval_output():
    net = small(dropout_levels=0).eval()
    cond = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(net.generate(cond, torch.Generator().manual_seed(0)), net(cond), rtol=0, atol=0)


def test_output_scale_is_a_scaled_tanh_of_the_linear_output():
    cond = torch.randn(1, 3, 24, 24) * 4
    linear, bounded = small().eval(), small(output_scale=0.5).eval()
    with torch.no_grad():
        y, z = linear(cond), bounded(cond)
    torch.testing.assert_close(z, 0.5 * torch.tanh(y / 0.5))
    assert z.abs().max() <= 0.5


def test_batch_norm_and_no_norm_variants_run():
    for norm in ("batch", None):
        net = small(norm=norm).train()
        assert net(torch.randn(2, 3, 20, 20)).shape == (2, 1, 20, 20)


@pytest.mark.parametrize("kw", [{"depth": 1}, {"dropout": 1.0}, {"output_scale": 0.0}])
def test_bad_options_raise(kw):
    with pytest.raises(ValueError):
        small(**kw)
