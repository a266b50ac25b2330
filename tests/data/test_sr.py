import numpy as np
import pytest
import torch
from scipy import ndimage

from densemed.data.sr import degrade, downsample, tricubic_baseline, upsample_cubic
from densemed.metrics.image_quality import psnr
from densemed.nets.deepresolve import DeepResolve


def test_downsample_averages_blocks_hand_example():
    v = np.array([1.0, 3.0, 5.0, 7.0, 9.0, 11.0])
    np.testing.assert_array_equal(downsample(v, 3, 0), [3.0, 9.0])
    np.testing.assert_array_equal(downsample(v, 2, 0), [2.0, 6.0, 10.0])
    # 5 slices, factor 2: the last block repeats the last slice -> (9 + 9) / 2
    np.testing.assert_array_equal(downsample(v[:5], 2, 0), [2.0, 6.0, 9.0])


def test_degrade_hand_examples_exact():
    # one thick slice covering the whole axis -> every thin slice gets the block mean
    v = np.zeros((2, 3, 4))
    v[..., :] = [1.0, 2.0, 3.0, 6.0]
    np.testing.assert_allclose(degrade(v, 4, axis=2), np.full((2, 3, 4), 3.0), atol=1e-12)
    # constant along the slice axis is unchanged by averaging and by interpolation (to 1e-5:
    # scipy's spline prefilter starts its recursion from a truncated boundary sum)
    c = np.random.default_rng(0).random((5, 6, 1)).repeat(8, axis=2)
    np.testing.assert_allclose(degrade(c, 2, axis=2), c, atol=1e-5)
    # factor 1 is the identity
    np.testing.assert_array_equal(degrade(c, 1, axis=0), c)


@pytest.mark.parametrize(("shape", "factor", "axis"), [((8, 9, 12), 2, 2), ((8, 9, 12), 4, 2), ((9, 6, 7), 3, 0)])
def test_degrade_equals_scipy_zoom_order3_grid_mode(shape, factor, axis):
    y = np.random.default_rng(1).random(shape)
    lr = downsample(y, factor, axis)
    zoom = [1] * 3
    zoom[axis] = factor
    ref = ndimage.zoom(lr, zoom, order=3, mode="reflect", grid_mode=True)
    ref = ref[tuple(slice(0, s) for s in shape)]
    np.testing.assert_allclose(degrade(y, factor, axis), ref, atol=1e-6)  # scipy prefilter truncation
    np.testing.assert_allclose(tricubic_baseline(lr, factor, axis, shape[axis]), ref, atol=1e-6)


def test_upsample_interpolates_coarse_samples_at_block_centres():
    # factor 3: thin slice 3j + 1 sits at the centre of thick slice j -> exact sample value
    lr = np.random.default_rng(2).random((4, 5, 6))
    up = upsample_cubic(lr, 3, axis=1)
    np.testing.assert_allclose(up[:, 1::3], lr, atol=1e-5)


def test_degrade_keeps_float32_and_rejects_bad_factor():
    v = np.ones((4, 4, 4), np.float32)
    assert degrade(v, 2, 2).dtype == np.float32
    with pytest.raises(ValueError, match="factor"):
        degrade(v, 0, 2)
    with pytest.raises(ValueError, match="axis"):
        degrade(v, 2, 3)


def smooth_volume(rng: np.random.Generator, n: int = 24) -> np.ndarray:
    """Sum of 6 random plane waves with frequencies <= 0.2 cycles/voxel (below the LR Nyquist 0.25)."""
    z, y, x = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    v = np.zeros((n, n, n))
    for _ in range(6):
        f = rng.uniform(-0.2, 0.2, 3)
        v += np.cos(2 * np.pi * (f[0] * z + f[1] * y + f[2] * x) + rng.uniform(0, 2 * np.pi))
    return v.astype(np.float32)


