"""DCAN: two branches fusing multi-level classifiers, auxiliary outputs, parameter count."""

from __future__ import annotations

import pytest
import torch

import densemed.nets as nets
from densemed.nets.dcan import DCAN


def test_training_outputs_fused_first_then_auxiliary_per_branch():
    net = DCAN(3, 2, depth=3, base_width=4, fuse_levels=2).train()
    out = net(torch.randn(2, 3, 21, 19))
    assert set(out) == {"object", "contour"}
    for branch in out.values():
        assert len(branch) == 3 and all(t.shape == (2, 2, 21, 19) for t in branch)
        # the fused prediction is the sum of the upsampled per-level classifiers
        torch.testing.assert_close(branch[0], branch[1] + branch[2])


def test_eval_returns_fused_object_logits():
    torch.manual_seed(0)
    net = DCAN(1, 2, contour_channels=1, depth=2, base_width=4, fuse_levels=2).eval()
    x = torch.randn(1, 1, 13, 10)
    y = net(x)
    with nets.all_outputs(net):
        d = net(x)
    assert y.shape == (1, 2, 13, 10) and torch.equal(y, d["object"][0])
    assert d["contour"][0].shape == (1, 1, 13, 10)
    assert net.main_head == "object"


def test_every_parameter_gets_a_gradient_3d():
    net = nets.build("dcan", in_channels=1, out_channels=2, dims=3, base_width=2, depth=2, fuse_levels=2).train()
    out = net(torch.randn(2, 1, 5, 6, 7))
    (sum(t.sum() for t in out["object"]) + sum(t.sum() for t in out["contour"])).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_paper_defaults_fuse_the_three_deepest_stages():
    # the parameter count is derived from the layer formula in test_parameter_counts.py
    with torch.device("meta"):
        net = nets.build("dcan", in_channels=3, out_channels=2)
    assert len(net.object_branch) == 3 and net.fused == [3, 4, 5]


def test_fuse_levels_checked():
    with pytest.raises(ValueError, match="fuse_levels"):
        DCAN(1, 2, depth=2, fuse_levels=3)
