import pytest
import torch
from torch import nn

import densemed.nets as nets
from densemed.nets.vnet import VNet


@pytest.mark.parametrize("size", [(19, 23, 17), (35, 51, 35)])
def test_output_has_input_size_for_odd_sizes(size):
    net = nets.build("vnet", in_channels=1, out_channels=3, **nets.info("vnet").small).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *size))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, *size)


def test_training_mode_returns_one_tensor_no_aux():
    net = VNet(1, 2, base_width=4, kernel_size=3).train()
    assert isinstance(net(torch.randn(2, 1, 16, 16, 16)), torch.Tensor)


def test_paper_layout_5x5x5_convs_per_stage_prelu_strided_down_transposed_up():
    with torch.device("meta"):
        net = VNet(1, 2)
    stage_convs = lambda stage: [m for m in stage.modules() if isinstance(m, nn.Conv3d)]  # noqa: E731
    first = 1 + (0 if net.first_rest is None else len(stage_convs(net.first_rest)))
    left = [first] + [len(stage_convs(s)) for s in net.left]
    right = [len(stage_convs(s)) for s in net.right]
    assert left == [1, 2, 3, 3, 3]  # 4 left stages + the bottom stage
    assert right == [3, 3, 2, 1]
    assert all(c.kernel_size == (5, 5, 5) for s in [*net.left, *net.right] for c in stage_convs(s))
    widths = [s.convs[0][0].out_channels for s in net.left]
    assert widths == [32, 64, 128, 256]
    assert [s.convs[0][0].out_channels for s in net.right] == [256, 128, 64, 32]
    for d in net.down:
        assert d[0][0].kernel_size == (2, 2, 2) and d[0][0].stride == (2, 2, 2)
    assert all(isinstance(u[0], nn.ConvTranspose3d) and u[0].stride == (2, 2, 2) for u in net.up)
    assert not any(isinstance(m, (nn.MaxPool3d, nn.ReLU)) for m in net.modules())
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) > 20


def test_first_stage_residual_repeats_single_channel_input():
    net = VNet(1, 2, base_width=4, kernel_size=3, norm=None).eval()
    with torch.no_grad():
        for p in net.stem.parameters():
            p.zero_()
        x = torch.rand(1, 1, 4, 4, 4)  # positive, so PReLU is the identity
        h = net._first_stage(x)
    torch.testing.assert_close(h, x.repeat(1, 4, 1, 1, 1))


def soft_dice_loss(logits, y):
    p = logits.softmax(1)[:, 1]
    g = (y == 1).float()
    return 1 - 2 * (p * g).sum() / ((p * p).sum() + (g * g).sum())


def test_one_step_reduces_dice_loss_on_fixed_batch(one_step_lowers):
    torch.manual_seed(0)
    net = nets.build("vnet", in_channels=1, out_channels=2, **nets.info("vnet").small).train()
    x = torch.randn(2, 1, 16, 16, 16)
    y = (x[:, 0] > 0.5).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    one_step_lowers(lambda: soft_dice_loss(net(x), y), opt)


def test_rejects_2d():
    with pytest.raises(ValueError, match="3D only"):
        nets.build("vnet", dims=2)


def _convs5(net):
    return sum(1 for m in net.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (5, 5, 5))


def test_stage_convs_set_the_number_of_5x5x5_convolutions():
    from densemed.nets.vnet import MONAI_STAGE_CONVS, PAPER_STAGE_CONVS

    assert _convs5(VNet(1, 2, base_width=4)) == sum(PAPER_STAGE_CONVS) == 21
    assert _convs5(VNet(1, 2, base_width=4, stage_convs=MONAI_STAGE_CONVS)) == sum(MONAI_STAGE_CONVS) == 15
    with pytest.raises(ValueError, match="stage_convs"):
        VNet(1, 2, stage_convs=(1, 2, 3))


def test_monai_stage_counts_give_monais_vnet_size_up_to_its_extra_output_conv():
    monai_nets = pytest.importorskip("monai.networks.nets")
    from densemed.nets.vnet import MONAI_STAGE_CONVS

    ours = nets.build("vnet", stage_convs=MONAI_STAGE_CONVS)
    ref = monai_nets.VNet(3, 1, 2, act="prelu", dropout_prob_down=None, dropout_prob_up=(None, 0.0))
    n_ours, n_ref = (sum(p.numel() for p in m.parameters()) for m in (ours, ref))
    # equal up to MONAI's extra 5x5x5 output conv (32 -> 2 channels, 8,000 weights) and biases;
    # the paper's counts would be 43% larger
    assert abs(n_ref - n_ours) < 3e-4 * n_ref
