"""Each loss against values computed by hand on a few pixels."""

import math

import pytest
import torch

import densemed.losses as losses

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def test_bce_stable_form_matches_hand_values():
    logits = t([[[[0.0, LN3]]]])  # p = 0.5, 0.75
    target = t([[[[1.0, 0.0]]]])
    # -log 0.5 and -log 0.25
    assert losses.build("bce")(logits, target).item() == pytest.approx((LN2 + LN4) / 2, rel=1e-6)


def test_bce_rejects_multichannel_logits():
    with pytest.raises(ValueError, match="one-channel"):
        losses.build("bce")(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))


def test_ce_softmax_hand_values_indices_and_onehot_agree():
    logits = t([[[[0.0, 0.0]], [[0.0, 0.0]], [[LN2, LN2]]]])  # (1, 3, 1, 2): p = 1/4, 1/4, 1/2
    idx = torch.tensor([[[[2, 0]]]])
    expected = (LN2 + LN4) / 2
    ce = losses.build("ce")
    assert ce(logits, idx).item() == pytest.approx(expected, rel=1e-6)
    onehot = torch.nn.functional.one_hot(idx[:, 0], 3).permute(0, 3, 1, 2).float()
    assert ce(logits, onehot).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_multiplies_pixel_and_class_weights():
    logits = torch.zeros(1, 2, 1, 2)  # every pixel costs ln 2
    target = torch.tensor([[[[0, 1]]]])
    weights = t([[[[2.0, 1.0]]]])
    loss = losses.build("weighted_ce", class_weights=[1.0, 3.0])
    # (ln2 * 1 * 2 + ln2 * 3 * 1) / 2 pixels
    assert loss(logits, target, weights=weights).item() == pytest.approx(2.5 * LN2, rel=1e-6)
    binary = losses.build("weighted_ce", class_weights=[1.0, 3.0])
    assert binary(torch.zeros(1, 1, 1, 2), target.float(), weights=weights).item() == pytest.approx(
        2.5 * LN2, rel=1e-6
    )


def test_ce_without_weights_refuses_a_weight_map():
    with pytest.raises(ValueError, match="cannot use per-pixel weights"):
        target = torch.zeros(1, 1, 2, 2, dtype=torch.long)
        losses.build("ce")(torch.zeros(1, 2, 2, 2), target, weights=torch.ones(1, 1, 2, 2))


def test_dice_binary_and_multiclass_hand_values():
    # binary: p = 0.5 everywhere, y = [1, 1, 0, 0]: I = 1, P = 2, G = 2 -> 1 - 2/4
    y = t([[[[1.0, 1.0, 0.0, 0.0]]]])
    assert losses.build("dice", smooth=0)(torch.zeros(1, 1, 1, 4), y).item() == pytest.approx(0.5, rel=1e-6)
    # two classes, p = 0.5 each, y = [0, 0, 0, 1]
    # class 0: I = 1.5, P = 2, G = 3 -> 1 - 3/5 = 0.4; class 1: I = 0.5, P = 2, G = 1 -> 2/3
    idx = torch.tensor([[[[0, 0, 0, 1]]]])
    z = torch.zeros(1, 2, 1, 4)
    assert losses.build("dice", smooth=0)(z, idx).item() == pytest.approx((0.4 + 2 / 3) / 2, rel=1e-6)
    no_bg = losses.build("dice", smooth=0, include_background=False)
    assert no_bg(z, idx).item() == pytest.approx(2 / 3, rel=1e-6)


