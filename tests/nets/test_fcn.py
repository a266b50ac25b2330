"""FCN-32s/16s/8s specifics: parameter counts, bilinear upsampling init, VGG16 weight loading, overfit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.blocks.vgg import VGG16Features, load_vgg16_weights
from densemed.errors import DensemedError
from densemed.nets.fcn import FCN, bilinear_kernel, bilinear_upsampler

SMALL = {"base_width": 4, "fc_width": 16}
#: torchvision vgg16().features indices of the 13 convolutions (ReLU and MaxPool in between).
TV_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
#: torchvision vgg16_bn().features indices of the 13 convolutions (each followed by BN at +1).
TV_BN_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
CONV_WIDTHS = [1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8]  # multiples of base_width


def test_fcn8s_parameter_count_matches_paper_134M():
    with torch.device("meta"):
        net = nets.build("fcn8s", in_channels=3, out_channels=21)
    n = nets.count_parameters(net)
    # Every trainable parameter is counted: VGG16 conv1-5 (14,714,688), fc6 7x7 (102,764,544),
    # fc7 1x1 (16,781,312), score_fr (86,037), score_pool4 (10,773), score_pool3 (5,397) and the
    # three learned bilinear-initialised transposed convolutions without bias
    # (21*21*4*4 * 2 + 21*21*16*16 = 127,008). The paper's Table 1 gives 134 M for FCN-VGG16.
    assert n == 134_489_759
    assert abs(n - 134e6) / 134e6 < 0.01


def test_fcn32s_and_fcn16s_parameter_counts():
    with torch.device("meta"):
        n32 = nets.count_parameters(nets.build("fcn32s", in_channels=3, out_channels=21))
        n16 = nets.count_parameters(nets.build("fcn16s", in_channels=3, out_channels=21))
    # 32s: conv + fc + score_fr (134,346,581) + one 64x64 transposed conv (21*21*64*64 = 1,806,336)
    assert n32 == 134_346_581 + 1_806_336
    # 16s: + score_pool4 (10,773) + 2x (7,056) + 32x32 (451,584)
    assert n16 == 134_346_581 + 10_773 + 7_056 + 451_584


def test_bilinear_kernel_values_for_factor_2():
    k = bilinear_kernel(2, 1)[0, 0]
    w = torch.tensor([0.25, 0.75, 0.75, 0.25])  # 1 - |i - 1.5| / 2
    torch.testing.assert_close(k, w[:, None] * w[None, :])


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsampler_maps_constant_to_constant_in_interior(factor):
    up = bilinear_upsampler(3, factor)
    x = torch.full((1, 3, 5, 4), 2.5)
    y = up(x)
    assert y.shape == (1, 3, 5 * factor, 4 * factor)
    h = factor // 2  # the first/last half-pixel of outputs sees only one input row
    torch.testing.assert_close(y[..., h:-h, h:-h], torch.full_like(y[..., h:-h, h:-h], 2.5))


def test_bilinear_upsampler_equals_interpolate_in_interior():
    up = bilinear_upsampler(2, 4)
    x = torch.randn(1, 2, 6, 7)
    with torch.no_grad():
        y = up(x)
    ref = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], rtol=1e-5, atol=1e-5)


def test_skip_scorers_start_at_zero_so_fcn8s_starts_as_fcn32s_path():
    net = FCN(1, 2, "8s", **SMALL)
    assert net.score_pool4.weight.abs().sum() == 0 and net.score_pool3.weight.abs().sum() == 0


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_output_size_equals_input_size(name):
    net = nets.build(name, in_channels=1, out_channels=3, **SMALL).eval()
    for size in [(97, 131), (300, 200)]:
        with torch.no_grad():
            assert net(torch.randn(1, 1, *size)).shape == (1, 3, *size)


def test_gradient_reaches_first_layer():
    net = nets.build("fcn8s", in_channels=1, out_channels=2, **SMALL)
    net(torch.randn(2, 1, 64, 64)).sum().backward()
    g = net.features[0].weight.grad
    assert g is not None and g.abs().sum() > 0


def test_fcn8s_overfits_one_batch(fit):
    torch.manual_seed(0)
    net = nets.build("fcn8s", in_channels=1, out_channels=2, base_width=8, fc_width=32, dropout=0.0)
    # 8x8-pixel blocks of random classes plus noise: learnable at FCN-8s's stride-8 resolution
    y = F.interpolate((torch.rand(2, 1, 8, 8) > 0.5).float(), scale_factor=8)
    x = y + 0.3 * torch.randn(2, 1, 64, 64)
    y = y.long().squeeze(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = fit(lambda: F.cross_entropy(net(x), y), opt, 25)
    assert losses[-1] < 0.7 * losses[0]


def _fabricated_vgg16(base: int, fc: int, in_ch: int = 3, bn: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    c = in_ch
    for idx, m in zip(TV_BN_CONVS if bn else TV_CONVS, CONV_WIDTHS):
        w = base * m
        sd[f"features.{idx}.weight"] = torch.randn(w, c, 3, 3, generator=g)
        sd[f"features.{idx}.bias"] = torch.randn(w, generator=g)
        if bn:
            for k in ("weight", "bias", "running_mean"):
                sd[f"features.{idx + 1}.{k}"] = torch.randn(w, generator=g)
            sd[f"features.{idx + 1}.running_var"] = torch.rand(w, generator=g) + 0.5
            sd[f"features.{idx + 1}.num_batches_tracked"] = torch.tensor(7)
        c = w
    sd["classifier.0.weight"] = torch.randn(fc, 8 * base * 7 * 7, generator=g)  # flattened (C, 7, 7)
    sd["classifier.0.bias"] = torch.randn(fc, generator=g)
    sd["classifier.3.weight"] = torch.randn(fc, fc, generator=g)
    sd["classifier.3.bias"] = torch.randn(fc, generator=g)
    sd["classifier.6.weight"] = torch.randn(1000, fc, generator=g)  # ImageNet classifier: ignored
    return sd


def test_vgg16_state_dict_from_file_lands_in_encoder_and_fc_layers(tmp_path):
    sd = _fabricated_vgg16(4, 16)
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    net = nets.build("fcn8s", in_channels=3, out_channels=2, encoder_weights=str(path), **SMALL)
    torch.testing.assert_close(net.features[0].weight, sd["features.0.weight"])
    torch.testing.assert_close(net.features[28].bias, sd["features.28.bias"])  # conv5_3
    torch.testing.assert_close(net.features[19].weight, sd["features.19.weight"])  # conv4_2
    # fc6: row f of the (F, 25088)-style matrix is filter f laid out as (C, 7, 7)
    torch.testing.assert_close(net.fc6.weight[3, 5, 2, 6], sd["classifier.0.weight"][3, 5 * 49 + 2 * 7 + 6])
    torch.testing.assert_close(net.fc7.weight[:, :, 0, 0], sd["classifier.3.weight"])
    torch.testing.assert_close(net.fc7.bias, sd["classifier.3.bias"])


def test_vgg16_rgb_filters_are_summed_for_grey_input():
    sd = _fabricated_vgg16(4, 16)
    net = FCN(1, 2, "8s", encoder_weights=None, **SMALL)
    load_vgg16_weights(net.features, sd, net.fc6, net.fc7)
    torch.testing.assert_close(net.features[0].weight, sd["features.0.weight"].sum(1, keepdim=True))


def test_vgg16_bn_state_dict_loads_batch_norm_statistics():
    sd = _fabricated_vgg16(4, 16, bn=True)
    feats = VGG16Features(3, 4, norm="batch")
    load_vgg16_weights(feats, sd)
    torch.testing.assert_close(feats[41].running_var, sd["features.41.running_var"])  # bn5_3
    torch.testing.assert_close(feats[37].weight, sd["features.37.weight"])  # conv5_2


def test_vgg16_loading_errors_name_the_problem(tmp_path):
    net = FCN(3, 2, "8s", **SMALL)
    with pytest.raises(DensemedError, match="not found"):
        load_vgg16_weights(net.features, tmp_path / "nope.pth")
    bad = _fabricated_vgg16(8, 16)  # wrong width
    with pytest.raises(DensemedError, match="features.0.weight has shape"):
        load_vgg16_weights(net.features, bad, net.fc6, net.fc7)
    missing = _fabricated_vgg16(4, 16)
    del missing["classifier.3.bias"]
    with pytest.raises(DensemedError, match="missing classifier.3.bias"):
        load_vgg16_weights(net.features, missing, net.fc6, net.fc7)

