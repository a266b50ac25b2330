"""DeconvNet specifics: parameter count, switch unpooling, geometry of both fc paddings, overfit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.nets.deconvnet import DeconvNet

SMALL = {"base_width": 4, "fc_width": 16}


def test_parameter_count_matches_paper_252M():
    with torch.device("meta"):
        net = nets.build("deconvnet", in_channels=3, out_channels=21)
    n = nets.count_parameters(net)
    # Counted: VGG16 conv1-5 with biases + BN (14,723,136), fc6 7x7 + BN (102,772,736),
    # fc7 + BN (16,789,504), deconv-fc6 7x7 + BN (102,761,984), the 13 mirrored 3x3 transposed
    # convolutions + BN, and the 1x1 classifier. The paper quotes 252 M.
    assert n == 251_805_653
    assert abs(n - 252e6) / 252e6 < 0.01


def test_same_and_valid_fc_padding_have_the_same_parameter_count():
    with torch.device("meta"):
        a = nets.count_parameters(DeconvNet(3, 21, fc_padding="valid"))
        b = nets.count_parameters(DeconvNet(3, 21, fc_padding="same"))
    assert a == b


def test_unpooled_map_is_nonzero_only_at_recorded_switches():
    torch.manual_seed(0)
    net = DeconvNet(1, 2, **SMALL).eval()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        pools, switches, sizes = net.features.forward_with_switches(x)
        for p, idx, size in zip(pools, switches, sizes):
            u = net.unpool(p, idx, output_size=size)  # (B, C, 2h, 2w)
            assert u.shape[2:] == size
            flat = u.flatten(2)
            mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(2, idx.flatten(2), True)
            assert not flat[~mask].any()  # zero away from the switches
            # each pooled value sits at its switch location
            torch.testing.assert_close(flat.gather(2, idx.flatten(2)), p.flatten(2))
            # exactly one location per 2x2 window
            assert mask.sum() == p.numel()


@pytest.mark.parametrize("fc_padding", ["valid", "same"])
def test_output_size_equals_input_size(fc_padding):
    net = DeconvNet(1, 3, fc_padding=fc_padding, **SMALL).eval()
    for size in [(97, 131), (256, 256)]:
        with torch.no_grad():
            assert net(torch.randn(1, 1, *size)).shape == (1, 3, *size)


def test_valid_fc6_sees_pool5_reduced_by_six():
    net = DeconvNet(1, 2, fc_padding="valid", **SMALL).eval()
    seen = {}
    net.fc6.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].shape, out=o.shape))
    with torch.no_grad():
        net(torch.zeros(1, 1, 97, 131))  # padded to 224 x 224 -> pool5 7x7 -> fc6 1x1
    assert seen["inp"][2:] == (7, 7) and seen["out"][2:] == (1, 1)


def test_gradient_reaches_first_layer():
    net = nets.build("deconvnet", in_channels=1, out_channels=2, **nets.info("deconvnet").small)
    net(torch.randn(2, 1, 64, 64)).sum().backward()
    assert net.features[0].weight.grad.abs().sum() > 0


def test_deconvnet_overfits_one_batch(fit):
    torch.manual_seed(0)
    net = DeconvNet(1, 2, base_width=4, fc_width=16, fc_padding="same")
    y = F.interpolate((torch.rand(2, 1, 4, 4) > 0.5).float(), scale_factor=8)  # blocks of classes
    x = y + 0.3 * torch.randn(2, 1, 32, 32)
    y = y.long().squeeze(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    # 40 steps: after 20 the loss sat at 0.65-0.82 of the first one depending on the CPU's float rounding
    losses = fit(lambda: F.cross_entropy(net(x), y), opt, 40)
    assert losses[-1] < 0.5 * losses[0]



def test_switch_unpooling_equals_torch_max_unpool_values_and_gradients():
    from densemed.nets.deconvnet import SwitchUnpool2d

    torch.manual_seed(1)
    for size in [(10, 14), (11, 15)]:  # an odd pre-pooling size too (its last row/column is never a switch)
        p, idx = F.max_pool2d(torch.randn(2, 3, *size), 2, 2, return_indices=True)
        a = p.clone().requires_grad_(True)
        b = p.clone().requires_grad_(True)
        ours = SwitchUnpool2d()(a, idx, size)
        ref = F.max_unpool2d(b, idx, 2, 2, output_size=size)
        torch.testing.assert_close(ours, ref, atol=0, rtol=0)
        g = torch.randn_like(ref)
        ours.backward(g)
        ref.backward(g)
        torch.testing.assert_close(a.grad, b.grad, atol=0, rtol=0)
