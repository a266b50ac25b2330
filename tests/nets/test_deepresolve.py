import pytest
import torch
from torch import nn

import densemed.nets as nets
from densemed.nets import all_outputs
from densemed.nets.deepresolve import DeepResolve


@pytest.mark.parametrize("size", [(19, 23, 17), (35, 51, 35)])
def test_output_has_input_size_for_odd_sizes(size):
    net = nets.build("deepresolve", **nets.info("deepresolve").small).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *size))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 1, *size)


def test_paper_defaults_20_layers_64_filters_parameter_count():
    with torch.device("meta"):
        net = nets.build("deepresolve")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 20 and all(c.kernel_size == (3, 3, 3) for c in convs)
    # 1->64, 18 x 64->64, 64->1, each with bias
    assert nets.count_parameters(net) == (27 * 64 + 64) + 18 * (27 * 64 * 64 + 64) + (27 * 64 + 1)
    assert nets.count_parameters(net) == 1_995_329


def test_untrained_default_is_identity_global_residual():
    net = DeepResolve(depth=3, width=8)  # zero_init_last=True by default
    x = torch.randn(2, 1, 7, 9, 5)
    torch.testing.assert_close(net(x), x)
    with all_outputs(net):  # no auxiliary outputs in any mode
        assert isinstance(net.train()(x), torch.Tensor)


def test_output_is_input_plus_predicted_residual():
    torch.manual_seed(0)
    net = DeepResolve(depth=3, width=8, zero_init_last=False).eval()
    x = torch.randn(1, 1, 6, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), x + net.residual(x))


def test_one_step_reduces_mse_on_fixed_batch(one_step_lowers):
    torch.manual_seed(0)
    net = nets.build("deepresolve", **nets.info("deepresolve").small)
    x = torch.randn(2, 1, 12, 12, 12)
    y = x + 0.5 * torch.tanh(x)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    one_step_lowers(lambda: nn.functional.mse_loss(net(x), y), opt)
