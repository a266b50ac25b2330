"""The loss registry: required names, lookup errors, option validation."""

import pytest
import torch

import densemed.losses as losses
from densemed.errors import DensemedError

REQUIRED = ["bce", "ce", "weighted_ce", "dice", "dice_ce", "generalized_dice", "focal", "tversky",
            "attentionboost", "compound", "deep_supervision"]


def test_every_required_loss_is_registered():
    assert set(REQUIRED) <= set(losses.names())


def test_unknown_loss_suggests_the_closest_name():
    with pytest.raises(DensemedError, match="did you mean 'tversky'"):
        losses.build("tverski")


def test_unknown_option_names_the_loss_and_suggests():
    with pytest.raises(DensemedError, match="'dice' has no option 'smoth'.*'smooth'"):
        losses.build("dice", smoth=1)


def test_bad_option_values_raise_densemed_errors():
    for name, kw in [("focal", {"gamma": -1}), ("dice", {"smooth": -1}), ("dice", {"reduction": "avg"}),
                     ("weighted_ce", {"class_weights": "auto"}), ("compound", {"terms": []}),
                     ("tversky", {"alpha": -0.1})]:
        with pytest.raises(DensemedError):
            losses.build(name, **kw)


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        losses.register("dice")(losses.Loss)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="does not match"):
        losses.build("dice")(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 5, dtype=torch.long))


def test_compound_refuses_weights_when_no_term_uses_them():
    loss = losses.build("compound", terms=[{"name": "dice"}, {"name": "tversky"}])
    with pytest.raises(ValueError, match="no term uses them"):
        target = torch.zeros(1, 1, 2, 2, dtype=torch.long)
        loss(torch.zeros(1, 2, 2, 2), target, weights=torch.ones(1, 1, 2, 2))


def test_class_weights_from_labels_inverse_frequency_mean_one():
    w = losses.class_weights_from_labels(torch.tensor([0, 0, 0, 1]), 2)
    assert w == pytest.approx([4 / 6, 4 / 2])
    # absent class 2 gets the largest present weight
    assert losses.class_weights_from_labels([0, 0, 0, 1], 3) == pytest.approx([4 / 9, 4 / 3, 4 / 3])
