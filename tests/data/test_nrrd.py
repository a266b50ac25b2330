import numpy as np
import pytest

from densemed.data.io import read_label, write_label
from densemed.data.nrrd import read_nrrd, read_nrrd_label, write_nrrd
from densemed.errors import DensemedError

nrrd = pytest.importorskip("nrrd")

# an oblique LPS grid: voxel steps (0.5, 0, 0), (0, 0.8*cos, 0.8*sin), (0, -3 sin, 3 cos)
C, S = np.cos(0.3), np.sin(0.3)
DIRECTIONS = np.array([[0.5, 0, 0], [0, 0.8 * C, 0.8 * S], [0, -3 * S, 3 * C]])
ORIGIN = np.array([10.0, -20.0, 30.0])


def test_lps_header_becomes_a_ras_affine_mapping_voxels_to_patient_space(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nrrd.write(str(tmp_path / "x.nrrd"), data, {"space": "left-posterior-superior", "space directions": DIRECTIONS,
                                               "space origin": ORIGIN}, index_order="F")
    image, meta = read_nrrd(tmp_path / "x.nrrd")
    assert image.shape == (1, 4, 5, 6) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], data)
    assert meta.spacing == pytest.approx((0.5, 0.8, 3.0))
    for ijk in [(0, 0, 0), (3, 0, 0), (1, 2, 5)]:
        lps = ORIGIN + np.asarray(ijk) @ DIRECTIONS  # row a of DIRECTIONS is axis a's step
        np.testing.assert_allclose((meta.affine @ [*ijk, 1])[:3], lps * [-1, -1, 1], atol=1e-9)


def test_vector_axis_becomes_the_channel_axis(tmp_path):
    data = np.random.default_rng(0).normal(size=(2, 4, 5, 3)).astype(np.float32)
    dirs = np.vstack([np.full(3, np.nan), np.eye(3)])
    nrrd.write(str(tmp_path / "v.nrrd"), data, {"space": "RAS", "space directions": dirs,
                                               "kinds": ["vector", "domain", "domain", "domain"]}, index_order="F")
    image, meta = read_nrrd(tmp_path / "v.nrrd", dims=3)
    np.testing.assert_array_equal(image, data)
    np.testing.assert_array_equal(meta.affine, np.eye(4))


def test_nifti_to_nrrd_to_nifti_keeps_labels_and_affine(tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.array([[-0.7, 0, 0, 12.5], [0, 1.3, 0, -4.0], [0, 0, 2.5, 7.25], [0, 0, 0, 1]])
    lab = np.random.default_rng(1).integers(0, 4, (6, 5, 4)).astype(np.uint8)
    nib.save(nib.Nifti1Image(lab, affine), str(tmp_path / "in.nii.gz"))
    arr, meta = read_label(tmp_path / "in.nii.gz")
    write_nrrd(tmp_path / "mid.nrrd", arr, meta)
    header = nrrd.read_header(str(tmp_path / "mid.nrrd"))
    assert header["space"] == "left-posterior-superior" and header["type"] == "uint8"
    # LPS directions of the RAS affine: x and y flip sign
    np.testing.assert_allclose(header["space directions"], [[0.7, 0, 0], [0, -1.3, 0], [0, 0, 2.5]], atol=1e-6)
    back, bmeta = read_nrrd_label(tmp_path / "mid.nrrd")
    np.testing.assert_array_equal(back, lab)
    np.testing.assert_allclose(bmeta.affine, meta.affine, atol=1e-12)
    write_label(tmp_path / "out.nii.gz", back, bmeta)
    np.testing.assert_allclose(nib.load(str(tmp_path / "out.nii.gz")).affine, affine, atol=1e-6)


def test_fractional_label_and_corrupt_file_raise_naming_the_file(tmp_path):
    nrrd.write(str(tmp_path / "f.nrrd"), np.full((3, 3, 3), 0.5, np.float32))
    with pytest.raises(DensemedError, match=r"f\.nrrd: label map holds non-integer values"):
        read_nrrd_label(tmp_path / "f.nrrd")
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ntype: float\n")
    with pytest.raises(DensemedError, match=r"bad\.nrrd: cannot read NRRD"):
        read_nrrd(tmp_path / "bad.nrrd")
