import json

import numpy as np
import pytest

from densemed.data.io import read_label, write_label
from densemed.data.layouts import detect_layout, discover, read_case_image, scan
from densemed.errors import DensemedError

nib = pytest.importorskip("nibabel")

AFFINE = np.array([[1.5, 0, 0, -3.0], [0, 1.0, 0, 4.0], [0, 0, 2.0, 10.0], [0, 0, 0, 1]])
CLASSES = {0: "background", 1: "left", 2: "right"}
STEMS = ["case_001", "case_002", "case_007"]


def _volumes(n=3):
    """Per case: a (5, 6, 4, 2) two-channel float image (channels last) and a (5, 6, 4) label."""
    rng = np.random.default_rng(3)
    out = {}
    for stem in STEMS[:n]:
        image = rng.normal(100, 20, (5, 6, 4, 2)).astype(np.float32)
        label = rng.integers(0, 3, (5, 6, 4)).astype(np.uint8)
        out[stem] = (image, label)
    return out


def _save(arr, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))


def make_folders(root, data):
    for stem, (image, label) in data.items():
        _save(image, root / "images" / f"{stem}.nii.gz")
        _save(label, root / "labels" / f"{stem}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "left": 1, "right": 2},
                                                   "channel_names": {"0": "T1", "1": "T2"}}))
    return root


def make_nnunet(root, data, labels=None):
    for stem, (image, label) in data.items():
        for c in range(image.shape[-1]):
            _save(image[..., c], root / "imagesTr" / f"{stem}_{c:04d}.nii.gz")
        _save(label, root / "labelsTr" / f"{stem}.nii.gz")
    meta = {"channel_names": {"0": "T1", "1": "T2"}, "labels": labels or {"background": 0, "left": 1, "right": 2},
            "numTraining": len(data), "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_msd(root, data):
    training = []
    for stem, (image, label) in data.items():
        _save(image, root / "imagesTr" / f"{stem}.nii.gz")
        _save(label, root / "labelsTr" / f"{stem}.nii.gz")
        training.append({"image": f"./imagesTr/{stem}.nii.gz", "label": f"./labelsTr/{stem}.nii.gz"})
    # the macOS tar of the MSD archives leaves AppleDouble files next to every volume
    (root / "imagesTr" / "._case_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    meta = {"name": "Toy", "modality": {"0": "T1", "1": "T2"}, "labels": {"0": "background", "1": "left", "2": "right"},
            "numTraining": len(data), "numTest": 0, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_detect_layout_tells_the_three_layouts_apart(tmp_path):
    data = _volumes(1)
    assert detect_layout(make_folders(tmp_path / "f", data)) == "folders"
    assert detect_layout(make_nnunet(tmp_path / "n", data)) == "nnunet"
    assert detect_layout(make_msd(tmp_path / "m", data)) == "msd"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DensemedError, match="no dataset layout found"):
        detect_layout(tmp_path / "empty")


def test_same_3d_data_in_three_layouts_reads_identically(tmp_path):
    data = _volumes()
    roots = {"folders": make_folders(tmp_path / "f", data), "nnunet": make_nnunet(tmp_path / "n", data),
             "msd": make_msd(tmp_path / "m", data)}
    for layout, root in roots.items():
        index = discover(root)
        assert index.layout == layout
        assert index.stems == STEMS
        assert index.class_names == CLASSES
        assert index.channel_names == {0: "T1", 1: "T2"}
        for stem, images, label in index.cases:
            image, meta = read_case_image(images, dims=3)
            src_image, src_label = data[stem]
            # channel-first (C, X, Y, Z): channel c is the source's last-axis channel c
            np.testing.assert_array_equal(image, np.moveaxis(src_image, -1, 0))
            np.testing.assert_array_equal(read_label(label)[0], src_label)
            assert meta.spacing == pytest.approx((1.5, 1.0, 2.0))
            np.testing.assert_allclose(meta.affine, AFFINE)
    assert len(discover(roots["nnunet"]).cases[0].images) == 2
    assert discover(roots["nnunet"]).file_ending == ".nii.gz"
    assert discover(roots["msd"]).num_training == 3


def test_rgb_png_folder_equals_three_grey_nnunet_channel_files(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (7, 9, 3)).astype(np.uint8)
    label = (rgb[..., 0] > 128).astype(np.uint8)
    f, n = tmp_path / "f", tmp_path / "n"
    write_label(f / "images" / "a.png", rgb)
    write_label(f / "labels" / "a.png", label)
    for c in range(3):
        write_label(n / "imagesTr" / f"a_{c:04d}.png", rgb[..., c])
    write_label(n / "labelsTr" / "a.png", label)
    (n / "dataset.json").write_text(json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"},
                                                "labels": {"background": 0, "gland": 1},
                                                "numTraining": 1, "file_ending": ".png"}))
    img_f, _ = read_case_image(discover(f).cases[0].images, dims=2)
    img_n, _ = read_case_image(discover(n).cases[0].images, dims=2)
    assert img_f.shape == (3, 7, 9)
    np.testing.assert_array_equal(img_f, img_n)
    np.testing.assert_array_equal(img_n[2], rgb[..., 2])
    assert discover(n).class_names == {0: "background", 1: "gland"}


