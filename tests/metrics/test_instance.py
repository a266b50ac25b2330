"""Object-level metrics against hand-computed values on tiny label maps."""

from __future__ import annotations

import numpy as np
import pytest

from densemed.metrics.instance import (
    aggregated_jaccard,
    centroids,
    detection_scores,
    instance_scores,
    object_dice,
    object_f1,
    object_hausdorff,
    overlap_matrix,
    panoptic_quality,
)


def two_squares() -> np.ndarray:
    """Two touching 4x4 squares side by side in a 4x8 map."""
    lab = np.zeros((4, 8), np.int32)
    lab[:, :4] = 1
    lab[:, 4:] = 2
    return lab


def test_perfect_prediction_scores_one_even_with_permuted_ids():
    truth = two_squares()
    pred = np.where(truth == 1, 7, np.where(truth == 2, 3, 0))
    s = instance_scores(pred, truth)
    assert s["object_f1"] == 1 and s["object_dice"] == 1 and s["aji"] == 1 and s["pq"] == 1
    assert s["object_hausdorff"] == 0


def test_merged_object_hand_values():
    truth = two_squares()
    pred = (truth > 0).astype(np.int32)  # both squares as one object
    f1 = object_f1(pred, truth)
    assert (f1["tp"], f1["fp"], f1["fn"]) == (1, 0, 1)
    assert f1["f1"] == pytest.approx(2 / 3)
    assert object_dice(pred, truth) == pytest.approx(2 / 3)  # Dice(G_i, S) = 32/48 everywhere
    assert aggregated_jaccard(pred, truth) == pytest.approx(32 / 64)
    assert panoptic_quality(pred, truth)["pq"] == 0  # IoU exactly 0.5 is not a match
    assert object_hausdorff(pred, truth) == pytest.approx(4.0)  # far column of S to the square


def test_split_object_hand_values():
    pred = two_squares()
    truth = (pred > 0).astype(np.int32)  # one object predicted as two halves
    f1 = object_f1(pred, truth)
    assert (f1["tp"], f1["fp"], f1["fn"]) == (1, 1, 0)  # 50% coverage counts, the second half is FP
    assert f1["f1"] == pytest.approx(2 / 3)
    assert object_dice(pred, truth) == pytest.approx(2 / 3)
    assert aggregated_jaccard(pred, truth) == pytest.approx(16 / 48)  # unmatched half joins the union
    assert object_hausdorff(pred, truth) == pytest.approx(4.0)


def test_partial_detection_hand_values():
    truth = two_squares()
    pred = np.zeros_like(truth)
    pred[0:3, 0:2] = 1  # 6 pixels of the 16 of G1: below 50%
    pred[:, 4:] = 2  # G2 exactly
    f1 = object_f1(pred, truth)
    assert (f1["tp"], f1["fp"], f1["fn"]) == (1, 1, 1) and f1["f1"] == pytest.approx(0.5)
    # 1/2 [ (1/2 * 12/22 + 1/2 * 1) + (6/22 * 12/22 + 16/22 * 1) ]
    expected = 0.5 * ((0.5 * 12 / 22 + 0.5) + (6 / 22 * 12 / 22 + 16 / 22))
    assert object_dice(pred, truth) == pytest.approx(expected)
    assert aggregated_jaccard(pred, truth) == pytest.approx(22 / 32)
    pq = panoptic_quality(pred, truth)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 1, 1)
    assert pq["pq"] == pytest.approx(0.5) and pq["sq"] == 1 and pq["dq"] == pytest.approx(0.5)


def test_object_hausdorff_of_a_shifted_square():
    truth = np.zeros((10, 10), np.int32)
    truth[2:5, 2:5] = 1
    pred = np.zeros_like(truth)
    pred[2:5, 3:6] = 1  # shifted one column: Hausdorff 1
    assert object_hausdorff(pred, truth) == pytest.approx(1.0)
    far = np.zeros_like(truth)
    far[7:9, 7:9] = 1  # no overlap: the nearest object by Hausdorff is used
    assert object_hausdorff(far, truth) == pytest.approx(np.hypot(5, 5))  # (2,2) to (7,7)


