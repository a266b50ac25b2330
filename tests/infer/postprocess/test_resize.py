"""resize_labels: nearest-neighbour resizing of id maps, matched at pixel centres."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from densemed.infer.postprocess import resize_labels


def test_doubling_repeats_every_id_twice_along_each_axis():
    ids = np.array([[1, 2], [3, 0]], np.int32)
    out = resize_labels(ids, (4, 4))
    np.testing.assert_array_equal(out, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]])
    assert out.dtype == np.int32


@pytest.mark.parametrize("shape", [(13, 29), (7, 8), (40, 10)])
def test_equals_torch_nearest_exact_on_random_ids(shape):
    ids = np.random.default_rng(0).integers(0, 500, (11, 17)).astype(np.int32)
    ref = F.interpolate(torch.from_numpy(ids.astype(np.float64))[None, None], size=shape, mode="nearest-exact")
    np.testing.assert_array_equal(resize_labels(ids, shape), ref[0, 0].numpy().astype(np.int32))


def test_a_volume_resizes_per_axis_and_the_same_shape_is_returned_as_is():
    ids = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    out = resize_labels(ids, (4, 3, 2))
    np.testing.assert_array_equal(out[:, 0, 0], [1, 1, 13, 13])  # axis 0 doubled (axis 2's first: input 1)
    np.testing.assert_array_equal(out[0, 0], [1, 3])  # axis 2 halved: centres 1 and 3 of 0..3
    assert resize_labels(ids, (2, 3, 4)) is ids
    with pytest.raises(ValueError, match="axes"):
        resize_labels(ids, (4, 4))
