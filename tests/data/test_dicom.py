import numpy as np
import pytest

from densemed.data.dicom import LPS_TO_RAS, is_dicom_series, read_dicom_series
from densemed.data.io import read_label, write_float, write_label
from densemed.errors import DensemedError

pydicom = pytest.importorskip("pydicom")

ROWS, COLS, N = 4, 5, 3
D_ROW, D_COL, D_SLICE = 0.8, 0.6, 2.5
ORIGIN = np.array([-100.0, 20.0, 35.0])  # LPS position of the first slice's first pixel
ANGLE = np.deg2rad(30)
ROW_DIR = np.array([np.cos(ANGLE), np.sin(ANGLE), 0.0])  # along a row (increasing column)
COL_DIR = np.array([0.0, 0.0, -1.0])  # along a column (increasing row): towards the feet
NORMAL = np.cross(ROW_DIR, COL_DIR)
SLOPE, INTERCEPT = 2.0, -1024.0


def stored(k):
    """Stored uint16 pixels (rows, cols) of slice k: 100*k + 10*row + col."""
    r, c = np.mgrid[:ROWS, :COLS]
    return (100 * k + 10 * r + c).astype(np.uint16)


def write_slice(path, k, series_uid="1.2.3.4", instance=None, position=None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.InstanceNumber = instance if instance is not None else k + 1
    pos = ORIGIN + k * D_SLICE * NORMAL if position is None else position
    ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([ROW_DIR, COL_DIR])]
    ds.PixelSpacing = [D_ROW, D_COL]
    ds.SliceThickness = 3.0  # deliberately not the spacing between slices
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
    ds.PixelData = stored(k).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    # file names and instance numbers in an order unrelated to the slice position
    for k, name, inst in [(2, "a.dcm", 1), (0, "b.dcm", 3), (1, "c.dcm", 2)]:
        write_slice(folder / name, k, instance=inst)
    (folder / "README.txt").write_text("not a DICOM file")
    return folder


def test_values_are_rescaled_and_slices_sorted_by_position_along_the_normal(series):
    assert is_dicom_series(series)
    volume, meta = read_dicom_series(series)
    assert volume.shape == (1, COLS, ROWS, N) and volume.dtype == np.float32
    for k in range(N):
        np.testing.assert_array_equal(volume[0, :, :, k], (stored(k).astype(np.float64) * SLOPE + INTERCEPT).T)
    # one voxel by hand: column 3, row 2 of slice 1 stores 100 + 20 + 3 = 123 -> 2 * 123 - 1024
    assert volume[0, 3, 2, 1] == -778.0
    assert [p.name for p in meta.extra["files"]] == ["b.dcm", "c.dcm", "a.dcm"]
    assert meta.spacing == pytest.approx((D_COL, D_ROW, D_SLICE))
    assert meta.format == "dicom" and meta.extra["modality"] == "CT"


def test_affine_maps_voxel_indices_to_lps_and_ras_patient_coordinates(series):
    _, meta = read_dicom_series(series)
    for i, j, k in [(0, 0, 0), (4, 0, 0), (0, 3, 0), (3, 2, 1), (4, 3, 2)]:
        lps = ORIGIN + i * D_COL * ROW_DIR + j * D_ROW * COL_DIR + k * D_SLICE * NORMAL
        np.testing.assert_allclose((meta.extra["affine_lps"] @ [i, j, k, 1])[:3], lps, atol=1e-5)
        ras = np.array([-lps[0], -lps[1], lps[2]])
        np.testing.assert_allclose((meta.affine @ [i, j, k, 1])[:3], ras, atol=1e-5)
    np.testing.assert_array_equal(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))


def test_nifti_written_from_a_dicom_series_keeps_its_geometry(series, tmp_path):
    nib = pytest.importorskip("nibabel")
    volume, meta = read_dicom_series(series)
    label = (volume[0] > 0).astype(np.uint8)
    write_label(tmp_path / "pred.nii.gz", label, meta)
    write_float(tmp_path / "prob.nii.gz", volume[0] / 1000, meta)
    for name in ("pred.nii.gz", "prob.nii.gz"):
        img = nib.load(str(tmp_path / name))
        np.testing.assert_allclose(img.affine, meta.affine, atol=1e-4)  # the header stores float32
        assert img.header.get_zooms() == pytest.approx((D_COL, D_ROW, D_SLICE), abs=1e-5)
        assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(meta.affine)
    np.testing.assert_array_equal(read_label(tmp_path / "pred.nii.gz")[0], label)


def test_uneven_slice_spacing_is_refused_as_a_missing_slice(tmp_path):
    for k in (0, 1, 3):
        write_slice(tmp_path / f"s{k}.dcm", k)
    with pytest.raises(DensemedError, match="slice spacing varies from 2.5 to 5 mm"):
        read_dicom_series(tmp_path)


def test_two_series_in_one_folder_are_refused(tmp_path):
    write_slice(tmp_path / "a.dcm", 0, series_uid="1.2.3")
    write_slice(tmp_path / "b.dcm", 1, series_uid="1.2.4")
    with pytest.raises(DensemedError, match="holds 2 series"):
        read_dicom_series(tmp_path)


def test_duplicate_positions_are_refused_naming_the_file(tmp_path):
    write_slice(tmp_path / "a.dcm", 0)
    write_slice(tmp_path / "b.dcm", 1, position=ORIGIN)
    with pytest.raises(DensemedError, match=r"\.dcm: same slice position as"):
        read_dicom_series(tmp_path)


def test_single_slice_uses_slice_thickness_along_the_normal(tmp_path):
    write_slice(tmp_path / "a.dcm", 0)
    volume, meta = read_dicom_series(tmp_path)
    assert volume.shape == (1, COLS, ROWS, 1)
    np.testing.assert_allclose(meta.extra["affine_lps"][:3, 2], 3.0 * NORMAL, atol=1e-6)


def test_folder_without_dicom_is_an_error_and_not_a_series(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    assert not is_dicom_series(tmp_path)
    with pytest.raises(DensemedError, match="no DICOM slices"):
        read_dicom_series(tmp_path)