def test_region_based_nnunet_labels_are_refused_naming_dataset_json_and_entry(tmp_path):
    root = make_nnunet(tmp_path, _volumes(1), labels={"background": 0, "whole_tumor": [1, 2, 3], "core": [2, 3],
                                                      "enhancing": 3})
    with pytest.raises(DensemedError, match=r"dataset\.json: label 'whole_tumor' is region-based \(\[1, 2, 3\]\)"):
        discover(root)


def test_missing_label_in_folders_is_reported_with_the_image_path(tmp_path):
    root = make_folders(tmp_path, _volumes())
    (root / "labels" / "case_002.nii.gz").unlink()
    with pytest.raises(DensemedError, match=r"images/case_002\.nii\.gz: no label file with stem 'case_002'"):
        discover(root)


def test_missing_channel_file_in_nnunet_is_reported_with_its_path(tmp_path):
    root = make_nnunet(tmp_path, _volumes())
    (root / "imagesTr" / "case_007_0001.nii.gz").unlink()
    with pytest.raises(DensemedError, match=r"imagesTr/case_007_0001\.nii\.gz: channel file missing"):
        discover(root)
    index = scan(root)  # the other cases are still indexed
    assert index.stems == ["case_001", "case_002"]


def test_missing_msd_label_is_reported_with_its_path(tmp_path):
    root = make_msd(tmp_path, _volumes())
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DensemedError, match=r"labelsTr/case_001\.nii\.gz: label listed in .*dataset\.json not found"):
        discover(root)


def test_nnunet_test_split_has_no_labels_and_numtraining_mismatch_is_a_warning(tmp_path):
    data = _volumes()
    root = make_nnunet(tmp_path, data)
    image = data["case_001"][0]
    for c in range(2):
        _save(image[..., c], root / "imagesTs" / f"new_{c:04d}.nii.gz")
    test = discover(root, split="test")
    assert [(c.stem, c.label) for c in test.cases] == [("new", None)]
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "labels": {"bg": 0, "x": 1},
                                                   "numTraining": 5, "file_ending": ".nii.gz"}))
    issues = scan(root).issues
    assert [(i.kind, i.fatal) for i in issues] == [("count", False)]
    assert "numTraining is 5, but" in issues[0].message
    assert len(discover(root)) == 3  # a count mismatch alone does not stop training


def test_channel_files_of_different_sizes_are_refused(tmp_path):
    root = make_nnunet(tmp_path, _volumes(1))
    _save(np.zeros((5, 6, 3), np.float32), root / "imagesTr" / "case_001_0001.nii.gz")
    with pytest.raises(DensemedError, match=r"case_001_0001\.nii\.gz: channel file has spatial size \(5, 6, 3\)"):
        read_case_image(discover(root).cases[0].images)
