"""Dice, Generalized Dice, Focal and Tversky equal MONAI's losses (test-only dependency) to 1e-5."""

import pytest
import torch

import densemed.losses as losses

monai_losses = pytest.importorskip("monai.losses")

CASES = [(1, (7, 9)), (3, (7, 9)), (1, (5, 6, 4)), (4, (5, 6, 4))]  # (C, spatial): binary/multi, 2D/3D


def inputs(C, spatial, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, C, *spatial, generator=g, dtype=torch.float64)
    if C == 1:
        idx = (torch.rand(2, 1, *spatial, generator=g) > 0.6).long()
        onehot = idx.double()
    else:
        idx = torch.randint(0, C, (2, 1, *spatial), generator=g)
        idx[1][idx[1] == 1] = 0  # class 1 absent from image 2
        onehot = torch.nn.functional.one_hot(idx[:, 0], C).movedim(-1, 1).double()
    return logits, idx, onehot


def act(C):
    return {"sigmoid": True} if C == 1 else {"softmax": True}


@pytest.mark.parametrize("C,spatial", CASES)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
def test_dice_equals_monai(C, spatial, batch, include_background):
    logits, idx, onehot = inputs(C, spatial)
    ref = monai_losses.DiceLoss(include_background=include_background, batch=batch, smooth_nr=1e-3,
                                smooth_dr=1e-3, **act(C))(logits, onehot)
    ours = losses.build("dice", include_background=include_background, batch=batch, smooth=1e-3)
    assert ours(logits, idx).item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("C,spatial", CASES)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
def test_generalized_dice_equals_monai(C, spatial, batch, include_background):
    logits, idx, onehot = inputs(C, spatial)
    ref_loss = monai_losses.GeneralizedDiceLoss(include_background=include_background, batch=batch, **act(C))
    ref = ref_loss(logits, onehot)
    ours = losses.build("generalized_dice", include_background=include_background, batch=batch)
    assert ours(logits, idx).item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("C,spatial", CASES)
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 1.5])
def test_focal_equals_monai(C, spatial, alpha, gamma):
    logits, idx, onehot = inputs(C, spatial)
    ref_loss = monai_losses.FocalLoss(gamma=gamma, alpha=alpha, use_softmax=C > 1, reduction="none")
    ref = ref_loss(logits, onehot)
    # MONAI averages over the class channel as well; ours sums over classes per pixel.
    ours = losses.build("focal", gamma=gamma, alpha=alpha)
    assert ours(logits, idx).item() == pytest.approx(ref.sum(1).mean().item(), abs=1e-5)


@pytest.mark.parametrize("C,spatial", CASES)
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("alpha,beta", [(0.3, 0.7), (0.8, 0.1)])
def test_tversky_equals_monai(C, spatial, batch, alpha, beta):
    logits, idx, onehot = inputs(C, spatial)
    ref = monai_losses.TverskyLoss(alpha=alpha, beta=beta, batch=batch, include_background=C > 3, **act(C))(
        logits, onehot
    )
    ours = losses.build("tversky", alpha=alpha, beta=beta, batch=batch, include_background=C > 3)
    assert ours(logits, idx).item() == pytest.approx(ref.item(), abs=1e-5)


def test_float32_onehot_target_matches_index_target():
    logits, idx, onehot = inputs(3, (7, 9))
    for name in ["dice", "generalized_dice", "focal", "tversky", "ce", "weighted_ce"]:
        loss = losses.build(name)
        expected = loss(logits.float(), idx).item()
        assert loss(logits.float(), onehot.float()).item() == pytest.approx(expected, abs=1e-5)
