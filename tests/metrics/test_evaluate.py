import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from densemed.errors import DensemedError
from densemed.metrics import evaluate_folders, format_table, hausdorff95

# The hand-computed 4x4 example of test_confusion.py: foreground TP 3, FP 2, FN 1, TN 10.
TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]])


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)


def _nii(path, arr, zooms):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(arr, dtype=np.uint8), np.diag([*zooms, 1.0]))
    nib.save(img, str(path))


def test_png_folder_binary_0_255_hand_computed(tmp_path):
    _png(tmp_path / "truth/a.png", TRUTH * 255)
    _png(tmp_path / "pred/a.png", PRED * 255)  # 0/255 means 0/1
    _png(tmp_path / "truth/b.png", TRUTH * 255)
    _png(tmp_path / "pred/b.png", TRUTH)  # class indices, perfect
    _png(tmp_path / "pred/extra.png", TRUTH)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    assert res["num_classes"] == 2 and res["classes"] == [1]
    a, b = res["images"]
    assert a["name"] == "a" and a["units"] == "pixels" and a["spacing"] is None
    assert a["per_class"]["1"]["dice"] == pytest.approx(2 / 3)
    assert a["per_class"]["1"]["iou"] == pytest.approx(0.5)
    assert a["per_class"]["1"]["precision"] == pytest.approx(3 / 5)
    assert a["per_class"]["1"]["recall"] == pytest.approx(3 / 4)
    assert a["per_class"]["1"]["hd95"] == pytest.approx(hausdorff95(PRED, TRUTH))
    assert b["per_class"]["1"] == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0,
                                   "hd95": 0.0, "asd": 0.0}
    assert res["mean"]["dice"] == pytest.approx((2 / 3 + 1) / 2)
    # pooled over both images: TP 3 + 4, FP 2, FN 1
    assert res["pooled"]["1"]["dice"] == pytest.approx(14 / 17)
    assert res["unmatched_predictions"] == [str(tmp_path / "pred/extra.png")]
    json.dumps(res, allow_nan=False)  # strict JSON
    table = format_table(res)
    assert "0.6667" in table and table.splitlines()[0].split()[:3] == ["image", "class", "dice"]
    assert "pixels" in table


