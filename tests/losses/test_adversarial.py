"""Adversarial and feature-matching losses: hand values, the BCE reference, gradchecks, options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import densemed.losses as losses
from densemed.errors import DensemedError
from densemed.losses.adversarial import DEFAULT

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def scores(*values: float, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).view(1, 1, 1, -1)


def test_registered_names_and_default():
    assert {"gan_ns", "gan_ls", "feature_matching"} <= set(losses.names())
    assert DEFAULT == "gan_ls"


def test_non_saturating_hand_values():
    loss = losses.build("gan_ns")
    x = scores(0.0, LN3)  # sigmoid: 1/2 and 3/4
    # real: -log(1/2), -log(3/4); fake: -log(1/2), -log(1/4)
    assert loss(x, True).item() == pytest.approx((LN2 + math.log(4 / 3)) / 2, rel=1e-6)
    assert loss(x, False).item() == pytest.approx((LN2 + LN4) / 2, rel=1e-6)
    assert loss.generator(x).item() == pytest.approx((LN2 + math.log(4 / 3)) / 2, rel=1e-6)
    # discriminator: half the sum of real-judged-real and fake-judged-fake
    real, fake = scores(LN3), scores(-LN3)  # D(real) = 3/4, D(fake) = 1/4
    assert loss.discriminator(real, fake).item() == pytest.approx(0.5 * (math.log(4 / 3) * 2), rel=1e-6)


def test_non_saturating_equals_binary_cross_entropy_on_logits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 5, 7, generator=g) * 4
    loss = losses.build("gan_ns")
    torch.testing.assert_close(loss(x, True), F.binary_cross_entropy_with_logits(x, torch.ones_like(x)))
    torch.testing.assert_close(loss(x, False), F.binary_cross_entropy_with_logits(x, torch.zeros_like(x)))


def test_non_saturating_generator_gradient_does_not_vanish_when_fakes_are_rejected():
    x = scores(-10.0).requires_grad_()
    losses.build("gan_ns").generator(x).backward()
    # d/dx softplus(-x) = -sigmoid(-x) ~ -1, where the saturating log(1 - D) has gradient -sigmoid(x) ~ -4.5e-5
    assert x.grad.item() == pytest.approx(-1 / (1 + math.exp(-10)), rel=1e-6)


def test_least_squares_hand_values():
    loss = losses.build("gan_ls")
    x = scores(0.5, 2.0)
    assert loss(x, True).item() == pytest.approx((0.25 + 1.0) / 2)
    assert loss(x, False).item() == pytest.approx((0.25 + 4.0) / 2)
    assert loss.generator(x).item() == pytest.approx(0.625)
    assert loss.discriminator(scores(1.0, 1.0), scores(0.0, 0.0)).item() == 0.0  # the optimum b = 1, a = 0
    assert loss.discriminator(scores(0.5), scores(0.5)).item() == pytest.approx(0.5 * (0.25 + 0.25))


def test_reductions_sum_and_none():
    x = scores(0.5, 2.0)
    assert losses.build("gan_ls", reduction="sum")(x, True).item() == pytest.approx(1.25)
    none = losses.build("gan_ls", reduction="none")
    torch.testing.assert_close(none(x, False), scores(0.25, 4.0))
    with pytest.raises(ValueError, match="differ"):
        none.discriminator(scores(1.0), scores(1.0, 2.0))


@pytest.mark.parametrize("name", ["gan_ns", "gan_ls"])
def test_gradcheck_generator_and_discriminator(name):
    loss = losses.build(name)
    g = torch.Generator().manual_seed(1)
    real = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss.generator, (fake,))
    assert torch.autograd.gradcheck(loss.discriminator, (real, fake))


def test_feature_matching_hand_value_is_a_sum_of_per_layer_mean_l1():
    real = [torch.tensor([[[[1.0, 3.0]]]]), torch.tensor([[[[0.0, 0.0, 0.0, 4.0]]]])]
    fake = [torch.tensor([[[[2.0, 1.0]]]]), torch.zeros(1, 1, 1, 4)]
    # layer 1: (1 + 2) / 2 = 1.5; layer 2: 4 / 4 = 1
    assert losses.build("feature_matching")(real, fake).item() == pytest.approx(2.5)
    assert losses.build("feature_matching", layer_weights=[2.0, 0.5])(real, fake).item() == pytest.approx(3.5)


def test_feature_matching_detaches_the_real_features_and_passes_gradcheck():
    g = torch.Generator().manual_seed(2)
    real = [torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)]
    fake = [torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)]
    fm = losses.build("feature_matching")
    fm(real, fake).backward()
    assert real[0].grad is None and fake[0].grad is not None
    assert torch.autograd.gradcheck(lambda f: fm(real, [f]), (fake[0].detach().requires_grad_(),))
    both = losses.build("feature_matching", detach_real=False)
    r = real[0].detach().requires_grad_()
    both([r], [fake[0].detach()]).backward()
    assert r.grad is not None


def test_bad_inputs_and_options_raise():
    with pytest.raises(DensemedError):
        losses.build("gan_ls", reduction="avg")
    with pytest.raises(DensemedError):
        losses.build("feature_matching", layer_weights=[-1.0])
    with pytest.raises(ValueError, match="True or False"):
        losses.build("gan_ns")(scores(0.0), 1)
    with pytest.raises(ValueError, match="length"):
        losses.build("feature_matching")([torch.zeros(1, 1, 2, 2)], [])
    with pytest.raises(ValueError, match="differ"):
        losses.build("feature_matching")([torch.zeros(1, 1, 2, 2)], [torch.zeros(1, 1, 2, 3)])
    with pytest.raises(ValueError, match="layer_weights"):
        losses.build("feature_matching", layer_weights=[1.0])([torch.zeros(1)] * 2, [torch.zeros(1)] * 2)
