"""Activation loss of ClassNSeg: hand-computed values, shapes, reductions, gradient, errors."""

from __future__ import annotations

import pytest
import torch

import densemed.losses as losses
from densemed.losses.activation import ActivationLoss
from densemed.losses.multitask import MultiTaskLoss


def test_hand_computed_value_mean_over_batch():
    # y=1: |0.9 - 1| + |0.2 - 0| = 0.3;  y=0: |0.1 - 0| + |0.5 - 1| = 0.6;  mean 0.45
    out = torch.tensor([[0.2, 0.9], [0.5, 0.1]])
    assert ActivationLoss()(out, torch.tensor([1, 0])).item() == pytest.approx(0.45)
    torch.testing.assert_close(ActivationLoss("none")(out, torch.tensor([1, 0])), torch.tensor([0.3, 0.6]))
    assert ActivationLoss("sum")(out, torch.tensor([1, 0])).item() == pytest.approx(0.9)


def test_perfect_scores_give_zero_and_swapped_scores_give_two():
    out = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert ActivationLoss()(out, torch.tensor([1, 0])).item() == 0.0
    assert ActivationLoss()(out, torch.tensor([0, 1])).item() == 2.0


def test_accepts_4d_scores_and_column_or_float_targets():
    out = torch.tensor([[0.2, 0.9], [0.5, 0.1]])
    ref = ActivationLoss()(out, torch.tensor([1, 0]))
    torch.testing.assert_close(ActivationLoss()(out[:, :, None, None], torch.tensor([[1.0], [0.0]])), ref)
    torch.testing.assert_close(ActivationLoss()(out, torch.tensor([1, 0]).view(2, 1, 1, 1)), ref)


def test_gradcheck_float64_away_from_the_kinks():
    out = torch.tensor([[0.2, 0.7], [0.4, 0.3], [1.3, -0.2]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda o: ActivationLoss()(o, y), (out,))


def test_built_by_name_and_usable_as_a_multitask_term_with_a_vector_label():
    loss = MultiTaskLoss({"activation": {"loss": {"name": "activation"}, "target": "class_label"}})
    out = {"activation": torch.tensor([[0.2, 0.9], [0.5, 0.1]])}
    value = loss(out, {"class_label": torch.tensor([1, 0])})
    assert value.item() == pytest.approx(0.45)
    assert isinstance(losses.build("activation"), ActivationLoss)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        ActivationLoss()(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="one label per sample"):
        ActivationLoss()(torch.zeros(2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="one score per class"):
        ActivationLoss()(torch.zeros(2, 2, 4, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="weights"):
        ActivationLoss()(torch.zeros(2, 2), torch.zeros(2), weights=torch.ones(2))
