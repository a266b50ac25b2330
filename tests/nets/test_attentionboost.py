"""AttentionBoost network specifics: stage outputs, chaining through probabilities, overfit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.nets.attentionboost import AttentionBoostNet

SMALL = {"base_width": 4, "depth": 2, "stages": 3}


def test_training_mode_returns_one_full_size_logit_map_per_stage():
    net = nets.build("attentionboost", in_channels=1, out_channels=2, **SMALL)
    out = net(torch.randn(2, 1, 97, 131))
    assert isinstance(out, list) and len(out) == 3
    assert all(o.shape == (2, 2, 97, 131) for o in out)


def test_eval_returns_last_stage_and_all_outputs_returns_every_stage():
    torch.manual_seed(0)
    net = nets.build("attentionboost", in_channels=1, out_channels=2, **SMALL).eval()
    x = torch.randn(1, 1, 40, 36)
    with torch.no_grad():
        final = net(x)
        with nets.all_outputs(net):
            stages = net(x)
    assert isinstance(final, torch.Tensor)
    torch.testing.assert_close(final, stages[-1])


def test_later_stages_see_image_plus_previous_probabilities():
    net = AttentionBoostNet(3, 4, stages=3, depth=2, base_width=4)
    first = [s.encoders[0][0][0].in_channels for s in net.stages]
    assert first == [3, 7, 7]
    seen = []
    net.stages[1].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    net.eval()
    with torch.no_grad():
        with nets.all_outputs(net):
            z = net(torch.randn(1, 3, 16, 16))
    torch.testing.assert_close(seen[0][:, 3:], torch.softmax(z[0], 1))  # probabilities, sum to 1


def test_single_output_channel_uses_sigmoid_probabilities():
    net = AttentionBoostNet(1, 1, stages=2, depth=2, base_width=4).eval()
    seen = []
    net.stages[1].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad(), nets.all_outputs(net):
        z = net(torch.randn(1, 1, 16, 16))
    torch.testing.assert_close(seen[0][:, 1:], torch.sigmoid(z[0]))


def test_gradient_reaches_first_stage_through_every_stage():
    net = nets.build("attentionboost", in_channels=1, out_channels=2, **SMALL)
    out = net(torch.randn(2, 1, 32, 32))
    out[-1].sum().backward()  # only the last stage's output: gradient flows back via probabilities
    assert net.stages[0].encoders[0][0][0].weight.grad.abs().sum() > 0


def test_attentionboost_overfits_one_batch(fit):
    torch.manual_seed(0)
    net = nets.build("attentionboost", in_channels=1, out_channels=2, base_width=4, depth=2, stages=2)
    x = torch.randn(2, 1, 32, 32)
    y = (x > 0).long().squeeze(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = fit(lambda: sum(F.cross_entropy(z, y) for z in net(x)), opt, 20)
    assert losses[-1] < 0.7 * losses[0]

