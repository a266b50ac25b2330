"""slicewise: a 2D network on every slice of a volume equals the network run on each slice by itself."""

from __future__ import annotations

import pytest
import torch

from densemed import nets
from densemed.nets.heads import heads_of, main_head, model_inputs


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_output_equals_the_2d_network_on_each_slice(axis):
    torch.manual_seed(0)
    net = nets.build("slicewise", in_channels=2, out_channels=3, axis=axis,
                     net={"name": "unet", "base_width": 4, "depth": 2}).eval()
    x = torch.randn(2, 2, 5, 6, 7)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 3, 5, 6, 7)
        for k in range(x.shape[2 + axis]):
            ref = net.net(x.select(2 + axis, k))
            torch.testing.assert_close(y.select(2 + axis, k), ref, rtol=1e-5, atol=1e-6)


def test_segnetmri_gets_each_slice_with_its_own_kspace_and_mask():
    torch.manual_seed(0)
    net = nets.build("slicewise", in_channels=1, out_channels=3, axis=2,
                     net={"name": "segnetmri", "base_width": 2, "depth": 1, "num_blocks": 2}).eval()
    assert model_inputs(net) == ("image", "kspace", "mask") and set(heads_of(net)) == {"segmentation",
                                                                                      "reconstruction"}
    x = torch.rand(1, 1, 12, 10, 3)
    extra = net.example_inputs(x)
    assert extra["kspace"].shape == (1, 2, 12, 10, 3) and extra["mask"].shape == (1, 1, 12, 10, 3)
    with torch.no_grad(), nets.all_outputs(net):
        out = net(x, extra["kspace"], extra["mask"])
        for k in range(3):
            ref = net.net(x[..., k], extra["kspace"][..., k], extra["mask"][..., k])
            for head in ("segmentation", "reconstruction"):
                torch.testing.assert_close(out[head][..., k], ref[head], rtol=1e-5, atol=1e-6)


def test_classnseg_takes_one_label_per_slice_and_scores_each_slice():
    torch.manual_seed(0)
    net = nets.build("slicewise", in_channels=1, out_channels=2, axis=0,
                     net={"name": "classnseg", "encoder_channels": (2, 2, 4, 4, 8), "trunk_layers": 2}).train()
    assert main_head(net) == "segmentation" and not heads_of(net)["activation"].dense
    x = torch.rand(2, 1, 3, 16, 16)
    y = torch.tensor([[0, 1, 1], [1, 0, 0]])
    torch.manual_seed(1)
    out = net(x, y)
    assert out["activation"].shape == (2, 2, 3) and out["segmentation"].shape == (2, 2, 3, 16, 16)
    torch.manual_seed(1)
    ref = net.net(x.movedim(2, 1).reshape(6, 1, 16, 16), y.reshape(6))  # the same batch of six slices
    torch.testing.assert_close(out["activation"].movedim(2, 1).reshape(6, 2), ref["activation"])
    with pytest.raises(ValueError, match="one value per slice"):
        net(x, torch.tensor([0, 1]))


def test_only_a_registered_2d_network_can_be_wrapped():
    with pytest.raises(ValueError, match="not a 2D network"):
        nets.build("slicewise", net={"name": "voxresnet"})
    with pytest.raises(ValueError, match="not a 2D network"):
        nets.build("slicewise", net={"name": "slicewise"})
    with pytest.raises(ValueError, match="needs the name"):
        nets.build("slicewise", net={"base_width": 4})
