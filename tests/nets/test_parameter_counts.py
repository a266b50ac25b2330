"""Parameter counts at the papers' defaults, each derived here from the architecture's layer formula.

Building blocks (batch norm after every convolution that has no bias; BN has a weight and a bias per
channel; transposed convolutions and 1x1 heads have biases):
``conv(i, o, k) = i o k^d (+ o)``, ``cna(i, o) = conv(i, o, 3, no bias) + 2 o``,
``double(i, o) = cna(i, o) + cna(o, o)``, ``up(i, o, k) = i o k^d + o``.
"""

from __future__ import annotations

import torch

import densemed.nets as nets
from densemed.nets.vnet import PAPER_STAGE_CONVS


def conv(i: int, o: int, k: int, d: int = 2, bias: bool = True) -> int:
    return i * o * k**d + (o if bias else 0)


def cna(i: int, o: int, d: int = 2, k: int = 3) -> int:
    return conv(i, o, k, d, bias=False) + 2 * o


def double(i: int, o: int, d: int = 2) -> int:
    return cna(i, o, d) + cna(o, o, d)


def encoder(c_in: int, widths: list[int], d: int = 2) -> int:
    chans = [c_in, *widths[:-1]]
    return sum(double(a, b, d) for a, b in zip(chans, widths))


def decoder(widths: list[int], out: int, d: int = 2) -> int:
    # per level above the bottom: up-convolution 2w -> w (kernel 2), DoubleConv(2w -> w); 1x1 head
    return sum(conv(2 * w, w, 2, d) + double(2 * w, w, d) for w in widths[:-1]) + conv(widths[0], out, 1, d)


def unet(c_in: int, out: int, depth: int = 4, base: int = 64, d: int = 2) -> int:
    widths = [base * 2**i for i in range(depth + 1)]
    return encoder(c_in, widths, d) + decoder(widths, out, d)


def count(name: str, **kw) -> int:
    with torch.device("meta"):
        return nets.count_parameters(nets.build(name, **kw))


def test_multitask_is_one_encoder_and_one_decoder_per_task():
    widths = [64 * 2**i for i in range(5)]
    expected = encoder(1, widths) + decoder(widths, 2) + decoder(widths, 3)
    assert count("multitask", in_channels=1, out_channels=2, tasks={"mask": None, "contour": 3}) == expected
    assert count("multitask", in_channels=1, out_channels=2, tasks={"mask": None}) == unet(1, 2)


def test_deepdistance_two_and_three_decoders():
    widths = [64 * 2**i for i in range(5)]
    two = encoder(1, widths) + 2 * decoder(widths, 1)
    assert count("deepdistance", in_channels=1, out_channels=2) == two
    assert count("deepdistance", in_channels=1, out_channels=2, segmentation=True) == two + decoder(widths, 2)


def test_dcan_at_paper_defaults():
    base, depth, fuse = 64, 5, 3
    widths = [base * f for f in (1, 2, 4, 8, 8, 16)]
    stages = encoder(3, widths)
    hidden = 2 * base
    fused = range(depth + 1 - fuse, depth + 1)  # the three deepest stages
    # each auxiliary classifier: 3x3 ConvNormAct to 2*base, then a deconvolution of kernel 2s (s = 2^i)
    branch = sum(cna(widths[i], hidden) + conv(hidden, 2, 2 * 2**i) for i in fused)
    assert count("dcan", in_channels=3, out_channels=2) == stages + 2 * branch


def test_attentionboost_is_a_chain_of_unets_fed_the_previous_probabilities():
    stages, depth, base = 4, 4, 32
    expected = unet(3, 2, depth, base) + (stages - 1) * unet(3 + 2, 2, depth, base)
    assert count("attentionboost", in_channels=3, out_channels=2) == expected


def test_unet3d_ds_adds_one_1x1_head_per_supervised_level():
    base, depth, ds = 32, 3, 2
    heads = sum(conv(base * 2**i, 2, 1, 3) for i in range(1, ds + 1))
    assert count("unet3d_ds", in_channels=1, out_channels=2) == unet(1, 2, depth, base, 3) + heads


def test_vnet_at_the_paper_layout():
    base, k = 16, 5
    w = [base * 2**i for i in range(5)]
    left, right = PAPER_STAGE_CONVS[:5], PAPER_STAGE_CONVS[5:]

    def conv_bn(i: int, o: int, kk: int) -> int:
        return conv(i, o, kk, 3, bias=False) + 2 * o

    def stage(c: int, n: int) -> int:  # n 5^3 conv+BN, one PReLU slope per channel each
        return n * (conv_bn(c, c, k) + c)

    total = conv_bn(1, w[0], k) + w[0] + stage(w[0], left[0] - 1)  # stem (+ PReLU) and the rest of stage 1
    for level in range(1, 5):
        total += conv_bn(w[level - 1], w[level], 2) + w[level] + stage(w[level], left[level])  # down + stage
    for i, level in enumerate(range(3, -1, -1)):
        c_in = w[level + 1] if i == 0 else w[level + 2]
        total += conv(c_in, w[level], 2, 3, bias=False) + 2 * w[level] + w[level]  # up: deconv + BN + PReLU
        total += stage(2 * w[level], right[i])
    total += conv(2 * w[0], 2, 1, 3)
    assert count("vnet", in_channels=1, out_channels=2) == total
