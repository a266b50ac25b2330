import json

import numpy as np
import pytest

from densemed.data.check import check_dataset, format_report
from densemed.data.io import write_float, write_label


def grey(value=50, shape=(6, 8)):
    return np.full(shape, value, np.uint8)


def two_blobs(shape=(6, 8)):
    """Class 1: a 2x2 square and a 2x3 rectangle, apart (4 + 6 = 10 pixels, 2 objects)."""
    lab = np.zeros(shape, np.uint8)
    lab[0:2, 0:2] = 1
    lab[3:5, 4:7] = 1
    return lab


def make(root, cases, image_ext=".png"):
    """``cases``: stem -> (image or None, label or None); float images go to TIFF."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for stem, (image, label) in cases.items():
        if image is not None:
            if image.dtype.kind == "f":
                write_float(root / "images" / f"{stem}.tif", image)
            else:
                write_label(root / "images" / f"{stem}{image_ext}", image)
        if label is not None:
            write_label(root / "labels" / f"{stem}.png", label)
    return root


def kinds(report):
    return [(p.kind, p.path.name, p.fatal) for p in report.problems]


def test_clean_folder_has_no_problems_and_a_hand_checked_summary(tmp_path):
    lab_b = np.zeros((6, 8), np.uint8)
    lab_b[2:5, 2:5] = 1  # one 3x3 object
    root = make(tmp_path, {"a": (grey(10), two_blobs()), "b": (grey(200), lab_b)})
    report = check_dataset(root, num_classes=2)
    assert report.problems == [] and not report.fatal
    s = report.summary
    assert (s["cases"], s["labelled"], s["channels"]) == (2, 2, {1: 2})
    assert s["sizes"] == {"min": (6, 8), "median": (6, 8), "max": (6, 8)}
    assert s["intensity"] == (10.0, 200.0)
    # class 1: 10 + 9 pixels of 96; class 0: the other 77
    assert s["classes"][1]["voxels"] == 19 and s["classes"][0]["voxels"] == 77
    assert s["classes"][1]["fraction"] == pytest.approx(19 / 96)
    assert s["objects"]["total"] == 3 and s["objects"]["size"] == (4.0, 6.0, 9.0)
    assert s["objects"]["per_case"] == (1.0, 1.5, 2.0)
    assert format_report(report).splitlines()[1] == "no problems found"


def test_missing_label_is_fatal_and_names_the_image(tmp_path):
    root = make(tmp_path, {"a": (grey(), two_blobs()), "b": (grey(), None)})
    report = check_dataset(root)
    assert kinds(report) == [("missing", "b.png", True)]
    assert report.problems[0].path == root / "images" / "b.png"
    assert report.fatal


def test_label_without_image_is_a_warning_naming_the_label(tmp_path):
    root = make(tmp_path, {"a": (grey(), two_blobs()), "c": (None, two_blobs())})
    report = check_dataset(root)
    assert kinds(report) == [("orphan", "c.png", False)]
    assert report.problems[0].path == root / "labels" / "c.png" and not report.fatal


def test_label_of_another_size_is_fatal(tmp_path):
    root = make(tmp_path, {"a": (grey(), two_blobs()), "b": (grey(shape=(6, 9)), two_blobs())})
    report = check_dataset(root)
    assert kinds(report) == [("shape", "b.png", True)]
    assert "label size (6, 8) differs from image size (6, 9)" in report.problems[0].message


def test_label_spacing_differing_from_the_image_is_a_warning(tmp_path):
    nib = pytest.importorskip("nibabel")
    for sub, zooms in (("images", (1.0, 1.0, 2.0)), ("labels", (1.0, 1.0, 2.5))):
        (tmp_path / sub).mkdir()
        arr = np.zeros((4, 4, 3), np.uint8)
        arr[1, 1, 1] = 1
        nib.save(nib.Nifti1Image(arr, np.diag([*zooms, 1.0])), str(tmp_path / sub / "v.nii.gz"))
    report = check_dataset(tmp_path, num_classes=2)
    assert kinds(report) == [("spacing", "v.nii.gz", False)]
    assert report.problems[0].path == tmp_path / "labels" / "v.nii.gz"
    assert "label spacing 1 x 1 x 2.5 differs from image spacing 1 x 1 x 2" in report.problems[0].message


def test_values_outside_declared_classes_are_fatal_and_gaps_warn_when_undeclared(tmp_path):
    lab = two_blobs()
    lab[5, 7] = 3
    root = make(tmp_path, {"a": (grey(), two_blobs()), "b": (grey(), lab)})
    declared = check_dataset(root, num_classes=3)
    assert kinds(declared) == [("classes", "b.png", True), ("classes", tmp_path.name, False)]
    assert "label values [3] are not declared classes (0..2)" in declared.problems[0].message
    assert declared.problems[1].message == "declared classes never occur in any label: 2"
    undeclared = check_dataset(root)
    assert kinds(undeclared) == [("consecutive", tmp_path.name, False)]
    assert "1 values between 0 and 3 never occur" in undeclared.problems[0].message


def test_0_255_masks_are_accepted_for_two_classes(tmp_path):
    root = make(tmp_path, {"a": (grey(), two_blobs() * 255)})
    assert check_dataset(root, num_classes=2).problems == []
    assert kinds(check_dataset(root, num_classes=3))[0] == ("classes", "a.png", True)


def test_binary_masks_where_instance_ids_are_required_are_fatal(tmp_path):
    root = make(tmp_path, {"a": (grey(), two_blobs() * 255), "b": (grey(), two_blobs()), "c": (grey(), None)})
    single = np.zeros((6, 8), np.uint8)
    single[1:3, 1:3] = 1  # one object labelled 1 is a valid instance map
    write_label(root / "labels" / "c.png", single)
    report = check_dataset(root, instances=True)
    assert kinds(report) == [("binary", "a.png", True), ("binary", "b.png", True)]
    assert "values 0 and 1 forming 2 objects" in report.problems[1].message


def test_instance_id_split_into_several_components_is_reported(tmp_path):
    lab = two_blobs().astype(np.uint16)  # id 1 covers two separate blobs
    lab[5, 0] = 2
    lab[0, 7] = lab[1, 7] = 3  # one diagonal-free vertical pair: one component
    root = make(tmp_path, {"a": (grey(), lab)})
    report = check_dataset(root, instances=True)
    assert kinds(report) == [("split", "a.png", False)]
    assert "1 instance ids cover several separate components: 1 (2 parts)" in report.problems[0].message
    assert report.summary["objects"]["total"] == 3
    assert report.summary["objects"]["size"] == (1.0, 2.0, 10.0)


def test_diagonally_touching_pixels_are_one_instance(tmp_path):
    lab = np.zeros((4, 4), np.uint8)
    lab[0, 0] = lab[1, 1] = lab[2, 2] = 1
    assert check_dataset(make(tmp_path, {"a": (grey(shape=(4, 4)), lab)}), instances=True).problems == []


def test_case_with_another_channel_count_is_fatal(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 1] = 100
    root = make(tmp_path, {"a": (rgb, two_blobs()), "b": (rgb, two_blobs()), "c": (grey(), two_blobs())})
    report = check_dataset(root)
    assert kinds(report) == [("channels", "c.png", True)]
    assert report.problems[0].message == "1 channel(s), but most cases have 3"


def test_nan_and_inf_intensities_are_fatal(tmp_path):
    img = np.ones((6, 8), np.float32)
    img[0, 0] = img[1, 1] = np.nan
    img[2, 2] = -np.inf
    root = make(tmp_path, {"a": (np.ones((6, 8), np.float32), two_blobs()), "b": (img, two_blobs())})
    report = check_dataset(root)
    assert kinds(report) == [("nonfinite", "b.tif", True)]
    assert report.problems[0].message == "2 NaN and 1 infinite intensities"


def test_empty_label_is_a_warning(tmp_path):
    root = make(tmp_path, {"a": (grey(), two_blobs()), "b": (grey(), np.zeros((6, 8), np.uint8))})
    report = check_dataset(root, num_classes=2)
    assert kinds(report) == [("empty", "b.png", False)]


def test_unreadable_file_is_fatal_and_the_rest_is_still_checked(tmp_path):
    root = make(tmp_path, {"a": (grey(), two_blobs()), "b": (grey(), two_blobs())})
    data = (root / "images" / "a.png").read_bytes()
    (root / "images" / "a.png").write_bytes(data[: len(data) // 2])
    report = check_dataset(root, num_classes=2)
    assert kinds(report) == [("unreadable", "a.png", True)]
    assert report.summary["channels"] == {1: 1}  # b's image was still read


def test_nnunet_dataset_problems_name_dataset_json_and_missing_channel_files(tmp_path):
    for stem in ("x", "y"):
        for c in range(2):
            if (stem, c) != ("y", 1):
                write_label(tmp_path / "imagesTr" / f"{stem}_{c:04d}.png", grey(10 * c))
        write_label(tmp_path / "labelsTr" / f"{stem}.png", two_blobs())
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "a", "1": "b"}, "labels": {"background": 0, "gland": 1, "both": [1, 2]},
        "numTraining": 2, "file_ending": ".png"}))
    report = check_dataset(tmp_path)
    assert kinds(report) == [("regions", "dataset.json", True), ("missing", "y_0001.png", True)]
    assert report.summary["cases"] == 1 and report.summary["channels"] == {2: 1}
    assert report.summary["classes"][1]["name"] == "gland"


def test_format_report_lists_each_problem_with_its_file_and_the_verdict(tmp_path):
    root = make(tmp_path, {"a": (grey(), two_blobs()), "b": (grey(shape=(6, 9)), np.zeros((6, 8), np.uint8))})
    text = format_report(check_dataset(root, num_classes=2))
    lines = text.splitlines()
    assert lines[1] == "2 problem(s): 1 error(s) (would break training), 1 warning(s)"
    assert lines[2].startswith("  error   shape       ") and lines[2].endswith(
        f"{root / 'labels' / 'b.png'}: label size (6, 8) differs from image size (6, 9) (b.png)")
    assert lines[3].startswith("  warning empty       ") and str(root / "labels" / "b.png") in lines[3]
    assert lines[-1] == "result: 1 errors would break training"


def test_missing_dataset_folder_is_one_fatal_problem(tmp_path):
    report = check_dataset(tmp_path / "nope")
    assert kinds(report) == [("layout", "nope", True)]
