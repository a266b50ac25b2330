"""`densemed predict` on a DICOM series (-> NIfTI on the series' grid) and on NRRD files (-> NRRD)."""

import nibabel as nib
import numpy as np
import pytest

from densemed.cli import main
from densemed.infer.predict import list_inputs

pydicom = pytest.importorskip("pydicom")
nrrd = pytest.importorskip("nrrd")

ROWS, COLS, N = 10, 9, 7
D_ROW, D_COL, D_SLICE = 0.8, 0.7, 2.0
P0 = np.array([-40.0, 12.0, 30.0])  # LPS position of the first slice's first pixel
ANGLE = np.deg2rad(20)
R = np.array([np.cos(ANGLE), np.sin(ANGLE), 0.0])  # along a row (increasing column index)
C = np.array([0.0, 0.0, -1.0])  # along a column (increasing row index)
NORMAL = np.cross(R, C)
SLOPE, INTERCEPT = 0.5, -100.0


def _stored(k):
    """Stored uint16 pixels (rows, cols) of slice k: a bright square that moves with k on a ramp."""
    r, c = np.mgrid[:ROWS, :COLS]
    square = (abs(r - 4 - k % 3) < 3) & (abs(c - 4) < 3)
    return (400 + 30 * r + 7 * c + 900 * square + 11 * k).astype(np.uint16)


def _write_series(folder):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    for k in range(N):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality = "1.2.826.0.1.99", "MR"
        ds.InstanceNumber = N - k  # numbered against the slice order, and files named in a third order
        ds.ImagePositionPatient = [f"{v:.6f}" for v in P0 + k * D_SLICE * NORMAL]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([R, C])]
        ds.PixelSpacing = [D_ROW, D_COL]
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.PixelData = _stored(k).tobytes()
        ds.save_as(str(folder / f"slice_{(3 * k) % N:02d}.dcm"), enforce_file_format=True)
    return folder


def _expected_volume():
    """(column i, row j, slice k) in rescaled units: the array every 3D reader should give."""
    return np.stack([_stored(k).astype(np.float64) * SLOPE + INTERCEPT for k in range(N)]).transpose(2, 1, 0)


def _expected_affine_ras():
    """DICOM PS3.3 C.7.6.2: x = P0 + i*dcol*R + j*drow*C + k*step (LPS), then x and y negated for RAS."""
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = D_COL * R, D_ROW * C, D_SLICE * NORMAL, P0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny 3D U-Net trained one epoch on ramps with a bright block."""
    tmp = tmp_path_factory.mktemp("predict3d")
    data = tmp / "data"
    rng = np.random.default_rng(0)
    for i in range(3):
        lab = np.zeros((9, 10, 7), np.uint8)
        lab[2:6, 3:7, 1:5] = 1
        img = (900.0 * lab + rng.normal(500, 40, lab.shape)).astype(np.float32)
        for sub, arr in (("images", img), ("labels", lab)):
            (data / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, np.eye(4)), str(data / sub / f"v{i}.nii.gz"))
    out = tmp / "run"
    argv = ["train", "--set", f"data.root={data}", "data.dims=3", "data.patch_size=[8,8,8]", "data.samples_per_epoch=2",
            "data.batch_size=2", "model.name=unet", "model.base_width=2", "model.depth=1", "train.epochs=1",
            f"train.out={out}", "train.progress=false", "train.threads=1"]
    assert main(argv) == 0
    return out


def test_a_dicom_series_is_predicted_as_one_nifti_volume_on_the_series_grid(run, tmp_path, capsys):
    series = _write_series(tmp_path / "inputs" / "mr_series")
    (series / "README.txt").write_text("not DICOM")
    # the same voxels as a NIfTI volume with the affine the DICOM standard gives
    nib.save(nib.Nifti1Image(_expected_volume().astype(np.float32), _expected_affine_ras()),
             str(tmp_path / "inputs" / "same.nii.gz"))
    assert list_inputs(series) == [series]
    assert list_inputs(tmp_path / "inputs") == [series, tmp_path / "inputs" / "same.nii.gz"]
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(tmp_path / "inputs"),
                 "--output", str(tmp_path / "pred"), "--probabilities", "--device", "cpu"]) == 0
    assert "mr_series -> " in capsys.readouterr().out
    labels = nib.load(str(tmp_path / "pred" / "mr_series.nii.gz"))
    prob = nib.load(str(tmp_path / "pred" / "mr_series_prob.nii.gz"))
    assert labels.shape == prob.shape == (COLS, ROWS, N)
    np.testing.assert_allclose(labels.affine, _expected_affine_ras(), atol=1e-4)
    np.testing.assert_allclose(prob.affine, _expected_affine_ras(), atol=1e-4)
    # voxel (i, j, k) of the series lies where the standard puts pixel (row j, column i) of slice k
    assert labels.header.get_zooms() == pytest.approx((D_COL, D_ROW, D_SLICE), abs=1e-4)
    np.testing.assert_allclose(np.asarray(prob.dataobj), nib.load(str(tmp_path / "pred" / "same_prob.nii.gz")).dataobj,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(labels.dataobj), nib.load(str(tmp_path / "pred" / "same.nii.gz")).dataobj)


def test_an_nrrd_volume_is_predicted_to_nrrd_in_its_own_space(run, tmp_path):
    volume = _expected_volume().astype(np.float32)
    directions = np.array([D_COL * R, D_ROW * C, D_SLICE * NORMAL])  # one row per voxel axis, LPS
    header = {"space": "left-posterior-superior", "space directions": directions, "space origin": P0,
              "kinds": ["domain"] * 3}
    (tmp_path / "in").mkdir()
    nrrd.write(str(tmp_path / "in" / "mr.nrrd"), volume, header, index_order="F")
    nib.save(nib.Nifti1Image(volume, _expected_affine_ras()), str(tmp_path / "in" / "same.nii.gz"))
    assert main(["predict", "--checkpoint", str(run), "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "pred"), "--device", "cpu"]) == 0
    labels, out_header = nrrd.read(str(tmp_path / "pred" / "mr.nrrd"), index_order="F")
    assert out_header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(out_header["space directions"], directions, atol=1e-4)
    np.testing.assert_allclose(out_header["space origin"], P0, atol=1e-4)
    np.testing.assert_array_equal(labels, nib.load(str(tmp_path / "pred" / "same.nii.gz")).dataobj)