def test_empty_prediction():
    truth = two_squares()
    pred = np.zeros_like(truth)
    s = instance_scores(pred, truth)
    assert s["object_f1"] == 0 and s["object_dice"] == 0 and s["aji"] == 0 and s["pq"] == 0
    assert s["object_hausdorff"] == float("inf")
    assert object_f1(pred, truth)["fn"] == 2


def test_empty_truth():
    pred = two_squares()
    truth = np.zeros_like(pred)
    f1 = object_f1(pred, truth)
    assert (f1["tp"], f1["fp"], f1["fn"], f1["f1"]) == (0, 2, 0, 0.0)
    assert object_dice(pred, truth) == 0 and aggregated_jaccard(pred, truth) == 0


def test_both_empty_is_perfect():
    z = np.zeros((3, 3), np.int32)
    s = instance_scores(z, z)
    assert s["object_f1"] == 1 and s["aji"] == 1 and s["object_dice"] == 1 and s["object_hausdorff"] == 0


def test_overlap_matrix_counts_pairs():
    truth = two_squares()
    pred = np.zeros_like(truth)
    pred[:, 2:6] = 5
    inter, ta, pa = overlap_matrix(pred, truth)
    assert inter.tolist() == [[8], [8]] and ta.tolist() == [16, 16] and pa.tolist() == [16]


def test_aji_matches_brute_force_on_random_maps(rng):
    for _ in range(5):
        truth = rng.integers(0, 4, (6, 7))
        pred = rng.integers(0, 5, (6, 7))
        c = u = 0
        used = set()
        for g in range(1, truth.max() + 1):
            G = truth == g
            if not G.any():
                continue
            ious = [((G & (pred == s)).sum() / (G | (pred == s)).sum(), s) for s in range(1, pred.max() + 1)]
            best_iou, s = max(ious, key=lambda t: (t[0], -t[1]))
            S = pred == s
            if best_iou == 0:
                u += G.sum()
                continue
            c += (G & S).sum()
            u += (G | S).sum()
            used.add(s)
        u += sum((pred == s).sum() for s in np.unique(pred) if s and s not in used)
        assert aggregated_jaccard(pred, truth) == pytest.approx(c / u)


def test_detection_hand_values():
    pred = np.array([[0, 0], [10, 10], [20, 20]])
    true = np.array([[1, 0], [10, 13], [50, 50]])
    s = detection_scores(pred, true, radius=2)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 2)
    assert s["precision"] == pytest.approx(1 / 3) and s["f1"] == pytest.approx(1 / 3)


def test_detection_is_one_to_one_and_optimal():
    # a greedy nearest match of the first point takes X and leaves A without a partner
    pred = np.array([[0.0, 2.0], [0.0, 0.0]])  # B, A
    true = np.array([[0.0, 1.0], [0.0, 3.5]])  # X, Y
    assert detection_scores(pred, true, radius=1.6)["tp"] == 2
    # two detections of one cell: one is a false positive
    s = detection_scores(np.array([[0, 0], [0, 1]]), np.array([[0, 0.5]]), radius=1)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 0)
    empty = detection_scores(np.zeros((0, 2)), np.array([[0, 0]]), radius=1)
    assert (empty["tp"], empty["fn"], empty["f1"]) == (0, 1, 0.0)


def test_centroids_in_id_order():
    lab = np.zeros((5, 5), np.int32)
    lab[0:2, 0:2] = 4
    lab[4, 4] = 2
    np.testing.assert_allclose(centroids(lab), [[4, 4], [0.5, 0.5]])


