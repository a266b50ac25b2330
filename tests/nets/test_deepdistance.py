"""DeepDistance: shared encoder, inner/outer distance decoders, extended segmentation variant."""

from __future__ import annotations

import torch

import densemed.nets as nets
from densemed.nets.deepdistance import DeepDistance
from densemed.nets.heads import heads_of, main_head


def test_two_decoder_variant_outputs_both_maps_and_declares_them_regression():
    torch.manual_seed(0)
    net = DeepDistance(1, 2, depth=2, base_width=4).train()
    out = net(torch.randn(2, 1, 22, 31))
    assert set(out) == {"inner_distance", "outer_distance"}
    assert out["inner_distance"].shape == (2, 1, 22, 31)
    assert {k: (h.channels, h.kind) for k, h in heads_of(net).items()} == {
        "inner_distance": (1, "regression"), "outer_distance": (1, "regression")}
    net.eval()
    x = torch.randn(1, 1, 22, 31)
    main = net(x)  # eval: the declared main head, the inner distance (B, 1, *S)
    with nets.all_outputs(net):
        d = net(x)
    assert main_head(net) == "inner_distance"
    torch.testing.assert_close(main, d["inner_distance"])


def test_extended_variant_has_a_segmentation_decoder_as_main():
    net = nets.build("deepdistance", in_channels=3, out_channels=2, segmentation=True, base_width=4, depth=2).eval()
    x = torch.randn(1, 3, 16, 24)
    assert net(x).shape == (1, 2, 16, 24)
    with nets.all_outputs(net):
        d = net(x)
    assert set(d) == {"mask", "inner_distance", "outer_distance"} and main_head(net) == "mask"
    assert heads_of(net)["mask"].kind == "logits" and net.default_instances == "deepdistance"
    assert len(net.decoders) == 3
