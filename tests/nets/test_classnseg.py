"""ClassNSeg: latent-half zeroing, class scores and decision rule, parameter count, overfit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import densemed.nets as nets
from densemed.losses.activation import ActivationLoss
from densemed.nets.classnseg import ClassNSeg, class_probability, predict_class

SMALL = {"encoder_channels": (2, 2, 4, 4, 8), "trunk_layers": 2}


def _latent_into_decoder(net: ClassNSeg) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    net.trunk.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    return seen


def test_training_zeroes_the_half_that_does_not_match_the_label():
    torch.manual_seed(0)
    net = ClassNSeg(1, 2, **SMALL).train()
    seen = _latent_into_decoder(net)
    x = torch.randn(3, 1, 12, 9)
    net(x, torch.tensor([0, 1, 1]))
    h = seen[0]  # (3, 8, 3, 3): channels 0-3 are half 0, 4-7 half 1
    assert h.shape == (3, 8, 3, 3)
    assert (h[0, 4:] == 0).all() and (h[0, :4] != 0).any()
    assert (h[1:, :4] == 0).all() and (h[1:, 4:] != 0).any()


def test_no_zeroing_without_a_label_or_in_eval_mode():
    torch.manual_seed(0)
    net = ClassNSeg(1, 2, **SMALL).train()
    seen = _latent_into_decoder(net)
    enc: list[torch.Tensor] = []
    net.encoder.register_forward_hook(lambda mod, args, out: enc.append(out.detach().clone()))
    x = torch.randn(2, 1, 16, 16)
    net(x)
    assert torch.equal(seen[0], enc[0])
    net.eval()
    net(x, torch.tensor([0, 1]))
    assert torch.equal(seen[1], enc[1])


def test_activation_is_the_mean_absolute_value_of_each_latent_half():
    torch.manual_seed(0)
    net = ClassNSeg(1, 2, **SMALL).train()
    enc: list[torch.Tensor] = []
    net.encoder.register_forward_hook(lambda mod, args, out: enc.append(out.detach().clone()))
    out = net(torch.randn(2, 1, 16, 20), torch.tensor([1, 0]))
    h = enc[0]
    expected = torch.stack([h[:, :4].abs().mean((1, 2, 3)), h[:, 4:].abs().mean((1, 2, 3))], 1)
    torch.testing.assert_close(out["activation"], expected)
    assert out["activation"].shape == (2, 2)
    assert out["reconstruction"].abs().max() <= 1.0  # tanh branch


def test_class_decision_is_one_iff_a1_at_least_a0():
    a = torch.tensor([[0.3, 0.5], [0.5, 0.3], [0.4, 0.4]])
    assert predict_class(a).tolist() == [1, 0, 1]
    assert predict_class(a[:, :, None, None]).tolist() == [1, 0, 1]
    p = class_probability(a)
    torch.testing.assert_close(p[2], torch.tensor(0.5))
    torch.testing.assert_close(p[0], torch.sigmoid(torch.tensor(0.2)))


def test_eval_returns_segmentation_logits_of_the_input_size():
    torch.manual_seed(0)
    net = ClassNSeg(3, 4, **SMALL).eval()
    x = torch.randn(1, 3, 17, 23)
    y = net(x)
    with nets.all_outputs(net):
        d = net(x)
    assert y.shape == (1, 4, 17, 23) and torch.equal(y, d["segmentation"])
    assert d["reconstruction"].shape == (1, 3, 17, 23)


def test_bad_construction_and_labels_raise():
    with pytest.raises(ValueError, match="even"):
        ClassNSeg(1, 2, encoder_channels=(2, 3))
    with pytest.raises(ValueError, match="trunk_layers"):
        ClassNSeg(1, 2, encoder_channels=(2, 2, 4), trunk_layers=3)
    net = ClassNSeg(1, 2, **SMALL).train()
    with pytest.raises(ValueError, match="one label per sample"):
        net(torch.zeros(2, 1, 8, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="0 or 1"):
        net(torch.zeros(2, 1, 8, 8), torch.tensor([1, 2]))


def test_parameter_count_at_authors_defaults_from_the_channel_list():
    chans, cin, cout = [8, 8, 16, 16, 32, 32, 64, 64, 128], 3, 2
    ins = [cin, *chans[:-1]]

    def layer(a: int, b: int) -> int:  # bias-free 3x3 (transposed) conv + batch norm
        return 9 * a * b + 2 * b

    encoder = sum(layer(a, b) for a, b in zip(ins, chans))
    twins = [layer(chans[i], ins[i]) for i in range(8, 0, -1)]  # decoder twins of layers 8..1
    trunk, branch = sum(twins[:4]), sum(twins[4:])
    heads = (9 * chans[0] * cout + cout) + (9 * chans[0] * cin + cin)  # output layers have a bias
    with torch.device("meta"):
        net = nets.build("classnseg", in_channels=cin, out_channels=cout)
    assert nets.count_parameters(net) == encoder + trunk + 2 * branch + heads
    assert net.multiple == 16


def test_overfits_a_tiny_batch_on_all_three_tasks():
    torch.manual_seed(0)
    x = torch.zeros(4, 1, 32, 32)
    y = torch.tensor([1, 0, 1, 0])
    mask = torch.zeros(4, 32, 32, dtype=torch.long)
    mask[0, 8:20, 6:18] = 1
    mask[2, 14:28, 12:24] = 1
    x[mask.bool().unsqueeze(1)] = 0.8
    x = x + 0.1 * torch.randn_like(x)
    net = ClassNSeg(1, 2, encoder_channels=(4, 4, 8, 8, 16), trunk_layers=2).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    act_loss = ActivationLoss()

    def terms() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = net(x, y)
        act = act_loss(out["activation"], y)
        return act, F.cross_entropy(out["segmentation"], mask), F.mse_loss(out["reconstruction"], x), out["activation"]

    first = [t.item() for t in terms()[:3]]
    for _ in range(30):
        opt.zero_grad()
        act, ce, mse, scores = terms()
        (act + ce + mse).backward()
        opt.step()
    assert act.item() < 0.2 * first[0] and ce.item() < 0.2 * first[1] and mse.item() < 0.2 * first[2]
    assert predict_class(scores).tolist() == y.tolist()