@pytest.mark.slow  # about 4-7 s on one idle CPU thread (60 steps)
def test_tiny_deepresolve_beats_tricubic_psnr_after_short_training():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = [smooth_volume(rng) for _ in range(4)]
    test = smooth_volume(rng)
    x = torch.from_numpy(np.stack([degrade(v, 2, axis=2) for v in train]))[:, None]
    y = torch.from_numpy(np.stack(train))[:, None]
    net = DeepResolve(depth=3, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    lr_test = degrade(test, 2, axis=2)
    with torch.no_grad():
        pred = net(torch.from_numpy(lr_test)[None, None])[0, 0].numpy()
    base = psnr(lr_test, test)
    ours = psnr(pred, test)
    assert 30 < base < 40  # the degradation is mild but real
    assert ours > base + 1.0, (ours, base)  # measured: 36.2 dB vs 34.3 dB tricubic


# ------------------------------------------------------------------------ tissue masks, scaling, patches
def test_otsu_threshold_equals_skimage():
    from skimage.filters import threshold_otsu

    from densemed.data.sr import otsu_threshold

    rng = np.random.default_rng(3)
    # a brain-like histogram: 60 % empty background, two tissue classes
    v = np.concatenate([np.zeros(6000), rng.normal(80, 10, 2500), rng.normal(150, 12, 1500)])
    assert otsu_threshold(v) == pytest.approx(threshold_otsu(v), rel=1e-12)
    w = rng.gamma(2.0, 3.0, 5000)
    assert otsu_threshold(w) == pytest.approx(threshold_otsu(w), rel=1e-12)


def test_tissue_mask_hand_examples():
    from densemed.data.sr import tissue_mask

    v = np.zeros((12, 12, 12))
    v[3:9, 3:9, 3:9] = 100.0
    v[5:7, 5:7, 5:7] = 0.0  # a "ventricle" enclosed in 3D: filled
    assert tissue_mask(v).sum() == 6**3
    assert tissue_mask(v, fill_holes=False).sum() == 6**3 - 2**3
    # threshold: a fraction of the [0.5th, 99.5th] percentile range; values 0..99 along one axis
    ramp = np.broadcast_to(np.arange(100.0), (4, 100)).copy()
    lo, hi = np.percentile(ramp, [0.5, 99.5])
    expected = 4 * np.sum(np.arange(100) > lo + 0.5 * (hi - lo))
    assert tissue_mask(ramp, "threshold", 0.5, fill_holes=False).sum() == expected
    assert tissue_mask(v, "none").all()
    with pytest.raises(ValueError, match="mask method"):
        tissue_mask(v, "kmeans")


def test_intensity_scale_is_undone_exactly_and_never_clips():
    from densemed.data.sr import intensity_scale

    v = np.random.default_rng(4).gamma(2.0, 2e5, (10, 11, 12)).astype(np.float32)  # float crops reach 1e6
    shift, scale = intensity_scale(v)
    lo, hi = np.percentile(v.astype(np.float64), [0.5, 99.5])
    assert (shift, scale) == (pytest.approx(lo), pytest.approx(hi - lo))
    y = (v - shift) / scale
    assert y.max() > 1.0  # the hot voxels above the 99.5th percentile are kept, not clipped
    np.testing.assert_allclose(y * scale + shift, v, rtol=1e-6)


def test_tissue_patches_on_a_volume_with_a_large_empty_border_are_never_mostly_background():
    from densemed.data.sr import tissue_patch_starts

    mask = np.zeros((64, 60, 56), bool)
    mask[24:44, 20:42, 22:40] = True  # the object fills 6 % of the volume
    size = (16, 16, 12)
    starts = tissue_patch_starts(mask, size, 20, 0.5, np.random.default_rng(5))
    shares = [mask[a : a + 16, b : b + 16, c : c + 12].mean() for a, b, c in starts]
    assert min(shares) >= 0.5
    assert len(set(starts)) == 20  # distinct positions while there are enough
    # a uniformly placed patch would be mostly background most of the time (what the rule prevents)
    rng = np.random.default_rng(6)
    uniform = [mask[a : a + 16, b : b + 16, c : c + 12].mean()
               for a, b, c in zip(rng.integers(0, 49, 50), rng.integers(0, 45, 50), rng.integers(0, 45, 50))]
    assert np.mean(np.array(uniform) < 0.5) > 0.8


def test_tissue_patches_of_an_object_smaller_than_the_patch_take_the_fullest_positions():
    from densemed.data.sr import tissue_patch_starts

    mask = np.zeros((20, 20), bool)
    mask[8:11, 8:11] = True  # 9 voxels; an 8x8 patch holds it whole at 36 positions: share 9/64
    starts = tissue_patch_starts(mask, (8, 8), 5, 0.5, np.random.default_rng(7))
    assert all(mask[a : a + 8, b : b + 8].sum() == 9 for a, b in starts)
    # a side longer than the volume: the single centred start (s - p) // 2
    (start,) = tissue_patch_starts(np.ones((6, 20), bool), (10, 8), 1, 0.5, np.random.default_rng(8))
    assert start[0] == -2
