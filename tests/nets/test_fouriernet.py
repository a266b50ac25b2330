"""FourierNet specifics: parameter count from the architecture, the cascade's dependence, outputs, an overfit check."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.nets.fouriernet import FourierNet
from densemed.nets.heads import heads_of, main_head
from densemed.targets.fourier import descriptor_map


def unet_parameters(c_in: int, c_out: int, depth: int = 4, width: int = 64) -> int:
    """U-Net stage with batch norm: bias-free 3x3 convolutions, 2 norm parameters per channel."""
    widths = [width * 2**i for i in range(depth + 1)]
    total, c = 0, c_in
    for w in widths:  # contracting path and bottleneck: two 3x3 conv + BN
        total += 9 * c * w + 2 * w + 9 * w * w + 2 * w
        c = w
    for w in widths[:-1]:  # 2x2 up-convolution (with bias) 2w -> w, then two 3x3 conv + BN on 2w -> w -> w
        total += 4 * 2 * w * w + w + 9 * 2 * w * w + 2 * w + 9 * w * w + 2 * w
    return total + width * c_out + c_out  # 1x1 head with bias


def test_parameter_count_at_the_defaults_is_two_unets_of_the_cascade():
    with torch.device("meta"):
        net = nets.build("fouriernet")
    # stage 1: image (1) -> N + 1 = 9 descriptor maps; stage 2: image + 9 maps -> 2 classes
    expected = unet_parameters(1, 9) + unet_parameters(1 + 9, 2)
    assert nets.count_parameters(net) == expected == 62_078_731


def test_heads_are_segmentation_logits_and_descriptor_regression():
    net = FourierNet(3, 4, n_harmonics=6, depth=2, base_width=4)
    heads = heads_of(net)
    assert main_head(net) == "segmentation"
    assert (heads["segmentation"].channels, heads["segmentation"].kind) == (4, "logits")
    assert (heads["descriptors"].channels, heads["descriptors"].kind) == (7, "regression")


def test_training_returns_both_heads_and_eval_the_segmentation():
    torch.manual_seed(0)
    net = FourierNet(1, 2, n_harmonics=4, depth=2, base_width=4)
    x = torch.randn(2, 1, 21, 34)
    out = net.train()(x)
    assert set(out) == {"segmentation", "descriptors"}
    assert out["segmentation"].shape == (2, 2, 21, 34) and out["descriptors"].shape == (2, 5, 21, 34)
    net.eval()
    with torch.no_grad():
        seg = net(x)
        with nets.all_outputs(net):
            both = net(x)
    torch.testing.assert_close(seg, both["segmentation"])


def test_segmentation_depends_on_the_descriptor_stage():
    torch.manual_seed(0)
    net = FourierNet(1, 2, n_harmonics=4, depth=2, base_width=4).eval()
    x = torch.randn(1, 1, 24, 24)
    with torch.no_grad():
        before = net(x)
        net.descriptor_net.head.bias.add_(1.0)  # only stage 1's output changes
        after = net(x)
    assert (after - before).abs().max() > 1e-3
    # and stage 2 receives exactly stage 1's maps
    with torch.no_grad():
        direct = net.segmentation_net(torch.cat([x, net.descriptor_net(x)], 1))
    torch.testing.assert_close(after, direct)


def two_discs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    yy, xx = np.mgrid[:32, :32]
    lab = np.zeros((32, 32), np.int32)
    lab[np.hypot(yy - 9, xx - 10) <= 6] = 1
    lab[np.hypot(yy - 21, xx - 22) <= 8] = 2
    rng = np.random.default_rng(0)
    image = (lab > 0) * 1.0 + 0.3 * rng.standard_normal(lab.shape)
    desc = descriptor_map(lab, n_harmonics=4)
    return (torch.tensor(image, dtype=torch.float32)[None, None], torch.tensor(lab > 0).long()[None],
            torch.tensor(desc)[None])


def test_overfits_one_image_with_two_discs():
    """25 Adam steps (measured: CE 0.72 -> 0.08, MSE 0.16 -> 0.004); each term must at least halve."""
    torch.manual_seed(0)
    image, label, desc = two_discs()
    net = FourierNet(1, 2, n_harmonics=4, depth=2, base_width=8).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def losses() -> tuple[torch.Tensor, torch.Tensor]:
        out = net(image)
        return F.cross_entropy(out["segmentation"], label), F.mse_loss(out["descriptors"], desc)

    first = None
    for _ in range(25):
        ce, mse = losses()
        first = first or (ce.item(), mse.item())
        opt.zero_grad()
        (ce + mse).backward()
        opt.step()
    with torch.no_grad():
        ce, mse = losses()
    assert ce.item() < 0.5 * first[0] and mse.item() < 0.5 * first[1], (first, ce.item(), mse.item())
    assert ce.item() + mse.item() < 0.2 * sum(first)
