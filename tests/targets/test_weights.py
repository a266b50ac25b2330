"""The U-Net border weight map against a slow one-EDT-per-object reference, and its registry entry."""

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import watershed

import densemed.targets as targets
from densemed.errors import DensemedError
from densemed.losses import border_weight_map


def slow_reference(lab, w0=10.0, sigma=5.0, class_weights=(1.0, 1.0), spacing=None):
    """One Euclidean distance transform per object; d1, d2 = two smallest; term on background."""
    fg = lab > 0
    out = np.where(fg, class_weights[1], class_weights[0]).astype(np.float64)
    ids = np.unique(lab[fg])
    if len(ids) < 2:
        return out
    d = np.sort(np.stack([ndimage.distance_transform_edt(lab != i, sampling=spacing) for i in ids]), axis=0)
    out[~fg] += (w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2)))[~fg]
    return out


def touching_objects(shape, n, rng, radius=10.0):
    """About ``n`` touching blobs: a watershed of random seeds inside their union of balls."""
    seeds = np.zeros(shape, np.int32)
    seeds[tuple(rng.integers(0, s, n) for s in shape)] = rng.permutation(n) * 3 + 5  # non-consecutive ids
    dist = ndimage.distance_transform_edt(seeds == 0)
    return watershed(dist, seeds, mask=dist < radius).astype(np.int32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference_2d(seed):
    rng = np.random.default_rng(seed)
    lab = touching_objects((96, 120), 12, rng, radius=9)
    out = border_weight_map(lab, w0=10, sigma=5)
    assert out.dtype == np.float32 and out.shape == lab.shape
    np.testing.assert_allclose(out, slow_reference(lab), rtol=0, atol=1e-6)


def test_matches_slow_reference_2d_spacing_class_weights_and_wide_sigma():
    rng = np.random.default_rng(3)
    lab = touching_objects((80, 90), 9, rng, radius=8)
    kw = dict(w0=7.0, sigma=9.0, class_weights=(0.7, 2.5), spacing=(1.3, 0.6))
    np.testing.assert_allclose(border_weight_map(lab, **kw), slow_reference(lab, **kw), rtol=0, atol=1e-6)


@pytest.mark.parametrize("spacing", [None, (2.0, 1.0, 0.8)])
def test_matches_slow_reference_3d(spacing):
    rng = np.random.default_rng(4)
    lab = touching_objects((20, 36, 30), 8, rng, radius=7)
    out = border_weight_map(lab, w0=10, sigma=4, spacing=spacing)
    np.testing.assert_allclose(out, slow_reference(lab, sigma=4, spacing=spacing), rtol=0, atol=1e-6)


def test_zero_and_one_object_have_no_border_term():
    lab = np.zeros((10, 12), np.int64)
    out = border_weight_map(lab, class_weights=(0.5, 2))
    np.testing.assert_array_equal(out, np.full((10, 12), 0.5, np.float32))
    lab[2:5, 3:6] = 7
    out = border_weight_map(lab, class_weights=(0.5, 2))
    np.testing.assert_array_equal(out, np.where(lab > 0, 2.0, 0.5).astype(np.float32))
    np.testing.assert_allclose(out, slow_reference(lab, class_weights=(0.5, 2)), atol=1e-6)


def test_hand_value_between_two_pixels():
    lab = np.zeros((1, 7), np.int32)
    lab[0, 0], lab[0, 6] = 1, 2
    out = border_weight_map(lab, w0=10, sigma=5)
    # pixel 3: d1 = d2 = 3; pixel 1: d1 = 1, d2 = 5; inside objects: w_c = 1
    assert out[0, 3] == pytest.approx(1 + 10 * math.exp(-36 / 50), abs=1e-6)
    assert out[0, 1] == pytest.approx(1 + 10 * math.exp(-36 / 50), abs=1e-6)
    assert out[0, 0] == 1.0 and out[0, 6] == 1.0


def test_registered_as_target_border_weights():
    assert "border_weights" in targets.names()
    f = targets.build("border_weights", w0=10, sigma=5, class_weights=[1, 2])
    lab = touching_objects((40, 40), 5, np.random.default_rng(0), radius=7)
    np.testing.assert_array_equal(f(lab, None), border_weight_map(lab, 10, 5, [1, 2]))
    expected = border_weight_map(lab, 10, 5, [1, 2], spacing=(1.0, 2.0))
    np.testing.assert_array_equal(f(lab, (1.0, 2.0)), expected)


def test_bad_inputs_raise_densemed_errors():
    with pytest.raises(DensemedError, match="no option 'w1'.*'w0'"):
        targets.build("border_weights", w1=3)
    with pytest.raises(DensemedError, match="unknown target"):
        targets.build("border_weight")
    with pytest.raises(DensemedError, match="integer"):
        border_weight_map(np.zeros((4, 4), np.float32))
    with pytest.raises(DensemedError, match="spacing"):
        border_weight_map(np.zeros((4, 4), np.int32), spacing=(1.0, 1.0, 1.0))


def test_registering_a_target_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        targets.register("border_weights")(lambda instances, spacing=None: instances)
