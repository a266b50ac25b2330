import numpy as np
import pytest
import torch

from densemed import losses
from densemed.errors import DensemedError
from densemed.losses.restoration import L1Loss, SSIML1Loss, SSIMLoss, ssim_map
from densemed.metrics.image_quality import ssim as ssim_numpy


def test_l1_hand_values_plain_and_weighted():
    out = torch.zeros(1, 1, 2, 2)
    tgt = torch.tensor([[[[1.0, 0.0], [0.0, 3.0]]]])
    assert float(L1Loss()(out, tgt)) == pytest.approx(1.0)  # (1 + 0 + 0 + 3) / 4
    w = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    assert float(L1Loss()(out, tgt, weights=w)) == pytest.approx(1 / 3)  # the 3 is weighted out


@pytest.mark.parametrize("shape", [(2, 1, 19, 23), (1, 2, 13, 15, 12)])
def test_ssim_loss_mean_equals_numpy_gaussian_ssim_metric(shape):
    # the numpy metric (itself equal to skimage's Gaussian SSIM) on each image and channel
    rng = np.random.default_rng(0)
    t = rng.random(shape)
    p = 0.7 * t + 0.2 * rng.random(shape)
    got = 1 - float(SSIMLoss(data_range=1.0)(torch.from_numpy(p), torch.from_numpy(t)))
    ref = np.mean([ssim_numpy(p[b, c], t[b, c], data_range=1.0, gaussian=True)
                   for b in range(shape[0]) for c in range(shape[1])])
    assert got == pytest.approx(ref, abs=1e-10)


def test_ssim_of_constant_images_by_hand():
    # constant x = 0, y = 2: means 0 and 2, no variance -> SSIM = C1 / (4 + C1), C1 = 1e-4
    x = torch.zeros(1, 1, 12, 12)
    c1 = 1e-4
    assert float(SSIMLoss()(x, x + 2)) == pytest.approx(1 - c1 / (4 + c1), rel=1e-6)
    assert float(SSIMLoss()(x + 2, x + 2)) == pytest.approx(0.0, abs=1e-7)


def test_ssim_l1_special_cases_alpha_zero_is_l1_alpha_one_is_ssim():
    rng = torch.Generator().manual_seed(0)
    p, t = torch.rand(2, 1, 14, 13, generator=rng), torch.rand(2, 1, 14, 13, generator=rng)
    w = (torch.rand(2, 1, 14, 13, generator=rng) > 0.3).float()
    assert float(SSIML1Loss(alpha=0)(p, t, w)) == pytest.approx(float(L1Loss()(p, t, w)), rel=1e-6)
    assert float(SSIML1Loss(alpha=1)(p, t, w)) == pytest.approx(float(SSIMLoss()(p, t, w)), rel=1e-6)
    mix = 0.84 * float(SSIMLoss()(p, t)) + 0.16 * float(L1Loss()(p, t))
    assert float(losses.build("ssim_l1")(p, t)) == pytest.approx(mix, rel=1e-6)


def test_weights_restrict_the_ssim_to_the_weighted_voxels():
    # weights 1 on one half: the loss equals the mean of the SSIM map over that half (valid positions)
    rng = torch.Generator().manual_seed(1)
    p, t = torch.rand(1, 1, 20, 20, generator=rng), torch.rand(1, 1, 20, 20, generator=rng)
    w = torch.zeros(1, 1, 20, 20)
    w[..., :10, :] = 1
    m = ssim_map(p, t)  # (1, 1, 10, 10): rows 5..14 of the image
    assert float(SSIMLoss()(p, t, w)) == pytest.approx(1 - float(m[..., :5, :].mean()), rel=1e-6)


@pytest.mark.parametrize("name", ["l1", "ssim", "ssim_l1"])
def test_gradcheck_float64(name):
    torch.manual_seed(0)
    loss = losses.build(name)
    shape = (1, 1, 4, 5) if name == "l1" else (1, 1, 11, 12)  # the SSIM window needs 11 voxels
    p = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    t = torch.rand(shape, dtype=torch.float64)
    w = torch.rand(shape, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, weights=w), (p,))


def test_bad_options_and_inputs_raise():
    with pytest.raises(DensemedError, match="alpha"):
        losses.build("ssim_l1", alpha=1.5)
    with pytest.raises(DensemedError, match="data_range"):
        losses.build("ssim", data_range=0)
    with pytest.raises(DensemedError, match="reduction"):
        losses.build("l1", reduction="sum")
    with pytest.raises(ValueError, match="smaller than"):
        SSIMLoss()(torch.zeros(1, 1, 8, 20), torch.zeros(1, 1, 8, 20))
    with pytest.raises(ValueError, match="must match"):
        L1Loss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="weights"):
        L1Loss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), weights=torch.ones(1, 2, 4, 4))


def test_ssim_loss_under_bf16_autocast_stays_close_to_float32():
    rng = torch.Generator().manual_seed(2)
    p, t = torch.rand(1, 1, 16, 16, 16, generator=rng), torch.rand(1, 1, 16, 16, 16, generator=rng)
    ref = float(SSIMLoss()(p, t))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = float(SSIMLoss()(p.bfloat16(), t))
    assert got == pytest.approx(ref, abs=5e-3)  # inputs rounded to bf16 (8 bits); statistics in float32
