"""The joint multi-task loss and the MSE regression loss."""

from __future__ import annotations

import math

import pytest
import torch

import densemed.losses as losses
from densemed.errors import DensemedError
from densemed.losses.multitask import MSELoss, MultiTaskLoss


def spec() -> dict:
    return {
        "mask": {"loss": {"name": "ce"}, "weight": 1.0, "target": "label"},
        "dist": {"loss": {"name": "mse"}, "weight": 0.5, "target": "d"},
    }


def test_hand_value_weighted_sum():
    loss = losses.build("multitask", tasks=spec())
    assert loss.takes_batch is True
    out = {"mask": torch.zeros(1, 2, 4, 4), "dist": torch.zeros(1, 1, 4, 4)}
    batch = {"label": torch.zeros(1, 1, 4, 4, dtype=torch.long), "d": torch.ones(1, 1, 4, 4)}
    # CE of equal logits over 2 classes = ln 2; MSE (0 - 1)^2 = 1 with weight 0.5
    assert loss(out, batch).item() == pytest.approx(math.log(2) + 0.5)
    assert loss.last_terms == pytest.approx({"mask": math.log(2), "dist": 1.0})


def test_equals_the_sum_of_the_separate_losses(rng):
    torch.manual_seed(0)
    out = {"mask": torch.randn(2, 3, 5, 6), "dist": torch.randn(2, 1, 5, 6)}
    batch = {"label": torch.randint(0, 3, (2, 1, 5, 6)), "d": torch.rand(2, 1, 5, 6)}
    expected = losses.build("ce")(out["mask"], batch["label"]) + 0.5 * MSELoss()(out["dist"], batch["d"])
    torch.testing.assert_close(MultiTaskLoss(spec())(out, batch), expected)


def test_float_contour_target_becomes_class_indices():
    tasks = {"contour": {"loss": {"name": "ce"}, "target": "contour"}}
    logits = torch.randn(2, 2, 4, 4)
    c = (torch.rand(2, 1, 4, 4) > 0.5).float()  # the data pipeline stores target maps as float32
    got = MultiTaskLoss(tasks)({"contour": logits}, {"contour": c})
    torch.testing.assert_close(got, losses.build("ce")(logits, c.long()))


def test_aux_weight_schedule_decays_to_a_floor():
    loss = MultiTaskLoss(spec(), aux_weight={"initial": 1.0, "decay": 0.1, "every": 10, "final": 1e-3})
    weights = []
    for epoch in (0, 9, 10, 25, 30, 55):
        loss.set_epoch(epoch)
        weights.append(loss.aux_weight)
    assert weights == pytest.approx([1.0, 1.0, 0.1, 0.01, 1e-3, 1e-3])
    assert MultiTaskLoss(spec(), aux_weight=0.3).aux_weight == 0.3


def test_list_outputs_add_weighted_auxiliary_terms():
    tasks = {"object": {"loss": {"name": "ce"}, "target": "label"}}
    loss = MultiTaskLoss(tasks, aux_weight={"initial": 1.0, "decay": 0.5, "every": 1, "final": 0.0})
    torch.manual_seed(1)
    main, aux1, aux2 = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4)
    y = torch.randint(0, 2, (1, 1, 8, 8))
    ce = losses.build("ce")
    y_small = y[:, :, ::2, ::2]  # nearest-neighbour resize of the target to the small output
    loss.set_epoch(2)  # w_aux = 0.25
    expected = ce(main, y) + 0.25 * (ce(aux1, y) + ce(aux2, y_small))
    torch.testing.assert_close(loss({"object": [main, aux1, aux2]}, {"label": y}), expected)


def test_single_tensor_is_the_main_task():
    loss = MultiTaskLoss(spec(), main="mask")
    x = torch.randn(1, 2, 4, 4)
    y = torch.randint(0, 2, (1, 1, 4, 4))
    torch.testing.assert_close(loss(x, {"label": y}), losses.build("ce")(x, y))


def test_per_task_weight_maps():
    tasks = {"d": {"loss": {"name": "mse"}, "target": "d", "weights": "w"}}
    w = torch.zeros(1, 1, 2, 2)
    w[0, 0, 0, 0] = 4.0
    got = MultiTaskLoss(tasks)({"d": torch.zeros(1, 1, 2, 2)}, {"d": torch.ones(1, 1, 2, 2), "w": w})
    assert got.item() == pytest.approx(1.0)  # (4 * 1) / 4 pixels


def test_bad_recipes_raise():
    with pytest.raises(DensemedError, match="tasks"):
        MultiTaskLoss({})
    with pytest.raises(DensemedError, match="unknown keys"):
        MultiTaskLoss({"a": {"loss": {"name": "ce"}, "wieght": 2}})
    with pytest.raises(DensemedError, match="unknown loss"):
        MultiTaskLoss({"a": {"loss": {"name": "cee"}}})
    loss = MultiTaskLoss({"a": {"loss": {"name": "ce"}, "target": "contour"}})
    with pytest.raises(DensemedError, match="data.targets"):
        loss({"a": torch.zeros(1, 2, 2, 2)}, {"label": torch.zeros(1, 1, 2, 2, dtype=torch.long)})


def test_gradcheck_float64():
    tasks = {
        "m": {"loss": {"name": "ce"}, "target": "label"},
        "d": {"loss": {"name": "mse"}, "target": "d", "weight": 2},
    }
    loss = MultiTaskLoss(tasks)
    y = torch.randint(0, 2, (1, 1, 3, 3))
    d = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    a = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: loss({"m": a, "d": b}, {"label": y, "d": d}), (a, b))


def test_mse_hand_value_and_shape_check():
    assert MSELoss()(torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])).item() == 0.5
    with pytest.raises(ValueError, match=r"prediction shape \(1, 1, 2, 2\) and target shape \(1, 1, 3, 2\) differ"):
        MSELoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 2))


@pytest.mark.parametrize("target_shape", [(2, 1, 4, 4), (1, 3, 4, 4), (2, 4, 4), (2, 3, 4, 4, 1), (3, 4, 4)])
def test_mse_refuses_every_target_shape_other_than_the_predictions_naming_both(target_shape):
    # each of these would broadcast (or fail deep in torch) without the check
    with pytest.raises(ValueError) as info:
        MSELoss()(torch.zeros(2, 3, 4, 4), torch.zeros(target_shape))
    assert str(info.value) == (f"mse: prediction shape (2, 3, 4, 4) and target shape {target_shape} differ; "
                               "they must be equal (no broadcasting)")


def test_mse_same_shapes_and_per_pixel_weights_hand_values():
    out = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # squared errors 1, 4 | 9, 0
    assert MSELoss()(out, target).item() == pytest.approx(14 / 4)
    w1 = torch.tensor([[[[2.0, 0.5]]]])  # (B, 1, *S): the same weight for both channels
    assert MSELoss()(out, target, weights=w1).item() == pytest.approx((2 * 1 + 0.5 * 4 + 2 * 9 + 0.5 * 0) / 4)
    wc = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (B, C, *S)
    assert MSELoss()(out, target, weights=wc).item() == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match=r"mse: weights shape \(1, 1, 1, 1\) does not fit prediction shape "
                                         r"\(1, 2, 1, 2\); expected \(1, 1, 1, 2\) or \(1, 2, 1, 2\)"):
        MSELoss()(out, target, weights=torch.ones(1, 1, 1, 1))
