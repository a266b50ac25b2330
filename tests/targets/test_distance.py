"""DeepDistance's inner / outer distance maps: hand values, brute-force reference, round trip."""

from __future__ import annotations

import numpy as np
import pytest

import densemed.targets as targets
from densemed.metrics.instance import aggregated_jaccard, overlap_matrix
from densemed.targets import distance


def test_inner_distance_hand_values_on_a_3x3_cell():
    lab = np.zeros((5, 5), np.int32)
    lab[1:4, 1:4] = 2
    d = distance.encode_inner(lab)
    assert d[2, 2] == pytest.approx(1.0)
    assert d[1, 2] == pytest.approx(1 / 1.1)
    assert d[1, 1] == pytest.approx(1 / (1 + 0.1 * np.sqrt(2)))
    assert d[0, 0] == 0 and d.dtype == np.float32


def test_outer_distance_hand_values():
    lab = np.zeros((1, 7), np.int32)
    lab[0, 1:6] = 1
    np.testing.assert_allclose(distance.encode_outer(lab)[0], [0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0], atol=1e-6)
    # two touching cells: each is measured against the other's pixels too
    lab = np.array([[0, 1, 1, 1, 2, 2, 0]])
    np.testing.assert_allclose(distance.encode_outer(lab)[0], [0, 0.5, 1, 0.5, 1, 1, 0], atol=1e-6)


def _brute_outer(lab: np.ndarray) -> np.ndarray:
    """The definition literally: B_i = pixels outside cell i that are 4-neighbours of it."""
    out = np.zeros(lab.shape)
    h, w = lab.shape
    for i in np.unique(lab[lab > 0]):
        cell = np.argwhere(lab == i)
        border = set()
        for y, x in cell:
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and lab[yy, xx] != i:
                    border.add((yy, xx))
        b = np.array(sorted(border), float)
        d = np.array([np.min(np.hypot(*(b - q).T)) for q in cell])
        out[tuple(cell.T)] = d / d.max()
    return out


def _brute_inner(lab: np.ndarray) -> np.ndarray:
    out = np.zeros(lab.shape)
    for i in np.unique(lab[lab > 0]):
        pts = np.argwhere(lab == i).astype(float)
        c = pts.mean(0)
        out[tuple(pts.astype(int).T)] = 1 / (1 + 0.1 * np.linalg.norm(pts - c, axis=1))
    return out


def test_maps_equal_the_definitions_on_random_blobs(rng):
    from scipy import ndimage

    for _ in range(3):
        blobs = ndimage.gaussian_filter(rng.random((24, 30)), 2) > 0.5
        lab = np.zeros(blobs.shape, np.int32)
        lab[blobs] = rng.integers(1, 5, blobs.sum())  # ragged touching cells, some disconnected
        lab = ndimage.median_filter(lab, 3) * blobs
        inner, outer = distance.encode(lab)
        np.testing.assert_allclose(inner, _brute_inner(lab), atol=1e-6)
        np.testing.assert_allclose(outer, _brute_outer(lab), atol=1e-6)


def test_registry_builds_the_maps():
    lab = np.zeros((4, 6), np.int32)
    lab[1:3, 1:5] = 1
    np.testing.assert_array_equal(targets.build("inner_distance", alpha=0.1)(lab, None), distance.encode_inner(lab))
    np.testing.assert_array_equal(targets.build("outer_distance")(lab, None), distance.encode_outer(lab))


def test_spacing_scales_the_inner_distance():
    lab = np.zeros((1, 5), np.int32)
    lab[0, 1:4] = 1
    assert distance.encode_inner(lab, spacing=(1.0, 2.0))[0, 1] == pytest.approx(1 / 1.2)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    inter, ta, pa = overlap_matrix(a, b)
    return len(ta) == len(pa) and np.all((inter > 0).sum(0) == 1) and np.all(inter.max(0) == pa) and np.all(
        inter.max(1) == ta
    )


def test_decode_encode_round_trip_on_squares():
    lab = np.zeros((20, 30), np.int32)
    lab[2:12, 2:12] = 1
    lab[2:12, 12:22] = 2  # touching
    lab[14:18, 3:9] = 3
    inner, outer = distance.encode(lab)
    for landscape in ("inner", "outer", "sum"):
        assert _same_partition(distance.decode(inner, outer, landscape=landscape), lab)


def test_decode_encode_round_trip_on_touching_discs():
    yy, xx = np.mgrid[:40, :60]
    lab = np.zeros((40, 60), np.int32)
    lab[(yy - 20) ** 2 + (xx - 20) ** 2 <= 144] = 1
    lab[((yy - 20) ** 2 + (xx - 42) ** 2 <= 100) & (lab == 0)] = 2
    lab[(yy - 6) ** 2 + (xx - 52) ** 2 <= 16] = 3
    inner, outer = distance.encode(lab)
    out = distance.decode(inner, outer)
    assert out.max() == 3
    # the watershed line between unequal discs may shift by a pixel or two
    assert aggregated_jaccard(out, lab) > 0.99


def test_markers_one_per_cell_and_h_merges_shallow_peaks():
    inner = np.array([[0, 0.5, 0.9, 0.85, 0.88, 0.5, 0]])
    assert distance.markers(inner, h=0.01).max() == 2
    assert distance.markers(inner, h=0.05).max() == 1
