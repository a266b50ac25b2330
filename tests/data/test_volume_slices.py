"""SliceSource: unlabelled images read as 2D slices (volumes cut along an axis), windows drawn inside the head."""

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from densemed.data.volume_slices import SliceSource
from densemed.errors import DensemedError


def _coded(shape):
    """``v[a, b, c] = 100 a + 10 b + c``: every voxel tells where it is (all coordinates < 10)."""
    a, b, c = np.indices(shape)
    return (100 * a + 10 * b + c).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_volume_folder_is_read_as_slices_along_the_axis(tmp_path, axis):
    vol = _coded((6, 7, 8))
    (tmp_path / "images").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "images" / "v.nii.gz"))
    src = SliceSource.from_folders([tmp_path], "images", (3, 4), axis, "none")
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        x = src.sample(rng)[0]
        assert x.shape == (3, 4)
        a, b, c = int(x[0, 0]) // 100, int(x[0, 0]) // 10 % 10, int(x[0, 0]) % 10
        # the window of one slice along `axis`, its in-plane axes in their order
        if axis == 0:
            ref = vol[a, b:b + 3, c:c + 4]
        elif axis == 1:
            ref = vol[a:a + 3, b, c:c + 4]
        else:
            ref = vol[a:a + 3, b:b + 4, c]
        np.testing.assert_array_equal(x, ref)
        assert x.max() > vol.mean()  # centred on a voxel brighter than the mean
        seen.add((a, b, c)[axis])
    assert len(seen) > 1  # several slices drawn


def test_2d_images_are_one_slice_and_small_slices_are_centred_with_zeros(tmp_path):
    (tmp_path / "images").mkdir()
    img = np.zeros((5, 6), np.uint8)
    img[1:4, 2:5] = 200
    Image.fromarray(img).save(tmp_path / "images" / "a.png")
    src = SliceSource.from_folders([tmp_path], "images", (9, 8), axis=0, norm="none")
    x = src.sample(np.random.default_rng(1))[0]
    ref = np.zeros((9, 8), np.float32)
    ref[2:7, 1:7] = img  # (9 - 5) // 2 = 2 rows and (8 - 6) // 2 = 1 column before
    np.testing.assert_array_equal(x, ref)
    assert src.batch([np.random.default_rng(k) for k in range(3)]).shape == (3, 1, 9, 8)


def test_percentile_normalisation_of_the_whole_volume(tmp_path):
    vol = _coded((4, 5, 6))
    (tmp_path / "images").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "images" / "v.nii.gz"))
    src = SliceSource.from_folders([tmp_path], "images", (5, 6), 0, "percentile", (0.0, 100.0))
    x = src.sample(np.random.default_rng(2))[0]
    a = int(round(x[0, 0] * vol.max())) // 100  # min 0: x = v / max
    np.testing.assert_allclose(x, vol[a] / vol.max(), atol=1e-6)


def test_rgb_images_and_empty_folders_are_refused_with_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DensemedError, match="no images found"):
        SliceSource.from_folders([tmp_path], "images", (4, 4), 0)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "c.png")
    with pytest.raises(DensemedError, match=r"c\.png: k-space simulation needs single-channel \(magnitude\) images, "
                                            "got 3 channels"):
        SliceSource.from_folders([tmp_path], "images", (4, 4), 0)
