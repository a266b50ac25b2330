"""Fourier contour descriptors: hand-known shapes, invariances, an FFT reference, the round trip, edge cases.

Discretisation tolerances (measured, stated once here): a digital disc of radius r has
``A_n / a_0 < 0.3 / r`` (its pixel boundary deviates from the circle by up to ~0.5 px) and
``|a_0 - r| < 0.1``; shapes rasterised at a different angle or after decoding differ from the
original by < 0.01 in every ``A_n / a_0``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import polygon2mask

import densemed.targets as targets
from densemed.errors import DensemedError
from densemed.targets import fourier


def disc(radius: float, size: int = 81, centre: tuple[float, float] | None = None) -> np.ndarray:
    c = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - c[0], xx - c[1]) <= radius


def ellipse(a: float, b: float, angle: float = 0.0, size: int = 81, centre=(40.3, 40.7)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    y, x = yy - centre[0], xx - centre[1]
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def reference_amplitudes(points: np.ndarray, n_harmonics: int, m: int = 1 << 16) -> tuple[float, np.ndarray]:
    """``(a_0, A_n)`` of a densely sampled closed curve: xi resampled uniformly in arc length, then an FFT."""
    p = np.asarray(points, float)
    closed = np.vstack([p, p[:1]])
    length = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    xi_knots = np.linalg.norm(closed - p.mean(0), axis=1)  # symmetric curves: centroid = vertex mean
    xi = np.interp(np.arange(m) / m * length[-1], length, xi_knots)
    c = np.fft.rfft(xi) / m
    return float(c[0].real), 2 * np.abs(c[1 : n_harmonics + 1])


# -- hand-known shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [10, 20, 30])
def test_digital_disc_has_no_harmonics_and_a0_equals_the_radius(radius):
    d = fourier.describe(disc(radius))
    assert abs(d.a0 - radius) < 0.1
    assert np.all(d.amplitudes / d.a0 < 0.3 / radius)


def test_regular_polygon_on_a_circle_has_exactly_zero_harmonics():
    t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    a0, a, b, perimeter = fourier.polygon_coefficients(np.stack([7 * np.cos(t), 7 * np.sin(t)], 1), (0, 0), 8)
    assert a0 == pytest.approx(7) and np.abs(a).max() < 1e-12 and np.abs(b).max() < 1e-12
    assert perimeter == pytest.approx(50 * 2 * 7 * np.sin(np.pi / 50))  # 50 chords


def test_ellipse_has_a_dominant_second_harmonic_matching_the_analytic_curve():
    d = fourier.describe(ellipse(30, 15))
    amp = d.amplitudes / d.a0
    assert amp.argmax() == 1 and amp[1] > 5 * np.delete(amp, 1).max()
    t = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
    a0_ref, amp_ref = reference_amplitudes(np.stack([15 * np.sin(t), 30 * np.cos(t)], 1), 8)
    assert d.a0 == pytest.approx(a0_ref, rel=0.01)
    np.testing.assert_allclose(amp, amp_ref / a0_ref, atol=0.01)


def test_square_has_energy_only_at_multiples_of_four():
    sq = np.zeros((60, 60), bool)
    sq[10:40, 10:40] = True  # contour: a 30 x 30 square (corners cut by half a pixel)
    d = fourier.describe(sq)
    amp = d.amplitudes / d.a0
    others = np.delete(amp, [3, 7])
    assert others.max() < 1e-9 and amp[3] > 0.1 and amp[7] > 0.02
    # continuous square of half-side h: a_0 = h (sqrt 2 + asinh 1) / 2
    assert d.a0 == pytest.approx(15 * (np.sqrt(2) + np.arcsinh(1)) / 2, rel=0.01)
    u = np.linspace(-15, 15, 4000, endpoint=False)
    side = np.stack([np.full_like(u, 15), u], 1)
    square = np.concatenate([side @ np.array([[np.cos(k), np.sin(k)], [-np.sin(k), np.cos(k)]])
                             for k in np.arange(4) * np.pi / 2])
    a0_ref, amp_ref = reference_amplitudes(square, 8)
    np.testing.assert_allclose(amp[[3, 7]], amp_ref[[3, 7]] / a0_ref, atol=0.01)


# -- invariances --------------------------------------------------------------------------------
def blob() -> np.ndarray:
    rng = np.random.default_rng(3)
    m = ndimage.gaussian_filter(rng.random((50, 60)), 4) > 0.5
    lab, _ = ndimage.label(m)
    return lab == np.bincount(lab.ravel())[1:].argmax() + 1


def test_amplitudes_are_invariant_to_translation_and_quarter_turns():
    m = blob()
    ref = fourier.describe(m).normalised()
    big = np.zeros((90, 100), bool)
    big[17:67, 29:89] = m
    np.testing.assert_allclose(fourier.describe(big).normalised(), ref, atol=1e-9)
    for k in (1, 2, 3):
        np.testing.assert_allclose(fourier.describe(np.rot90(m, k)).normalised(), ref, atol=1e-9)


def test_amplitudes_are_invariant_to_an_arbitrary_rotation_within_pixelisation():
    ref = fourier.describe(ellipse(30, 15, 0.0)).normalised()
    for angle in (0.3, 1.0):
        np.testing.assert_allclose(fourier.describe(ellipse(30, 15, angle)).normalised(), ref, atol=0.01)


# -- independent reference ----------------------------------------------------------------------
def step_function_coefficients(contour: np.ndarray, centroid, n_harmonics: int, m: int = 1 << 20):
    """Coefficients of the step function xi = xi_t on [l_t, l_{t+1}) by an FFT of a fine uniform sampling.

    Textbook a_n = (2/L) int xi cos, b_n = (2/L) int xi sin; the issue's sums are their negatives.
    """
    p = np.asarray(contour, float)
    xi = np.linalg.norm(p - centroid, axis=1)
    knots = np.concatenate([[0], np.cumsum(np.linalg.norm(np.roll(p, -1, 0) - p, axis=1))])
    length = knots[-1]
    at = (np.arange(m) + 0.5) / m * length  # midpoints of m equal steps
    samples = xi[np.searchsorted(knots[:-1], at, side="right") - 1]
    c = np.fft.fft(samples)[1 : n_harmonics + 1] / m
    c = c * np.exp(-1j * np.pi * np.arange(1, n_harmonics + 1) / m)  # C_n, undoing the half-step offset
    return -2 * c.real, 2 * c.imag  # C_n = (a_n - i b_n) / 2 in textbook terms; the are the negatives


def test_closed_form_sums_equal_an_fft_of_the_step_function():
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    star = np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(5, 12, (40, 1))
    for contour, centre in ((star, np.zeros(2)), (fourier.trace_contour(blob()), np.argwhere(blob()).mean(0))):
        a0, a, b, _ = fourier.polygon_coefficients(contour, centre, 6)
        a_ref, b_ref = step_function_coefficients(contour, centre, 6)
        np.testing.assert_allclose(a, a_ref, atol=1e-4)
        np.testing.assert_allclose(b, b_ref, atol=1e-4)


def test_a0_is_the_arc_length_mean_of_the_piecewise_linear_distance():
    rng = np.random.default_rng(1)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 30))
    p = np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(4, 9, (30, 1))
    closed = np.vstack([p, p[:1]])
    knots = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    # dense points along each edge, distances to the origin, linearly interpolated (= trapezoid of xi)
    along = np.linspace(0, knots[-1], 200001)
    xi_lin = np.interp(along, knots, np.linalg.norm(closed, axis=1))
    a0, *_ = fourier.polygon_coefficients(p, (0, 0), 3)
    assert a0 == pytest.approx(np.trapezoid(xi_lin, along) / knots[-1], rel=1e-6)


# -- decoding -----------------------------------------------------------------------------------
def test_decode_of_pure_a0_is_a_circle_of_that_radius():
    xi, contour = fourier.decode(6.0, np.zeros(4), np.zeros(4), centroid=(3, -2), n_points=100)
    np.testing.assert_allclose(xi, 6.0)
    np.testing.assert_allclose(np.hypot(contour[:, 0] - 3, contour[:, 1] + 2), 6.0)
    np.testing.assert_allclose(np.linalg.norm(np.diff(contour, axis=0), axis=1), 2 * 6 * np.sin(np.pi / 100))


def star(size: int = 61) -> np.ndarray:
    """A star-shaped object with 3- and 5-fold lobes, r(theta) = 16 + 4 cos(3 theta + 1) + 2 sin(5 theta)."""
    yy, xx = np.mgrid[:size, :size]
    theta = np.arctan2(yy - 30.2, xx - 29.6)
    return np.hypot(yy - 30.2, xx - 29.6) <= 16 + 4 * np.cos(3 * theta + 1) + 2 * np.sin(5 * theta)


@pytest.mark.parametrize("shape", ["ellipse", "square", "star"])
def test_round_trip_encode_decode_rasterise_encode(shape):
    """Exact up to pixelisation for contours that are star-shaped around the centroid (module docstring)."""
    if shape == "ellipse":
        m = ellipse(30, 15, 0.3)
    elif shape == "square":
        m = np.zeros((60, 60), bool)
        m[10:40, 10:40] = True
    else:
        m = star()
    d = fourier.describe(m)
    _, contour = fourier.decode(d.a0, d.a, d.b, d.centroid, d.start_angle, n_points=512)
    back = fourier.describe(polygon2mask(m.shape, contour))
    assert back.a0 == pytest.approx(d.a0, rel=0.01)
    np.testing.assert_allclose(back.amplitudes / back.a0, d.amplitudes / d.a0, atol=0.01)
    assert np.hypot(*np.subtract(back.centroid, d.centroid)) < 0.5


def test_normalise_hand_values_and_inverse():
    v = fourier.normalise(10.0, np.array([1.0, 2.0]), a0_scale=10.0)
    np.testing.assert_allclose(v, [np.log(2), 0.1, 0.2])
    a0, amp = fourier.denormalise(v, a0_scale=10.0)
    assert a0 == pytest.approx(10.0) and np.allclose(amp, [1, 2])


# -- edge cases ---------------------------------------------------------------------------------
def test_object_touching_the_border_is_traced_on_a_zero_padded_map():
    half = disc(20, size=81, centre=(0, 40))[:41]  # a half disc cut by the top edge
    d = fourier.describe(half)
    padded = fourier.describe(np.pad(half, 5))
    np.testing.assert_allclose(d.normalised(), padded.normalised(), atol=1e-9)
    assert np.all(np.isfinite(d.normalised()))
    # the straight cut along the edge belongs to the contour: perimeter ~ pi r + 2 r, not pi r
    assert d.perimeter > np.pi * 20 + 2 * 20 - 2


@pytest.mark.parametrize("pixels", [[(5, 5)], [(5, 5), (5, 6)], [(5, 5), (6, 6), (6, 5)]])
def test_objects_of_one_to_three_pixels_are_discs_of_their_area(pixels):
    lab = np.zeros((12, 12), np.int32)
    for r, c in pixels:
        lab[r, c] = 3
    d = fourier.encode(lab)[3]
    assert d.a0 == pytest.approx(np.sqrt(len(pixels) / np.pi))
    assert not d.amplitudes.any()
    dense = fourier.descriptor_map(lab)
    assert np.isfinite(dense).all()
    np.testing.assert_allclose(dense[0, 5, 5], np.log1p(d.a0 / 10.0), rtol=1e-6)


def test_four_pixel_object_is_traced_and_finite():
    lab = np.zeros((8, 8), np.int32)
    lab[2:4, 2:4] = 1
    d = fourier.encode(lab)[1]
    assert d.perimeter > 0 and np.isfinite(d.normalised()).all()


def test_zero_objects_give_an_all_zero_map():
    out = targets.build("fourier", n_harmonics=5)(np.zeros((9, 11), np.int32), None)
    assert out.shape == (6, 9, 11) and out.dtype == np.float32 and not out.any()


def test_dense_map_holds_each_objects_vector_inside_it_and_zero_outside():
    lab = np.zeros((60, 80), np.int64)
    lab[ellipse(12, 6, size=80, centre=(20, 20))[:60]] = 70000  # large, sparse ids
    lab[disc(9, size=80, centre=(40, 55))[:60]] = 3
    out = fourier.descriptor_map(lab, n_harmonics=6, a0_scale=5.0)
    objects = fourier.encode(lab, n_harmonics=6)
    assert set(objects) == {3, 70000}
    for obj_id, d in objects.items():
        inside = out[:, lab == obj_id]
        np.testing.assert_allclose(inside, np.repeat(d.normalised(5.0)[:, None], inside.shape[1], 1), rtol=1e-6)
    assert not out[:, lab == 0].any()
    # the ellipse is elongated, the disc is not
    assert out[2, 20, 20] > 0.2 and out[2, 40, 55] < 0.05


def test_registered_target_is_the_dense_map_and_is_resampled_by_nearest_neighbour():
    lab = np.zeros((30, 30), np.int32)
    lab[5:20, 8:25] = 2
    np.testing.assert_array_equal(targets.build("fourier", n_harmonics=3)(lab, None),
                                  fourier.descriptor_map(lab, n_harmonics=3))
    assert targets.augment_mode("fourier") == "nearest"
    assert fourier.descriptor_map.augment == "nearest"
    assert fourier.descriptor_channels(3) == 4


def test_an_id_in_two_pieces_is_encoded_from_its_largest_piece():
    lab = np.zeros((40, 40), np.int32)
    lab[disc(10, size=40, centre=(15, 15))] = 1
    lab[35, 35] = 1  # a stray pixel with the same id
    alone = lab.copy()
    alone[35, 35] = 0
    np.testing.assert_allclose(fourier.encode(lab)[1].normalised(), fourier.encode(alone)[1].normalised())
    assert fourier.descriptor_map(lab)[0, 35, 35] == fourier.descriptor_map(lab)[0, 15, 15]


def test_spacing_measures_the_contour_in_physical_units():
    rect = np.zeros((40, 60), bool)
    rect[10:25, 10:40] = True  # 15 rows x 30 columns; with row spacing 2 a 30 x 30 square
    sq = np.zeros((60, 60), bool)
    sq[10:40, 10:40] = True
    d = fourier.describe(rect, spacing=(2.0, 1.0))
    ref = fourier.describe(sq)
    assert d.a0 == pytest.approx(ref.a0, rel=0.01)
    np.testing.assert_allclose(d.amplitudes / d.a0, ref.amplitudes / ref.a0, atol=0.01)


def test_bad_input_raises_densemed_errors():
    with pytest.raises(DensemedError, match="2D label map"):
        fourier.descriptor_map(np.zeros((3, 4, 5), np.int32))
    with pytest.raises(DensemedError, match="integers"):
        fourier.descriptor_map(np.zeros((3, 4), np.float32))
    with pytest.raises(DensemedError, match="n_harmonics"):
        fourier.descriptor_map(np.ones((3, 4), np.int32), n_harmonics=0)


def test_preview_writes_a_png_of_true_and_decoded_contours(tmp_path):
    lab = np.zeros((60, 80), np.int32)
    lab[ellipse(20, 10, size=80, centre=(30, 30))[:60]] = 1
    lab[50:55, 60:75] = 2
    lab[2, 2] = 3
    path = fourier.preview(lab, tmp_path / "sub" / "fourier.png", n_harmonics=6)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
