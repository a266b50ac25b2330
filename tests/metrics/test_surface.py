import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from densemed.metrics import hausdorff, hausdorff95, mean_surface_distance, surface_distances
from densemed.metrics.surface import surface


def _blob(rng, shape, sigma=2.0):
    return ndimage.gaussian_filter(rng.random(shape), sigma) > 0.5


def _one_hot(m: np.ndarray) -> torch.Tensor:
    # binary mask (*S) -> (1, 2, *S) for MONAI
    return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))


def test_surface_is_foreground_with_a_background_face_neighbour():
    m = np.zeros((5, 5), bool)
    m[1:4, 1:4] = True
    expect = m.copy()
    expect[2, 2] = False  # the only element whose 4 neighbours are all foreground
    np.testing.assert_array_equal(surface(m), expect)
    full = np.ones((3, 3), bool)  # the image border counts as background
    assert surface(full).sum() == 8


def test_hand_computed_shifted_square_and_spacing():
    t = np.zeros((10, 10), bool)
    t[2:6, 2:6] = True
    p = np.roll(t, 3, axis=1)  # shifted 3 columns
    assert hausdorff(p, t) == pytest.approx(3.0)
    # spacing scales the shift axis only: 3 columns x 0.5 mm
    assert hausdorff(p, t, spacing=(2.0, 0.5)) == pytest.approx(1.5)
    d_pt, d_tp = surface_distances(p, t)
    assert d_pt.size == 12 and d_tp.size == 12  # a 4x4 square has 12 surface pixels
    # pred surface: left column (x=5) lies on the truth's right column -> 0; top and bottom rows
    # at x=6, 7 -> 1, 2; right column x=8 -> 3. The same by symmetry for d(T->P).
    assert sorted(d_pt.tolist()) == sorted([0.0] * 4 + [1.0, 1.0] + [2.0, 2.0] + [3.0] * 4)
    assert mean_surface_distance(p, t) == pytest.approx((2 * (0 * 4 + 2 + 4 + 12)) / 24)


def test_hd95_interpolates_the_directed_percentiles_hand_computed():
    t = np.zeros((12, 12), bool)
    t[2:6, 2:6] = True
    p = t.copy()
    p[2, 10] = True  # one outlier pixel 5 columns from the truth's surface pixel (2, 5)
    # d(P->T): 12 zeros and one 5; 95th percentile at rank 0.95 * 12 = 11.4 -> 0.4 * 5 = 2.
    # d(T->P): 12 zeros. HD95 = max(2, 0) = 2, HD = 5, ASD = 5 / 25 surface elements.
    assert hausdorff95(p, t) == pytest.approx(2.0)
    assert hausdorff(p, t) == pytest.approx(5.0)
    assert mean_surface_distance(p, t) == pytest.approx(0.2)
    assert hausdorff95(p, t, spacing=(1.0, 0.1)) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "shape, spacing",
    [((40, 50), None), ((40, 50), (0.7, 1.3)), ((20, 24, 18), None), ((20, 24, 18), (2.0, 1.0, 0.5))],
)
def test_hd95_hd_and_asd_equal_monai(rng, shape, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    for _ in range(2):
        a, b = _blob(rng, shape), _blob(rng, shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pa, pb = _one_hot(a), _one_hot(b)
            ref95 = compute_hausdorff_distance(pa, pb, percentile=95, spacing=spacing).item()
            ref = compute_hausdorff_distance(pa, pb, spacing=spacing).item()
            ref_asd = compute_average_surface_distance(pa, pb, symmetric=True, spacing=spacing).item()
        # MONAI works in float32: agree to 1e-5 relative.
        assert hausdorff95(a, b, spacing) == pytest.approx(ref95, rel=1e-5)
        assert hausdorff(a, b, spacing) == pytest.approx(ref, rel=1e-5)
        assert mean_surface_distance(a, b, spacing) == pytest.approx(ref_asd, rel=1e-5)


def test_symmetric_and_torch_input_equals_numpy(rng):
    a, b = _blob(rng, (16, 20, 12)), _blob(rng, (16, 20, 12))
    sp = (2.0, 1.0, 1.0)
    assert hausdorff95(a, b, sp) == pytest.approx(hausdorff95(b, a, sp))
    assert hausdorff95(torch.from_numpy(a), torch.from_numpy(b), sp) == hausdorff95(a, b, sp)


def test_identical_masks_have_zero_distance(rng):
    a = _blob(rng, (12, 12, 12))
    assert hausdorff(a, a) == 0 and hausdorff95(a, a) == 0 and mean_surface_distance(a, a) == 0


def test_empty_prediction_or_truth_gives_nan():
    z = np.zeros((6, 6), bool)
    m = z.copy()
    m[2:4, 2:4] = True
    for p, t in ((z, m), (m, z), (z, z)):
        assert math.isnan(hausdorff95(p, t)) and math.isnan(hausdorff(p, t))
        assert math.isnan(mean_surface_distance(p, t))


def test_bad_spacing_or_percentile_raise():
    m = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(m, m, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        hausdorff95(m, m, spacing=(0.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        hausdorff(m, m, percentile=120)
    with pytest.raises(ValueError, match="shapes differ"):
        hausdorff(m, np.ones((3, 4)))
