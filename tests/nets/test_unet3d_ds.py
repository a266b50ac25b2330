import pytest
import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.nets import all_outputs
from densemed.nets.unet import UNet
from densemed.nets.unet3d_ds import UNet3dDS


def small_net(**kw):
    return nets.build("unet3d_ds", in_channels=1, out_channels=3, **{**nets.info("unet3d_ds").small, **kw})


@pytest.mark.parametrize("size", [(19, 23, 17), (35, 51, 35)])
def test_eval_returns_one_tensor_of_input_size(size):
    net = small_net().eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *size))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, *size)


@pytest.mark.parametrize("ds_levels", [1, 2])
def test_aux_outputs_are_all_full_size_when_wanted(ds_levels):
    net = small_net(ds_levels=ds_levels).train()
    outs = net(torch.randn(2, 1, 19, 23, 17))
    assert isinstance(outs, list) and len(outs) == 1 + ds_levels
    assert all(o.shape == (2, 3, 19, 23, 17) for o in outs)
    net.eval()
    with torch.no_grad(), all_outputs(net):
        assert len(net(torch.randn(1, 1, 19, 23, 17))) == 1 + ds_levels


def test_aux_is_trilinear_upsampling_of_unet_deep_supervision_heads():
    torch.manual_seed(0)
    ours = UNet3dDS(1, 2, depth=3, base_width=4, ds_levels=2).eval()
    ref = UNet(1, 2, dims=3, depth=3, base_width=4, deep_supervision=True, ds_levels=2).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 1, 19, 23, 17)
    with torch.no_grad(), all_outputs(ours), all_outputs(ref):
        main, a1, a2 = ours(x)
        rmain, r1, r2 = ref(x)
    torch.testing.assert_close(main, rmain)
    # U-Net's aux_k is ceil(S / 2**k) voxels of the padded grid; upsample x 2**k, crop to S
    for k, (a, r) in enumerate([(a1, r1), (a2, r2)], start=1):
        assert r.shape[2:] == tuple(-(-s // 2**k) for s in (19, 23, 17))
        up = F.interpolate(r, scale_factor=2**k, mode="trilinear", align_corners=False)
        torch.testing.assert_close(a, up[:, :, :19, :23, :17])


def test_one_step_reduces_deep_supervision_loss_on_fixed_batch(one_step_lowers):
    torch.manual_seed(0)
    net = small_net().train()
    x = torch.randn(2, 1, 16, 16, 16)
    y = (x > 0.3).long().squeeze(1) + (x > 1.0).long().squeeze(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss_fn():
        return sum(w * F.cross_entropy(o, y) for w, o in zip([1.0, 0.5, 0.25], net(x)))

    one_step_lowers(loss_fn, opt)


def test_rejects_2d_and_missing_deep_supervision():
    with pytest.raises(ValueError, match="3D only"):
        nets.build("unet3d_ds", dims=2)
    with pytest.raises(ValueError, match="ds_levels"):
        UNet3dDS(ds_levels=0)