def test_evaluate_instance_folders(tmp_path):
    from densemed.data.io import write_label
    from densemed.errors import DensemedError
    from densemed.metrics.instance import evaluate_instance_folders, format_instance_table

    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    truth = two_squares()
    write_label(tmp_path / "truth" / "a.png", truth.astype(np.uint16))
    write_label(tmp_path / "pred" / "a.png", truth.astype(np.uint16))  # perfect
    write_label(tmp_path / "truth" / "b.png", truth.astype(np.uint16))
    write_label(tmp_path / "pred" / "b.png", (truth > 0).astype(np.uint16))  # merged
    res = evaluate_instance_folders(tmp_path / "pred", tmp_path / "truth")
    assert res["mean"]["object_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert res["mean"]["aji"] == pytest.approx((1 + 0.5) / 2)
    assert (res["pooled"]["tp"], res["pooled"]["fn"]) == (3, 1)
    assert "pooled object F1" in format_instance_table(res)
    write_label(tmp_path / "truth" / "b.png", (np.pad(truth, 1) > 0).astype(np.uint8) * 255)
    write_label(tmp_path / "pred" / "b.png", np.pad(truth, 1).astype(np.uint16))
    with pytest.raises(DensemedError, match="b.png: looks like a binary mask"):
        evaluate_instance_folders(tmp_path / "pred", tmp_path / "truth")


def test_set_level_object_dice_and_hausdorff_weigh_objects_among_all_images_glas_rule(tmp_path):
    from densemed.data.io import write_label
    from densemed.metrics.instance import evaluate_instance_folders

    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    small = np.zeros((8, 8), np.uint16)
    small[0:2, 0:2] = 1  # a: a 4-px object found exactly (Dice 1, Hausdorff 0)
    big = np.zeros((8, 8), np.uint16)
    big[0:3, 0:4] = 1  # b: a 12-px object ...
    inner = np.zeros((8, 8), np.uint16)
    inner[0:2, 0:2] = 1  # ... of which a 4-px corner is found: Dice 8/16 = 0.5, Hausdorff |(2,3)-(1,1)| = sqrt 5
    write_label(tmp_path / "truth" / "a.png", small)
    write_label(tmp_path / "pred" / "a.png", small)
    write_label(tmp_path / "truth" / "b.png", big)
    write_label(tmp_path / "pred" / "b.png", inner)
    res = evaluate_instance_folders(tmp_path / "pred", tmp_path / "truth")
    # per image: Dice 1 and 0.5, mean 0.75; Hausdorff 0 and sqrt 5
    assert res["mean"]["object_dice"] == pytest.approx(0.75)
    assert res["mean"]["object_hausdorff"] == pytest.approx(np.sqrt(5) / 2)
    # set: truth side (4 * 1 + 12 * 0.5) / 16 = 0.625, prediction side (4 * 1 + 4 * 0.5) / 8 = 0.75
    assert res["pooled"]["object_dice"] == pytest.approx(0.5 * (0.625 + 0.75))
    # Hausdorff: truth side 12 sqrt5 / 16, prediction side 4 sqrt5 / 8
    assert res["pooled"]["object_hausdorff"] == pytest.approx(0.5 * (0.75 + 0.5) * np.sqrt(5))


def test_dsb_score_hand_computed_over_the_ten_iou_thresholds():
    from densemed.metrics.instance import DSB_THRESHOLDS, dsb_score

    assert DSB_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    truth = np.zeros((10, 10), int)
    truth[0:2, 0:5] = 1  # 10 pixels
    truth[5:10, 5:10] = 2  # 25 pixels
    pred = np.zeros_like(truth)
    pred[0:2, 0:4] = 7  # IoU 8/10 = 0.8 with object 1
    pred[5:10, 6:10] = 3  # IoU 20/25 = 0.8 with object 2
    pred[9, 0] = 9  # a false positive
    # IoU 0.8 exceeds t for t = 0.50 .. 0.75 (six thresholds): TP 2, FP 1, FN 0 -> 2/3; then TP 0 -> 0/5
    assert dsb_score(pred, truth) == pytest.approx(6 * (2 / 3) / 10)
    assert dsb_score(truth, truth) == 1.0
    assert dsb_score(np.zeros_like(truth), np.zeros_like(truth)) == 1.0
    assert dsb_score(np.zeros_like(truth), truth) == 0.0
    scores = instance_scores(pred, truth, hausdorff=False)
    assert scores["dsb_score"] == pytest.approx(0.4)
    assert scores["dq"] == pytest.approx(2 * 2 / (2 * 2 + 1))  # F1 at IoU 0.5
