"""PatchGAN specifics: 30x30 scores and a 70-pixel receptive field, layer-formula count, spectral norm, features."""

from __future__ import annotations

import pytest
import torch

import densemed.nets as nets
from densemed.nets.heads import heads_of
from densemed.nets.patchgan import PatchGAN


def small(**kw) -> PatchGAN:
    torch.manual_seed(0)
    opts = {"in_channels": 4, "base_width": 4}
    opts.update(kw)
    return PatchGAN(**opts)


def test_256_input_gives_30x30_scores_by_the_conv_size_formula():
    # out = floor((S + 2 - 4) / s) + 1 with strides 2, 2, 2, 1, 1: 256 -> 128 -> 64 -> 32 -> 31 -> 30
    sizes = [256]
    for s in (2, 2, 2, 1, 1):
        sizes.append((sizes[-1] + 2 - 4) // s + 1)
    assert sizes == [256, 128, 64, 32, 31, 30]
    net = small().eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 4, 256, 256)).shape == (1, 1, 30, 30)
    assert net.output_size((256, 256)) == (30, 30)


def test_receptive_field_is_70_pixels_and_one_score_sees_exactly_70x70_inputs():
    # r = 1 + (k - 1)(1 + 2 + 4 + 8 + 8) for 4x4 kernels and strides 2, 2, 2, 1, 1
    assert small().receptive_field == 1 + 3 * (1 + 2 + 4 + 8 + 8) == 70
    net = small(norm=None).eval()  # instance norm would couple every pixel through its statistics
    x = torch.randn(1, 4, 128, 128, requires_grad=True)
    net(x)[0, 0, 6, 6].backward()
    rows, cols = x.grad.abs().sum((0, 1)).nonzero(as_tuple=True)
    # stride product 8; padding 1 at input steps 1, 2, 4, 8, 8 shifts the start by 23:
    # score i sees input rows 8i - 23 ... 8i - 23 + 69
    assert (rows.min().item(), rows.max().item()) == (8 * 6 - 23, 8 * 6 - 23 + 69)
    assert cols.max().item() - cols.min().item() + 1 == 70


def _paper_count(c_in: int, norm_params_per_channel: int) -> int:
    """C64 (bias, no norm) - C128 - C256 - C512 (norm, no bias) - 1-channel conv (bias); 4x4 kernels."""
    n = 16 * c_in * 64 + 64
    for c, w in [(64, 128), (128, 256), (256, 512)]:
        n += 16 * c * w + norm_params_per_channel * w
    return n + 16 * 512 * 1 + 1


def test_paper_discriminator_parameter_count_follows_the_layer_formula():
    with torch.device("meta"):
        net = nets.build("patchgan", in_channels=6)
    assert nets.count_parameters(net) == _paper_count(6, 2) == 2_768_705
    with torch.device("meta"):
        plain = nets.build("patchgan", in_channels=6, norm=None)
    # no norm: the three norm layers' 2 * (128 + 256 + 512) parameters become biases (1 each)
    assert nets.count_parameters(plain) == _paper_count(6, 1)


def test_spectral_norm_scales_each_weight_to_unit_largest_singular_value():
    net = small(spectral_norm=True, norm=None).train()
    x = torch.randn(2, 4, 64, 64)
    for _ in range(30):  # power iterations run once per training forward
        net(x)
    net.eval()
    convs = [b[0] for b in net.blocks] + [net.head]
    for conv in convs:
        w = conv.weight  # the normalised weight W / sigma(W)
        sigma = torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=2e-2)
        assert conv.parametrizations.weight.original.requires_grad


def test_spectral_norm_parameters_all_get_gradients():
    net = small(spectral_norm=True).train()
    net(torch.randn(2, 4, 40, 52)).mean().backward()
    names = [n for n, p in net.named_parameters() if p.grad is None]
    assert not names
    assert any("parametrizations.weight.original" in n for n, _ in net.named_parameters())


def test_inputs_below_24_pixels_are_padded_to_one_score():
    net = small().eval()
    assert net.min_size == 24  # 24 -> 12 -> 6 -> 3 -> 2 -> 1, while 23 -> 11 -> 5 -> 2 -> 1 -> 0
    with torch.no_grad():
        assert net(torch.randn(1, 4, 10, 23)).shape == (1, 1, 1, 1)
    net3 = small(dims=3).eval()
    with torch.no_grad():
        assert net3(torch.randn(1, 4, 19, 23, 32)).shape == (1, 1, 1, 1, 2)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2


def test_forward_features_returns_the_logits_and_four_hidden_activations():
    net = small().eval()
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        logits, feats = net.forward_features(x)
        torch.testing.assert_close(logits, net(x), rtol=0, atol=0)
        torch.testing.assert_close(net.features(x)[-1], feats[-1], rtol=0, atol=0)
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 32, 32), (8, 16, 16), (16, 8, 8), (32, 7, 7)]


def test_declares_a_non_dense_score_head():
    head = heads_of(small(out_channels=2))["score"]
    assert (head.channels, head.kind, head.dense) == (2, "logits", False)


def test_bad_layer_count_raises():
    with pytest.raises(ValueError, match="n_layers"):
        small(n_layers=0)
