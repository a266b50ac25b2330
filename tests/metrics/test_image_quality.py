import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from densemed.metrics.image_quality import psnr, ssim


def test_psnr_hand_example():
    t = np.zeros((4, 4))
    t[0, 0] = 1.0  # data range 1 by default (max - min)
    assert psnr(t + 0.1, t) == pytest.approx(20.0, abs=1e-12)  # 10 log10(1 / 0.01)
    assert psnr(t + 0.1, t, data_range=10.0) == pytest.approx(40.0, abs=1e-12)
    assert psnr(t, t) == float("inf")


@pytest.mark.parametrize("shape", [(20, 24), (13, 16, 15)])
def test_psnr_equals_skimage(shape):
    rng = np.random.default_rng(0)
    t = 100 * rng.random(shape)
    p = t + 5 * rng.standard_normal(shape)
    ref = peak_signal_noise_ratio(t, p, data_range=t.max() - t.min())
    assert psnr(p, t) == pytest.approx(ref, rel=1e-12)
    assert psnr(p, t, data_range=255) == pytest.approx(peak_signal_noise_ratio(t, p, data_range=255), rel=1e-12)


@pytest.mark.parametrize("shape", [(20, 24), (13, 16, 15)])
def test_ssim_uniform_window_equals_skimage_default(shape):
    rng = np.random.default_rng(1)
    t = rng.random(shape)
    p = t + 0.2 * rng.standard_normal(shape)
    ref = structural_similarity(t, p, data_range=1.0, win_size=7)
    assert ssim(p, t, data_range=1.0) == pytest.approx(ref, abs=1e-8)
    ref_default_range = structural_similarity(t, p, data_range=t.max() - t.min())
    assert ssim(p, t) == pytest.approx(ref_default_range, abs=1e-8)


@pytest.mark.parametrize("shape", [(20, 24), (13, 16, 15)])
def test_ssim_gaussian_window_equals_skimage_wang(shape):
    rng = np.random.default_rng(2)
    t = rng.random(shape)
    p = 0.8 * t + 0.1 * rng.standard_normal(shape)
    ref = structural_similarity(
        t, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(p, t, data_range=1.0, gaussian=True) == pytest.approx(ref, abs=1e-8)


def test_ssim_identical_is_one_and_independent_noise_is_near_zero():
    rng = np.random.default_rng(3)
    t = rng.random((32, 32, 32))
    assert ssim(t, t) == pytest.approx(1.0, abs=1e-12)
    assert abs(ssim(rng.random(t.shape), t)) < 0.05


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="window"):
        ssim(np.random.rand(5, 5), np.random.rand(5, 5))
    with pytest.raises(ValueError, match="2D or 3D"):
        ssim(np.random.rand(8, 8, 8, 8), np.random.rand(8, 8, 8, 8))


def test_evaluate_sr_folders_scores_prediction_and_baseline(tmp_path):
    from densemed.data.io import write_float
    from densemed.metrics.image_quality import evaluate_sr_folders, format_sr_table

    rng = np.random.default_rng(4)
    truth = rng.random((12, 10, 9)).astype(np.float32)
    pred = truth + np.float32(0.01)
    base = truth + np.float32(0.1)
    for folder, vol in (("truth", truth), ("pred", pred), ("base", base)):
        write_float(tmp_path / folder / "case_01.nii.gz", vol)
    res = evaluate_sr_folders(tmp_path / "pred", tmp_path / "truth", baseline=tmp_path / "base")
    r = float(truth.max() - truth.min())
    assert res["mean"]["psnr"] == pytest.approx(10 * np.log10(r * r / 1e-4), abs=1e-3)
    assert res["mean"]["baseline_psnr"] == pytest.approx(res["mean"]["psnr"] - 20, abs=1e-3)
    assert res["mean"]["ssim"] > res["mean"]["baseline_ssim"]
    assert "baseline_psnr" in format_sr_table(res)
