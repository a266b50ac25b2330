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


def test_psnr_inside_a_mask_hand_example():
    t = np.zeros((4, 4))
    t[0, 0] = 1.0  # data range 1
    p = t.copy()
    p[2:, :] += 0.1  # error only in the bottom half
    top = np.zeros((4, 4), bool)
    top[:2] = True
    assert psnr(p, t, mask=~top) == pytest.approx(20.0, abs=1e-12)  # MSE 0.01 over the masked half
    assert psnr(p, t, mask=top) == float("inf")
    assert psnr(p, t) == pytest.approx(10 * np.log10(1 / 0.005), abs=1e-12)  # the whole image: MSE halved
    with pytest.raises(ValueError, match="empty"):
        psnr(p, t, mask=np.zeros((4, 4), bool))


@pytest.mark.parametrize("shape", [(20, 24), (13, 16, 15)])
def test_ssim_inside_a_mask_equals_the_mean_of_skimages_full_map_over_it(shape):
    rng = np.random.default_rng(5)
    t = rng.random(shape)
    p = t + 0.2 * rng.standard_normal(shape)
    mask = rng.random(shape) > 0.6
    _, full = structural_similarity(t, p, data_range=1.0, win_size=7, full=True)
    inner = tuple(slice(3, n - 3) for n in shape)  # skimage's mean leaves out the overhung border
    assert ssim(p, t, data_range=1.0, mask=mask) == pytest.approx(full[inner][mask[inner]].mean(), abs=1e-8)


def test_evaluate_sr_folders_scores_tissue_and_volume_beside_the_baseline(tmp_path):
    from densemed.data.io import write_float
    from densemed.metrics.image_quality import evaluate_sr_folders, format_sr_table

    rng = np.random.default_rng(4)
    truth = np.zeros((16, 14, 12), np.float32)
    truth[4:12, 3:11, 3:9] = 50 + 10 * rng.random((8, 8, 6)).astype(np.float32)  # the object
    tissue = truth > 0  # Otsu separates the object from the empty border (no holes)
    pred = truth + np.float32(0.5) * tissue  # errs only on the tissue
    base = truth + np.float32(2.0)  # errs everywhere
    for folder, vol in (("truth", truth), ("pred", pred), ("base", base)):
        write_float(tmp_path / folder / "case_01.nii.gz", vol)
    res = evaluate_sr_folders(tmp_path / "pred", tmp_path / "truth", baseline=tmp_path / "base")
    m = res["mean"]
    r = float(truth.max() - truth.min())
    assert m["tissue_share"] == pytest.approx(tissue.mean())
    assert m["psnr_tissue"] == pytest.approx(10 * np.log10(r * r / 0.25), abs=1e-4)
    assert m["psnr"] == pytest.approx(10 * np.log10(r * r / (0.25 * tissue.mean())), abs=1e-4)
    assert m["baseline_psnr_tissue"] == pytest.approx(10 * np.log10(r * r / 4.0), abs=1e-4)
    assert m["baseline_psnr"] == pytest.approx(m["baseline_psnr_tissue"], abs=1e-4)
    assert m["gain_psnr_tissue"] == pytest.approx(m["psnr_tissue"] - m["baseline_psnr_tissue"])
    assert m["ssim_tissue"] == pytest.approx(ssim(pred, truth, data_range=r, mask=tissue), abs=1e-7)
    assert m["ssim"] == pytest.approx(ssim(pred, truth, data_range=r), abs=1e-7)
    table = format_sr_table(res)
    assert "psnr_tissue" in table and "inside the tissue mask" in table and "over the whole volume" in table
