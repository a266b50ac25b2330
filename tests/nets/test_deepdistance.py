"""DeepDistance: shared encoder, inner/outer distance decoders, extended segmentation variant."""

from __future__ import annotations

import pytest
import torch

import densemed.nets as nets
from densemed.nets.deepdistance import DeepDistance


def test_two_decoder_variant_outputs_both_maps():
    torch.manual_seed(0)
    net = DeepDistance(1, 2, depth=2, base_width=4).train()
    out = net(torch.randn(2, 1, 22, 31))
    assert set(out) == {"inner_distance", "outer_distance"}
    assert out["inner_distance"].shape == (2, 1, 22, 31)
    net.eval()
    x = torch.randn(1, 1, 22, 31)
    stacked = net(x)  # eval: the two maps stacked, (B, 2, *S)
    with nets.all_outputs(net):
        d = net(x)
    torch.testing.assert_close(stacked, torch.cat([d["inner_distance"], d["outer_distance"]], 1))


def test_extended_variant_has_a_segmentation_decoder_as_main():
    net = nets.build("deepdistance", in_channels=3, out_channels=2, segmentation=True, base_width=4, depth=2).eval()
    x = torch.randn(1, 3, 16, 24)
    assert net(x).shape == (1, 2, 16, 24)
    with nets.all_outputs(net):
        d = net(x)
    assert set(d) == {"mask", "inner_distance", "outer_distance"} and net.main_output == "mask"
    assert len(net.decoders) == 3


def test_without_segmentation_out_channels_must_be_two():
    with pytest.raises(ValueError, match="out_channels must be 2"):
        DeepDistance(1, 3)


def test_parameter_counts_at_paper_width():
    with torch.device("meta"):
        two = nets.build("deepdistance", in_channels=1, out_channels=2)
        three = nets.build("deepdistance", in_channels=1, out_channels=2, segmentation=True)
    assert nets.count_parameters(two) == 43_226_946
    # the third decoder adds one U-Net expanding path
    assert nets.count_parameters(three) - nets.count_parameters(two) == 55_417_476 - 43_226_946
