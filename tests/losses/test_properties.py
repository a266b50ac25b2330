"""Identities, float64 gradient checks and edge cases for every loss."""

import pytest
import torch

import densemed.losses as losses

SPATIAL_LOSSES = ["bce", "ce", "weighted_ce", "dice", "dice_ce", "generalized_dice", "focal", "tversky"]


def make(C, spatial=(3, 4), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, C, *spatial, generator=g, dtype=dtype)
    if C == 1:
        target = (torch.rand(2, 1, *spatial, generator=g) > 0.5).long()
    else:
        target = torch.randint(0, C, (2, 1, *spatial), generator=g)
    return logits, target


@pytest.mark.parametrize("C,spatial", [(1, (6, 5)), (3, (6, 5)), (2, (3, 4, 5))])
def test_focal_with_gamma_zero_equals_cross_entropy(C, spatial):
    logits, target = make(C, spatial)
    f = losses.build("focal", gamma=0)(logits, target)
    ce = losses.build("ce")(logits, target)
    assert f.item() == pytest.approx(ce.item(), rel=1e-12)


@pytest.mark.parametrize("C,spatial", [(1, (6, 5)), (3, (6, 5)), (2, (3, 4, 5))])
@pytest.mark.parametrize("batch", [False, True])
def test_tversky_half_half_equals_dice(C, spatial, batch):
    logits, target = make(C, spatial)
    tv = losses.build("tversky", alpha=0.5, beta=0.5, smooth=0, batch=batch)(logits, target)
    dc = losses.build("dice", smooth=0, batch=batch)(logits, target)
    assert tv.item() == pytest.approx(dc.item(), rel=1e-12)
    # with smoothing s, Tversky(0.5, 0.5) is Dice with 2s
    tv = losses.build("tversky", alpha=0.5, beta=0.5, smooth=0.3, batch=batch)(logits, target)
    dc = losses.build("dice", smooth=0.6, batch=batch)(logits, target)
    assert tv.item() == pytest.approx(dc.item(), rel=1e-12)


def build_any(name):
    if name == "compound":
        return losses.build(name, terms=[{"name": "generalized_dice"}, {"name": "focal", "weight": 0.5}])
    if name == "deep_supervision":
        return losses.build(name, loss={"name": "dice_ce"}, weights=[1, 0.5])
    if name == "weighted_ce":
        return losses.build(name, class_weights=[0.5, 2.0])
    if name == "focal":
        return losses.build(name, gamma=2.0, alpha=0.25)
    return losses.build(name)


def call(name, loss, logits, target, weights=None):
    if name == "attentionboost":
        # Earlier stages are constants here: beta is detached by design, so finite differences
        # through stage 1 would see a dependence the analytic gradient deliberately drops.
        fixed = torch.randn(
            logits.shape, generator=torch.Generator().manual_seed(5), dtype=logits.dtype
        ).to(logits.device)
        return loss([fixed, logits], target, weights=weights)
    if name == "deep_supervision":
        return loss([logits, logits[:, :, ::2, ::2]], target, weights=weights)
    return loss(logits, target, weights=weights)


# This losses; other modules (e.g. multitask) register theirs and test them themselves.
ALL = ["attentionboost", "bce", "ce", "compound", "deep_supervision", "dice", "dice_ce", "focal",
       "generalized_dice", "tversky", "weighted_ce"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("C", [1, 2])
def test_gradcheck_float64(name, C):
    if name == "bce" and C == 2:
        pytest.skip("bce is binary")
    logits, target = make(C, (4, 4))
    logits.requires_grad_()
    loss = build_any(name)
    w = torch.rand(2, 1, 4, 4, dtype=torch.float64) + 0.5 if getattr(loss, "accepts_weights", False) else None
    fn = lambda x: call(name, loss, x, target, w)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-5, fast_mode=True)


def edge_targets(C, spatial=(4, 5)):
    zeros = torch.zeros(2, 1, *spatial, dtype=torch.long)
    ones = zeros + 1
    cases = {"empty foreground": zeros, "all foreground": ones}
    if C >= 3:
        absent = torch.randint(0, C, (2, 1, *spatial), generator=torch.Generator().manual_seed(1))
        absent[absent == 1] = 2
        cases["class absent"] = absent
    return cases


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("C", [1, 3])
def test_edge_cases_give_finite_values_and_gradients(name, C):
    if name == "bce" and C == 3:
        pytest.skip("bce is binary")
    loss = build_any(name) if name != "weighted_ce" or C == 1 else losses.build(name, class_weights=[1, 2, 3])
    if name == "focal" and C == 3:
        loss = losses.build("focal", gamma=2, alpha=[0.2, 0.3, 0.5])
    spatial = (4, 6)
    for what, target in edge_targets(C, spatial).items():
        for scale in [1.0, 1e4]:  # 1e4: probabilities exactly 0 and 1 in float32
            g = torch.Generator().manual_seed(0)
            logits = (scale * torch.randn(2, C, *spatial, generator=g)).requires_grad_()
            # predictions exactly right and exactly wrong
            for sign in [1.0, -1.0]:
                x = logits if scale == 1.0 else sign * scale * (2 * losses.functional.one_hot(target, C) - 1)
                if x is not logits:
                    x = x.clone().requires_grad_()
                w = torch.ones(2, 1, *spatial) if loss.accepts_weights else None
                value = call(name, loss, x, target, w)
                value.backward()
                assert torch.isfinite(value), f"{name} {what} scale {scale}"
                assert torch.isfinite(x.grad).all(), f"{name} {what} scale {scale} grad"


def test_weighted_ce_in_3d_equals_torch_cross_entropy_weighted_per_pixel():
    # an independent reference: torch's cross entropy per voxel, weighted and averaged over voxels
    # (dice, tversky, generalized dice and focal are checked against MONAI in 2D and 3D elsewhere)
    logits, target = make(3, (3, 4, 5))
    w = torch.rand(2, 1, 3, 4, 5, generator=torch.Generator().manual_seed(2), dtype=logits.dtype)
    per_voxel = torch.nn.functional.cross_entropy(logits, target[:, 0], reduction="none")
    assert losses.build("weighted_ce")(logits, target).item() == pytest.approx(per_voxel.mean().item(), rel=1e-12)
    got = losses.build("weighted_ce")(logits, target, weights=w).item()
    assert got == pytest.approx((w[:, 0] * per_voxel).mean().item(), rel=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ALL)
def test_cuda_value_and_gradient_equal_cpu(name, cuda_exact):
    loss = build_any(name)
    logits, target = make(1 if name == "bce" else 2, (6, 5), dtype=torch.float32)
    weights = torch.rand(2, 1, 6, 5, generator=torch.Generator().manual_seed(1))
    if not getattr(loss, "accepts_weights", False):
        weights = None
    x_cpu = logits.clone().requires_grad_()
    v_cpu = call(name, loss, x_cpu, target, weights)
    v_cpu.backward()
    x_gpu = logits.to(cuda_exact).requires_grad_()
    w_gpu = None if weights is None else weights.to(cuda_exact)
    v_gpu = call(name, loss.to(cuda_exact), x_gpu, target.to(cuda_exact), w_gpu)
    v_gpu.backward()
    torch.testing.assert_close(v_gpu.cpu(), v_cpu.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, atol=1e-5, rtol=1e-5)
