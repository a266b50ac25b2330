"""U-Net specifics: the paper's parameter count, valid-mode overlap-tile geometry, deep supervision."""

from __future__ import annotations

import torch

import densemed.nets as nets
from densemed.nets.unet import UNet


def test_paper_unet_has_31_030_658_parameters():
    with torch.device("meta"):
        net = nets.build("unet", in_channels=1, out_channels=2, norm=None, padding="valid")
    # 23 convolutions as in Fig. 1 of Ronneberger 2015 (18 3x3, 4 2x2 up-convolutions, one 1x1)
    n = nets.count_parameters(net)
    assert n == 31_030_658
    assert abs(n - 31.0e6) / 31.0e6 < 0.01


def test_valid_mode_reproduces_paper_tile_572_to_388():
    net = UNet(1, 2, norm=None, padding="valid")
    assert net.valid_sizes(388) == (388, 572)


def test_valid_mode_output_equals_input_size():
    net = UNet(1, 2, depth=3, base_width=4, norm=None, padding="valid").eval()
    with torch.no_grad():
        for size in [(97, 131), (40, 33)]:
            assert net(torch.randn(1, 1, *size)).shape == (1, 2, *size)


def test_valid_and_same_padding_have_equal_parameter_counts():
    a = nets.count_parameters(UNet(1, 2, depth=3, base_width=4, padding="valid"))
    b = nets.count_parameters(UNet(1, 2, depth=3, base_width=4, padding="same"))
    assert a == b


def test_deep_supervision_outputs_are_main_then_halved_sizes():
    net = UNet(1, 3, depth=3, base_width=4, deep_supervision=True, ds_levels=2)
    out = net(torch.randn(2, 1, 97, 131))
    assert [tuple(o.shape) for o in out] == [(2, 3, 97, 131), (2, 3, 49, 66), (2, 3, 25, 33)]
    net.eval()
    with torch.no_grad():
        assert isinstance(net(torch.randn(1, 1, 97, 131)), torch.Tensor)
        with nets.all_outputs(net):
            assert len(net(torch.randn(1, 1, 97, 131))) == 3


def test_deep_supervision_in_3d_has_halved_sizes():
    net = UNet(1, 2, dims=3, depth=2, base_width=4, deep_supervision=True, ds_levels=1)
    out = net(torch.randn(2, 1, 19, 23, 17))
    assert [tuple(o.shape[2:]) for o in out] == [(19, 23, 17), (10, 12, 9)]
