"""Contour and foreground targets from instance maps; instance-map validation."""

from __future__ import annotations

import numpy as np
import pytest

import densemed.targets as targets
from densemed.errors import DensemedError
from densemed.targets import check_instances, contours


def touching_squares() -> np.ndarray:
    lab = np.zeros((5, 8), np.int32)
    lab[1:4, 1:4] = 1
    lab[1:4, 4:7] = 2
    return lab


def test_contour_marks_both_sides_of_a_touching_boundary():
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 1, 1, 1, 0],
            [0, 1, 0, 1, 1, 0, 1, 0],
            [0, 1, 1, 1, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(contours.encode(touching_squares()), expected)


def test_contour_thickness_two_on_a_square():
    lab = np.zeros((9, 9), np.int32)
    lab[1:8, 1:8] = 3
    c = contours.encode(lab, thickness=2)
    # the ring of width 2 inside the 7x7 square: 49 - 3*3 pixels
    assert c.sum() == 49 - 9
    assert c[4, 4] == 0 and c[2, 2] == 1 and c[3, 3] == 0
    assert c.dtype == np.float32


def test_contour_outer_and_both_modes():
    lab = np.zeros((5, 5), np.int32)
    lab[2, 2] = 1
    outer = contours.encode(lab, mode="outer")
    assert outer.sum() == 4 and outer[1, 2] == 1 and outer[2, 2] == 0
    assert contours.encode(lab, mode="both").sum() == 5


def test_image_border_is_not_a_contour():
    lab = np.ones((4, 4), np.int32)
    assert contours.encode(lab).sum() == 0


def test_contour_3d_cube():
    lab = np.zeros((5, 5, 5), np.int32)
    lab[1:4, 1:4, 1:4] = 1
    assert contours.encode(lab).sum() == 27 - 1  # every voxel of a 3^3 cube but the centre


def test_foreground_and_registry_names():
    lab = touching_squares()
    np.testing.assert_array_equal(targets.build("foreground")(lab, None), lab > 0)
    f = targets.build("contour", thickness=1)
    np.testing.assert_array_equal(f(lab, None), contours.encode(lab))
    assert {"contour", "foreground", "inner_distance", "outer_distance"} <= set(targets.names())
    with pytest.raises(DensemedError, match="no option"):
        targets.build("contour", width=2)


def test_decode_recovers_touching_squares():
    lab = np.zeros((7, 12), np.int32)
    lab[1:6, 1:6] = 1
    lab[1:6, 6:11] = 2
    # a Euclidean dilation by 1 would miss the corners (sqrt 2 away); 2 is clipped to the objects
    out = contours.decode(lab > 0, contours.encode(lab), dilate=2)
    assert out.max() == 2
    for i in (1, 2):  # same partition up to the ids
        ids = np.unique(out[lab == i])
        assert len(ids) == 1 and ids[0] > 0
        assert np.array_equal(out == ids[0], lab == i)


def test_check_instances_accepts_ids_and_returns_int64():
    out = check_instances(touching_squares().astype(np.uint16), "a.png")
    assert out.dtype == np.int64
    one = np.zeros((4, 4), np.uint8)
    one[1:3, 1:3] = 1  # a single object labelled 1 is a valid instance map
    check_instances(one, "one.png")
    check_instances(np.array([[0.0, 2.0]]), "float_ids.tif")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.array([[0, 255], [255, 0]], np.uint8), "binary mask"),
        (np.array([[1, 0, 1]], np.uint8), "binary mask"),
        (np.array([[0.5, 1.0]]), "non-integer"),
        (np.array([[-1, 2]]), ">= 0"),
        (np.zeros((8, 8, 3), np.uint8), "3-channel"),
        (np.zeros((2, 2), bool), "boolean"),
    ],
)
def test_check_instances_rejects_with_the_file_name(array, message):
    with pytest.raises(DensemedError, match=message) as err:
        check_instances(array, "labels/case_7.png")
    assert "labels/case_7.png" in str(err.value)


def test_check_instances_rejects_a_stack_of_masks_for_2d():
    with pytest.raises(DensemedError, match="overlapping"):
        check_instances(np.zeros((3, 8, 8), np.uint8), "stack.tif", dims=2)
