"""The general multi-task network: dict of heads in training, main head in eval."""

from __future__ import annotations

import pytest
import torch

import densemed.nets as nets
from densemed.nets.multitask import MultiTaskUNet


def test_train_mode_returns_every_task_at_input_size():
    net = nets.build("multitask", in_channels=3, out_channels=2, tasks={"mask": None, "contour": 2, "dist": 1},
                     base_width=4, depth=2).train()
    out = net(torch.randn(2, 3, 19, 26))
    assert list(out) == ["mask", "contour", "dist"]
    assert out["mask"].shape == (2, 2, 19, 26) and out["dist"].shape == (2, 1, 19, 26)


def test_eval_returns_the_main_head_and_all_outputs_the_dict():
    torch.manual_seed(0)
    net = MultiTaskUNet(1, {"mask": 3, "contour": 2}, out_channels=3, main="mask", depth=2, base_width=4).eval()
    x = torch.randn(1, 1, 16, 20)
    main = net(x)
    with nets.all_outputs(net):
        both = net(x)
    assert torch.equal(main, both["mask"]) and both["contour"].shape == (1, 2, 16, 20)
    assert net.main_head == "mask"


def test_main_channels_must_match_out_channels():
    with pytest.raises(ValueError, match="out_channels"):
        MultiTaskUNet(1, {"mask": 2, "contour": 2}, out_channels=3)
    with pytest.raises(ValueError, match="main (task|head)"):
        MultiTaskUNet(1, {"mask": 2}, main="contour")


def test_tasks_share_the_encoder_and_have_their_own_decoder():
    net = MultiTaskUNet(1, {"a": 2, "b": 2}, depth=2, base_width=4).train()
    out = net(torch.randn(2, 1, 16, 16))
    out["a"].sum().backward()  # a loss on task a reaches the encoder but not decoder b
    assert all(p.grad is not None for p in net.encoder.parameters())
    assert all(p.grad is None for p in net.decoders["b"].parameters())


def test_3d_outputs_and_one_task_is_exactly_the_unet():
    net = nets.build("multitask", in_channels=1, out_channels=2, dims=3, base_width=2, depth=2).train()
    assert net(torch.randn(1, 1, 5, 6, 7))["contour"].shape == (1, 2, 5, 6, 7)
    with torch.device("meta"):
        unet = nets.build("unet", in_channels=1, out_channels=2)
        one = nets.build("multitask", in_channels=1, out_channels=2, tasks={"mask": None})
    # counts from the layer formula: test_parameter_counts.py
    assert nets.count_parameters(one) == nets.count_parameters(unet)