def test_label_map_isbi_membrane_is_class_one(tmp_path):
    # ISBI 2012: raw 0 = membrane = class 1, raw 255 = cell interior = class 0.
    _png(tmp_path / "truth/s.png", (1 - TRUTH) * 255)
    _png(tmp_path / "pred/s.png", PRED)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "truth", label_map={"0": 1, "255": 0})
    assert res["images"][0]["per_class"]["1"]["dice"] == pytest.approx(2 / 3)
    res_bg = evaluate_folders(tmp_path / "pred", tmp_path / "truth", label_map={0: 1, 255: 0},
                              include_background=True)
    assert res_bg["classes"] == [0, 1]
    assert res_bg["images"][0]["per_class"]["0"]["dice"] == pytest.approx(20 / 23)
    with pytest.raises(DensemedError, match=r"s\.png: values \[255\] are not in label_map"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", label_map={0: 1})


def test_nifti_spacing_2_1_1_gives_hd95_in_mm(tmp_path):
    t = np.zeros((10, 12, 12), np.uint8)
    t[3:7, 3:8, 3:8] = 1
    p = np.roll(t, 1, axis=0)  # one voxel along the 2 mm axis
    _nii(tmp_path / "truth/case_01.nii.gz", t, (2.0, 1.0, 1.0))
    _nii(tmp_path / "pred/case_01.nii.gz", p, (2.0, 1.0, 1.0))
    res = evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    im = res["images"][0]
    assert im["name"] == "case_01" and im["spacing"] == [2.0, 1.0, 1.0] and im["units"] == "physical"
    assert im["per_class"]["1"]["hd95"] == pytest.approx(2.0)  # not 1 voxel
    assert im["per_class"]["1"]["hd95"] == pytest.approx(hausdorff95(p, t, (2.0, 1.0, 1.0)))
    assert "NIfTI" in format_table(res)


def test_nifti_multiclass_equals_monai_and_counts_nan(tmp_path, rng):
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    t = rng.integers(0, 3, (8, 9, 7))
    p = np.where(rng.random(t.shape) < 0.8, t, rng.integers(0, 3, t.shape))
    _nii(tmp_path / "truth/v.nii.gz", t, (1.5, 1.0, 0.5))
    _nii(tmp_path / "pred/v.nii", p, (1.5, 1.0, 0.5))  # .nii matches .nii.gz by stem
    q = p.copy()
    q[q == 2] = 0  # class 2 missing from this prediction -> its HD95 is undefined
    _nii(tmp_path / "truth/w.nii.gz", t, (1.5, 1.0, 0.5))
    _nii(tmp_path / "pred/w.nii.gz", q, (1.5, 1.0, 0.5))
    res = evaluate_folders(tmp_path / "pred", tmp_path / "truth", num_classes=3)
    assert res["classes"] == [1, 2]
    oh = lambda a: torch.from_numpy(np.moveaxis(np.eye(3, dtype=np.float32)[a], -1, 0)[None])  # noqa: E731
    ref_dice = compute_dice(oh(p), oh(t), include_background=False)[0].numpy()
    ref_hd = compute_hausdorff_distance(oh(p), oh(t), percentile=95, spacing=(1.5, 1.0, 0.5))[0].numpy()
    v = res["images"][0]["per_class"]
    np.testing.assert_allclose([v["1"]["dice"], v["2"]["dice"]], ref_dice, rtol=1e-6)
    np.testing.assert_allclose([v["1"]["hd95"], v["2"]["hd95"]], ref_hd, rtol=1e-5)
    w = res["images"][1]["per_class"]
    assert w["2"]["hd95"] is None and w["2"]["dice"] == 0.0
    assert res["nan_count"] == {"dice": 0, "iou": 0, "precision": 0, "recall": 0, "hd95": 1, "asd": 1}
    # nanmean over the 3 defined (image, class) HD95 values
    expect = np.mean([v["1"]["hd95"], v["2"]["hd95"], w["1"]["hd95"]])
    assert res["mean"]["hd95"] == pytest.approx(expect)
    assert res["per_class"]["2"]["hd95"] == pytest.approx(v["2"]["hd95"])
    table = format_table(res)
    assert "nan" in table and "hd95 1/4" in table
    json.dumps(res, allow_nan=False)


def test_missing_prediction_names_the_truth_file(tmp_path):
    _png(tmp_path / "truth/a.png", TRUTH)
    _png(tmp_path / "truth/b.png", TRUTH)
    _png(tmp_path / "pred/a.png", TRUTH)
    with pytest.raises(DensemedError, match=r"b\.png: no prediction named b\.\*"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth")


def test_size_mismatch_names_the_prediction(tmp_path):
    _png(tmp_path / "truth/a.png", TRUTH)
    _png(tmp_path / "pred/a.png", np.zeros((4, 5)))
    with pytest.raises(DensemedError, match=r"pred/a\.png: size \(4, 5\) differs"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth")


def test_unreadable_file_names_the_file(tmp_path):
    _png(tmp_path / "truth/a.png", TRUTH)
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred/a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DensemedError, match=r"pred/a\.png: cannot read"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth")


def test_bad_folders_and_classes_raise(tmp_path):
    with pytest.raises(DensemedError, match="truth folder not found"):
        evaluate_folders(tmp_path / "pred", tmp_path / "nope")
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(DensemedError, match="no label files"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    _png(tmp_path / "truth/a.png", TRUTH * 2)
    _png(tmp_path / "pred/a.png", TRUTH)
    with pytest.raises(DensemedError, match=r"a\.png: class 2 is outside the 2 classes"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", num_classes=2)


# Three classes on 4 x 4: class 1 (anterior) has 4 true pixels, 2 of them predicted; class 2 (posterior)
# has 4 true pixels, all predicted plus 2 more. Dice: class 1 2*2/(4+2) = 2/3; class 2 2*4/(4+6) = 0.8.
TRUTH3 = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
PRED3 = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 2, 2, 2], [0, 2, 2, 2]])


def test_class_names_label_the_table_and_the_json_while_keys_stay_indices(tmp_path):
    _png(tmp_path / "truth/a.png", TRUTH3)
    _png(tmp_path / "pred/a.png", PRED3)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "truth", num_classes=3,
                           class_names={"0": "background", "1": "anterior", "2": "posterior"})
    assert res["class_names"] == {"1": "anterior", "2": "posterior"}  # the scored classes
    assert res["per_class"]["1"]["dice"] == pytest.approx(2 / 3)
    assert res["per_class"]["2"]["dice"] == pytest.approx(0.8)
    json.dumps(res, allow_nan=False)
    rows = [line.split() for line in format_table(res).splitlines()]
    assert ["a", "anterior", "0.6667"] == rows[2][:3] and ["a", "posterior", "0.8000"] == rows[3][:3]
    assert ["mean", "anterior", "0.6667"] in [r[:3] for r in rows]
    assert ["mean", "posterior", "0.8000"] in [r[:3] for r in rows]


def test_unnamed_classes_fall_back_to_their_index(tmp_path):
    _png(tmp_path / "truth/a.png", TRUTH3)
    _png(tmp_path / "pred/a.png", PRED3)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "truth", num_classes=3, class_names={1: "anterior"})
    assert res["class_names"] == {"1": "anterior", "2": "2"}
    rows = [line.split()[:2] for line in format_table(res).splitlines()]
    assert ["a", "anterior"] in rows and ["a", "2"] in rows
    plain = evaluate_folders(tmp_path / "pred", tmp_path / "truth", num_classes=3)
    assert plain["class_names"] is None
    assert [line.split()[:2] for line in format_table(plain).splitlines()][2:4] == [["a", "1"], ["a", "2"]]
    with pytest.raises(DensemedError, match="class_names: expected a mapping class index -> name"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth", class_names={"one": "anterior"})
