import numpy as np
import pytest

from densemed.data.io import read_image, read_label, split_name, write_float, write_label
from densemed.errors import DensemedError


def test_split_name_handles_the_double_nifti_suffix():
    assert split_name("a/case_01.nii.gz") == ("case_01", ".nii.gz")
    assert split_name("slice.png") == ("slice", ".png")


def test_nifti_round_trip_keeps_affine_and_values_exactly(tmp_path):
    import nibabel as nib

    affine = np.array([[0.7, 0, 0, -12.5], [0, 1.3, 0, 4.0], [0, 0, 2.5, 7.25], [0, 0, 0, 1]])
    lab = np.random.default_rng(0).integers(0, 3, (9, 8, 7)).astype(np.uint8)
    nib.save(nib.Nifti1Image(lab, affine), str(tmp_path / "in.nii.gz"))
    arr, meta = read_label(tmp_path / "in.nii.gz")
    assert meta.spacing == pytest.approx((0.7, 1.3, 2.5))
    write_label(tmp_path / "out.nii.gz", arr, meta)
    back = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_array_equal(back.affine, nib.load(str(tmp_path / "in.nii.gz")).affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), lab)


def test_png_rgba_image_reads_channel_first_without_alpha(tmp_path):
    from PIL import Image

    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 10, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    img, meta = read_image(tmp_path / "x.png")
    assert img.shape == (3, 5, 6) and img.dtype == np.float32
    assert img[0].max() == 10 and meta.format == "png"


def test_label_png_16_bit_and_tiff_round_trip(tmp_path):
    lab = np.arange(20, dtype=np.int64).reshape(4, 5) * 40  # values up to 760 need 16 bits
    write_label(tmp_path / "l.png", lab)
    np.testing.assert_array_equal(read_label(tmp_path / "l.png")[0], lab)
    write_float(tmp_path / "p.tif", lab / 760.0)
    back, _ = read_image(tmp_path / "p.tif")
    np.testing.assert_allclose(back[0], lab / 760.0, rtol=1e-6)


def test_truncated_file_raises_one_line_naming_the_file(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DensemedError, match=r"t\.png: cannot read") as exc:
        read_image(tmp_path / "t.png")
    assert "\n" not in str(exc.value)


def test_float_label_with_fractions_is_rejected(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 0.5, np.float32), np.eye(4)), str(tmp_path / "f.nii.gz"))
    with pytest.raises(DensemedError, match="non-integer"):
        read_label(tmp_path / "f.nii.gz")
