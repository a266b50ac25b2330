import pytest
import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.nets import all_outputs
from densemed.nets.voxresnet import VoxRes, VoxResNet


@pytest.mark.parametrize("size", [(19, 23, 17), (35, 51, 35)])
def test_eval_output_has_input_size_for_odd_sizes(size):
    net = nets.build("voxresnet", in_channels=1, out_channels=3, **nets.info("voxresnet").small).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *size))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, *size)


def test_aux_list_is_fused_then_four_full_size_classifiers_summing_to_fused():
    torch.manual_seed(0)
    net = VoxResNet(2, 3, width=8).eval()
    x = torch.randn(1, 2, 19, 23, 17)
    with torch.no_grad(), all_outputs(net):
        outs = net(x)
    with torch.no_grad():
        fused_eval = net(x)
    assert len(outs) == 5 and all(o.shape == (1, 3, 19, 23, 17) for o in outs)
    torch.testing.assert_close(outs[0], outs[1] + outs[2] + outs[3] + outs[4])
    torch.testing.assert_close(outs[0], fused_eval)


def test_voxres_module_is_identity_when_last_conv_is_zero():
    block = VoxRes(4).eval()
    with torch.no_grad():
        block.body[-1].weight.zero_()
        block.body[-1].bias.zero_()
        x = torch.randn(1, 4, 5, 6, 7)
        torch.testing.assert_close(block(x), x)


def test_paper_width_parameter_count():
    # conv1a/b (3->32->32), 3 strided convs + 6 VoxRes (64), BN, 4 classifiers to 4 classes
    with torch.device("meta"):
        net = nets.build("voxresnet")
    conv = lambda i, o, k: i * o * k**3 + o  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    expected = (
        conv(3, 32, 3) + bn(32) + conv(32, 32, 3) + bn(32)
        + conv(32, 64, 3) + 2 * 2 * conv(64, 64, 3)  # conv1c, VoxRes2-3
        + 2 * (conv(64, 64, 3) + 2 * 2 * conv(64, 64, 3))  # conv4, VoxRes5-6; conv7, VoxRes8-9
        + 6 * 2 * bn(64) + 3 * bn(64)
        + conv(32, 4, 1) + conv(64, 4, 4) + conv(64, 4, 8) + conv(64, 4, 16)
    )
    assert nets.count_parameters(net) == expected


def test_one_step_reduces_deep_supervision_loss_on_fixed_batch(one_step_lowers):
    torch.manual_seed(0)
    net = nets.build("voxresnet", in_channels=1, out_channels=3, **nets.info("voxresnet").small).train()
    x = torch.randn(2, 1, 16, 16, 16)
    y = (x > 0.3).long().squeeze(1) + (x > 1.0).long().squeeze(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss_fn():
        return sum(F.cross_entropy(o, y) for o in net(x))

    one_step_lowers(loss_fn, opt)