def test_dice_smooth_and_batch_hand_values():
    # two images: image 1 y = [1, 0], image 2 y = [0, 0]; p = 0.5 everywhere, smooth = 1
    y = t([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    z = torch.zeros(2, 1, 1, 2)
    per_image = [1 - (2 * 0.5 + 1) / (1 + 1 + 1), 1 - (0 + 1) / (1 + 0 + 1)]
    assert losses.build("dice", smooth=1)(z, y).item() == pytest.approx(sum(per_image) / 2, rel=1e-6)
    # batch: I = 0.5, P = 2, G = 1
    assert losses.build("dice", smooth=1, batch=True)(z, y).item() == pytest.approx(1 - 2 / 4, rel=1e-6)


def test_generalized_dice_hand_value():
    # as above: w0 = 1/9, w1 = 1; numer = 2 (1.5/9 + 0.5) = 4/3; denom = 5/9 + 3 = 32/9 -> 1 - 0.375
    idx = torch.tensor([[[[0, 0, 0, 1]]]])
    assert losses.build("generalized_dice", smooth=0)(torch.zeros(1, 2, 1, 4), idx).item() == pytest.approx(
        0.625, rel=1e-6
    )


def test_generalized_dice_absent_class_gets_largest_weight():
    # y = [0, 0, 0, 0], class 1 absent: w0 = 1/16, w1 := 1/16
    # class 0: I = 2, P+G = 6; class 1: I = 0, P+G = 2 -> 1 - 2*2/16 / (8/16) = 0.5
    idx = torch.zeros(1, 1, 1, 4, dtype=torch.long)
    assert losses.build("generalized_dice", smooth=0)(torch.zeros(1, 2, 1, 4), idx).item() == pytest.approx(
        0.5, rel=1e-6
    )


def test_focal_hand_values_binary_and_multiclass():
    # binary p = 0.5, y = 1: (1 - 0.5)^2 ln 2; alpha = 0.25 on the positive
    y = torch.ones(1, 1, 1, 1)
    focal = losses.build("focal", gamma=2)
    assert focal(torch.zeros(1, 1, 1, 1), y).item() == pytest.approx(0.25 * LN2, rel=1e-6)
    assert losses.build("focal", gamma=2, alpha=0.25)(torch.zeros(1, 1, 1, 1), 1 - y).item() == pytest.approx(
        0.75 * 0.25 * LN2, rel=1e-6
    )
    # 3 classes p = (1/4, 1/4, 1/2): true 2 -> 0.25 ln 2; true 0 -> 0.5625 ln 4
    logits = t([[[[0.0, 0.0]], [[0.0, 0.0]], [[LN2, LN2]]]])
    idx = torch.tensor([[[[2, 0]]]])
    expected = (0.25 * LN2 + 0.5625 * LN4) / 2
    assert losses.build("focal", gamma=2)(logits, idx).item() == pytest.approx(expected, rel=1e-6)


def test_tversky_hand_value():
    # p = 0.5, y = [1, 0, 0, 0]: TP = 0.5, FP = 1.5, FN = 0.5 -> 1 - 0.5 / (0.5 + 0.45 + 0.35)
    y = t([[[[1.0, 0.0, 0.0, 0.0]]]])
    loss = losses.build("tversky", alpha=0.3, beta=0.7, smooth=0)
    assert loss(torch.zeros(1, 1, 1, 4), y).item() == pytest.approx(1 - 0.5 / 1.3, rel=1e-6)


def test_attentionboost_two_stages_hand_value():
    y = t([[[[1.0, 0.0]]]])
    s1 = t([[[[LN3, LN3]]]])  # p = 0.75: pixel 1 right (beta 0.75), pixel 2 wrong (beta 1.25)
    s2 = t([[[[0.0, -LN3]]]])  # CE: ln 2 and -ln 0.75
    stage1 = (math.log(4 / 3) + LN4) / 2
    stage2 = (0.75 * LN2 + 1.25 * -math.log(0.75)) / 2
    assert losses.build("attentionboost")([s1, s2], y).item() == pytest.approx(stage1 + stage2, rel=1e-6)


def test_attentionboost_multiclass_beta_uses_true_class_probability():
    from densemed.losses.functional import attentionboost_beta

    logits = torch.log(t([[[[0.4, 0.4]], [[0.3, 0.3]], [[0.3, 0.3]]]]))  # (1, 3, 1, 2)
    idx = torch.tensor([[[[0, 1]]]])
    # pixel 1: true 0 predicted 0, q = 0.4 -> 1 - 0.1; pixel 2: true 1 predicted 0, q = 0.3 -> 1 + 0.2
    assert torch.allclose(attentionboost_beta(logits, idx), t([[[[0.9, 1.2]]]]))


def test_attentionboost_weights_compound_over_three_stages_and_are_constants():
    y = t([[[[1.0]]]])
    s = [t([[[[LN3]]]]).requires_grad_() for _ in range(3)]  # right, p = 0.75 -> beta = 0.75 twice
    per = losses.build("attentionboost", reduction="none")(s, y)
    base = math.log(4 / 3)
    assert per.tolist() == pytest.approx([base, 0.75 * base, 0.5625 * base], rel=1e-6)
    per.sum().backward()
    # d/dx of -log sigmoid(x) = p - 1 = -0.25, times each stage's own weight only
    assert [v.grad.item() for v in s] == pytest.approx([-0.25, -0.25 * 0.75, -0.25 * 0.5625], rel=1e-6)


def test_compound_and_dice_ce_sum_their_terms():
    idx = torch.tensor([[[[0, 0, 0, 1]]]])
    z = torch.zeros(1, 2, 1, 4)
    terms = [{"name": "dice", "weight": 1, "smooth": 0}, {"name": "ce", "weight": 0.5}]
    loss = losses.build("compound", terms=terms)
    assert loss(z, idx).item() == pytest.approx((0.4 + 2 / 3) / 2 + 0.5 * LN2, rel=1e-6)
    dce = losses.build("dice_ce", smooth=0, lambda_ce=2.0)
    assert dce(z, idx).item() == pytest.approx((0.4 + 2 / 3) / 2 + 2 * LN2, rel=1e-6)


def test_dice_ce_sends_weights_to_the_ce_term():
    idx = torch.tensor([[[[0, 1]]]])
    w = t([[[[3.0, 1.0]]]])
    loss = losses.build("dice_ce", smooth=0, lambda_dice=0.0)
    assert loss(torch.zeros(1, 2, 1, 2), idx, weights=w).item() == pytest.approx(2 * LN2, rel=1e-6)


def test_deep_supervision_resizes_target_nearest_and_weights_levels():
    target = torch.tensor([[[[0, 1], [1, 1]]]])
    main = torch.zeros(1, 2, 2, 2)  # ln 2 per pixel
    aux = t([[[[0.0]], [[LN3]]]])  # p(class 1) = 0.75; nearest picks the top-left label 0 -> ln 4
    loss = losses.build("deep_supervision", loss={"name": "ce"}, weights=[1.0, 0.5])
    assert loss([main, aux], target).item() == pytest.approx(LN2 + 0.5 * LN4, rel=1e-6)
    # a plain tensor is the main output alone
    assert loss(main, target).item() == pytest.approx(LN2, rel=1e-6)


def test_deep_supervision_default_weights_halve_and_too_many_outputs_raise():
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    outs = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 1, 1)]
    loss = losses.build("deep_supervision", loss="ce")
    assert loss(outs, target).item() == pytest.approx(1.75 * LN2, rel=1e-6)
    with pytest.raises(ValueError, match="3 outputs but 2"):
        losses.build("deep_supervision", loss="ce", weights=[1, 0.5])(outs, target)
