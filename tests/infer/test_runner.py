"""Whole-image runners: every declared head as post-processing maps; main-head probabilities."""

from __future__ import annotations

import numpy as np
import torch

import densemed.nets as nets
from densemed import config
from densemed.infer.runner import network_outputs, predict_main


def test_network_outputs_gives_each_declared_head_activated_by_its_kind():
    torch.manual_seed(0)
    dcan = nets.build("dcan", in_channels=1, out_channels=2, base_width=2, depth=2, fuse_levels=2)
    x = torch.randn(1, 1, 24, 40)
    whole = network_outputs(dcan, x)
    assert set(whole) == {"foreground", "object", "contour"} and whole["foreground"].shape == (24, 40)
    with torch.no_grad(), nets.all_outputs(dcan.eval()):
        out = dcan(x)
    # logits heads: probability of the foreground class, 1 - p(background) of the fused output
    expected = 1 - torch.softmax(out["contour"][0], 1)[0, 0].numpy()
    np.testing.assert_allclose(whole["contour"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(whole["foreground"], whole["object"])
    dd = nets.build("deepdistance", in_channels=1, out_channels=2, base_width=2, depth=2)
    win = network_outputs(dd, x, window=(16, 16))
    # regression heads pass through, no foreground head without a logits main head
    assert set(win) == {"inner_distance", "outer_distance"} and win["outer_distance"].shape == (24, 40)
    unet = nets.build("unet", in_channels=1, out_channels=2, base_width=2, depth=2)
    assert set(network_outputs(unet, x)) == {"foreground", "segmentation"}


def test_foreground_of_a_three_class_head_counts_every_foreground_class():
    torch.manual_seed(0)
    unet = nets.build("unet", in_channels=1, out_channels=3, base_width=2, depth=2).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        p = torch.softmax(unet(x), 1)[0]
    got = network_outputs(unet, x)["foreground"]
    np.testing.assert_allclose(got, (p[1] + p[2]).numpy(), rtol=1e-5, atol=1e-6)


def test_predict_main_tta_uses_the_recipe_axes():
    torch.manual_seed(0)
    cfg = config.from_dict({"data": {"patch_size": [16, 16]}, "model": {"name": "unet"}})
    net = nets.build("unet", in_channels=1, out_channels=2, base_width=2, depth=2).eval()
    x = torch.randn(1, 1, 16, 16)
    plain = predict_main(net, x, cfg, torch.device("cpu"), tta=False)
    cfg.infer.tta_axes = [1]
    one_axis = predict_main(net, x, cfg, torch.device("cpu"), tta=True)
    with torch.no_grad():
        flipped = torch.softmax(net(x.flip(3)), 1).flip(3)
    # the average of the plain and the width-flipped prediction, nothing else
    torch.testing.assert_close(one_axis, (plain + flipped) / 2, rtol=1e-5, atol=1e-6)
    cfg.infer.tta_axes = []
    torch.testing.assert_close(predict_main(net, x, cfg, torch.device("cpu"), tta=True), plain)
