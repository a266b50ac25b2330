"""Separation seams between touching objects: hand-built maps and a brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from densemed.targets.seams import separate


def _brute_force(lab: np.ndarray, width: int) -> np.ndarray:
    """The definition pixel by pixel: an object pixel with another object within chessboard ``width`` is cleared."""
    out = lab.copy()
    for p in itertools.product(*(range(n) for n in lab.shape)):
        if lab[p] == 0:
            continue
        box = tuple(slice(max(c - width, 0), c + width + 1) for c in p)
        around = lab[box]
        if np.any((around > 0) & (around != lab[p])):
            out[p] = 0
    return out


def test_two_blocks_side_by_side_lose_one_column_each():
    lab = np.zeros((4, 8), np.int32)
    lab[:, :4], lab[:, 4:] = 1, 2
    out = separate(lab, 1)
    assert (out[:, 3] == 0).all() and (out[:, 4] == 0).all()  # the 2-pixel seam
    assert (out[:, :3] == 1).all() and (out[:, 5:] == 2).all()  # nothing else changes
    wide = separate(lab, 2)
    assert (wide[:, 2:6] == 0).all() and (wide[:, :2] == 1).all() and (wide[:, 6:] == 2).all()


def test_an_object_next_to_background_or_the_image_edge_keeps_every_pixel():
    lab = np.zeros((6, 6), np.int64)
    lab[:3, :3] = 7  # touches the image edge and the background only
    np.testing.assert_array_equal(separate(lab, 2), lab)


def test_a_diagonal_contact_is_cut_and_width_zero_is_a_copy():
    lab = np.zeros((4, 4), np.uint16)
    lab[:2, :2], lab[2:, 2:] = 1, 2  # corners meet at (1, 1) / (2, 2)
    out = separate(lab, 1)
    assert out[1, 1] == 0 and out[2, 2] == 0 and out[0, 0] == 1 and out[3, 3] == 2
    assert out.dtype == lab.dtype
    same = separate(lab, 0)
    np.testing.assert_array_equal(same, lab)
    assert same is not lab


@pytest.mark.parametrize("shape, width", [((23, 19), 1), ((23, 19), 2), ((7, 9, 8), 1)])
def test_random_label_maps_match_the_pixel_by_pixel_definition(shape, width):
    rng = np.random.default_rng(sum(shape) + width)
    lab = rng.integers(0, 4, shape).astype(np.int32)  # ids 0..3, many contacts in every direction
    lab[rng.random(shape) < 0.3] = 0
    np.testing.assert_array_equal(separate(lab, width), _brute_force(lab, width))


def test_a_negative_width_is_refused():
    with pytest.raises(ValueError, match="width must be >= 0"):
        separate(np.zeros((3, 3), int), -1)
