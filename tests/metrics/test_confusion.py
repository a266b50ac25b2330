import numpy as np
import pytest
import torch

from densemed.metrics import (
    ConfusionAccumulator,
    confusion,
    dice,
    iou,
    precision,
    recall,
    to_labels,
)

# Hand-computed 4x4 example: truth has 4 foreground pixels, prediction 5, 3 of them correct.
TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]])


def test_confusion_counts_match_hand_computed_4x4():
    s = confusion(PRED, TRUTH, 2)
    # foreground: TP 3, FP 2 (0,1),(3,0), FN 1 (1,3), TN 10; background mirrors FP and FN.
    np.testing.assert_array_equal(s.tp, [10, 3])
    np.testing.assert_array_equal(s.fp, [1, 2])
    np.testing.assert_array_equal(s.fn, [2, 1])
    np.testing.assert_array_equal(s.tn, [3, 10])


def test_scores_match_hand_computed_4x4():
    s = confusion(PRED, TRUTH, 2)
    np.testing.assert_allclose(dice(s), [20 / 23, 2 / 3])
    np.testing.assert_allclose(iou(s), [10 / 13, 1 / 2])
    np.testing.assert_allclose(precision(s), [10 / 11, 3 / 5])
    np.testing.assert_allclose(recall(s), [10 / 12, 3 / 4])


def test_iou_equals_dice_over_two_minus_dice(rng):
    t, p = rng.integers(0, 4, (30, 30)), rng.integers(0, 4, (30, 30))
    s = confusion(p, t, 4)
    np.testing.assert_allclose(iou(s), dice(s) / (2 - dice(s)))


def test_torch_counts_equal_numpy_counts_for_batched_input(rng):
    t, p = rng.integers(0, 3, (2, 1, 7, 9, 5)), rng.integers(0, 3, (2, 1, 7, 9, 5))
    s_np = confusion(p, t, 3)
    s_t = confusion(torch.from_numpy(p), torch.from_numpy(t), 3)
    assert isinstance(s_t.tp, torch.Tensor) and s_t.tp.dtype == torch.int64
    for a, b in zip(s_np, s_t):
        np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_allclose(dice(s_np), dice(s_t).numpy())
    assert s_np.tp.sum() + s_np.fp.sum() == p.size  # every pixel predicted once


def test_per_image_counts_are_each_image_alone(rng):
    t, p = rng.integers(0, 3, (3, 1, 6, 6)), rng.integers(0, 3, (3, 1, 6, 6))
    for backend in (np.asarray, torch.from_numpy):
        s = confusion(backend(p), backend(t), 3, per_image=True)
        assert tuple(s.tp.shape) == (3, 3)
        for b in range(3):
            one = confusion(p[b], t[b], 3)
            for a, ref in zip(s, one):
                np.testing.assert_array_equal(np.asarray(a[b]), ref)


def _one_hot(labels: np.ndarray, c: int) -> torch.Tensor:
    # (B, *S) -> (B, C, *S)
    return torch.from_numpy(np.moveaxis(np.eye(c, dtype=np.float32)[labels], -1, 1))


@pytest.mark.parametrize("shape", [(2, 12, 10), (2, 6, 7, 5)])
def test_dice_and_iou_equal_monai_with_background(rng, shape):
    from monai.metrics import compute_dice, compute_iou

    t, p = rng.integers(0, 3, shape), rng.integers(0, 3, shape)
    s = confusion(p, t, 3, per_image=True)
    ref_dice = compute_dice(_one_hot(p, 3), _one_hot(t, 3), include_background=True).numpy()
    ref_iou = compute_iou(_one_hot(p, 3), _one_hot(t, 3), include_background=True).numpy()
    np.testing.assert_allclose(dice(s), ref_dice, rtol=1e-6)
    np.testing.assert_allclose(iou(s), ref_iou, rtol=1e-6)


def test_dice_metric_module_equals_accumulated_per_image_mean(rng):
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=False, reduction="mean")
    scores = []
    for _ in range(3):
        t, p = rng.integers(0, 2, (2, 16, 16)), rng.integers(0, 2, (2, 16, 16))
        metric(_one_hot(p, 2), _one_hot(t, 2))
        scores.append(dice(confusion(p, t, 2, per_image=True))[:, 1])
    np.testing.assert_allclose(np.concatenate(scores).mean(), metric.aggregate().item(), rtol=1e-6)


def test_empty_class_in_both_scores_one_and_never_nan():
    z = np.zeros((4, 4), dtype=np.int64)
    s = confusion(z, z, 3)  # classes 1 and 2 absent from both
    for fn in (dice, iou, precision, recall):
        np.testing.assert_array_equal(fn(s), [1.0, 1.0, 1.0])
    assert np.isnan(dice(s, empty_score=float("nan"))[1])


def test_one_sided_empty_class_scores_zero():
    z = np.zeros((4, 4), dtype=np.int64)
    one = z.copy()
    one[0, 0] = 1
    missed = confusion(z, one, 2)  # nothing predicted, one pixel to find
    assert dice(missed)[1] == 0 and iou(missed)[1] == 0
    assert precision(missed)[1] == 0 and recall(missed)[1] == 0
    spurious = confusion(one, z, 2)  # something predicted, nothing to find
    assert dice(spurious)[1] == 0 and precision(spurious)[1] == 0 and recall(spurious)[1] == 0
    t = confusion(torch.from_numpy(z), torch.from_numpy(one), 2)
    assert recall(t)[1].item() == 0 and not torch.isnan(precision(t)).any()


def test_accumulator_equals_one_shot_and_resets(rng):
    acc = ConfusionAccumulator(3)
    ts, ps = rng.integers(0, 3, (4, 1, 8, 8)), rng.integers(0, 3, (4, 1, 8, 8))
    for b in range(0, 4, 2):
        acc.update(torch.from_numpy(ps[b : b + 2]), torch.from_numpy(ts[b : b + 2]))
    whole = confusion(ps, ts, 3)
    np.testing.assert_allclose(acc.compute()["dice"], dice(whole))
    np.testing.assert_allclose(acc.compute()["recall"], recall(whole))
    acc.reset()
    np.testing.assert_array_equal(acc.stats.tp, [0, 0, 0])


def test_to_labels_sigmoid_and_softmax():
    one = torch.tensor([[[[-1.0, 0.5]]]])
    assert to_labels(one).tolist() == [[[[0, 1]]]]
    multi = torch.tensor([[[[0.0, 3.0]], [[1.0, 0.0]], [[2.0, 0.0]]]])  # (1, 3, 1, 2)
    assert to_labels(multi).tolist() == [[[[2, 0]]]]


def test_out_of_range_or_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="lie in"):
        confusion(np.array([0, 2]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="lie in"):
        confusion(torch.tensor([0, 1]), torch.tensor([-1, 1]), 2)
    with pytest.raises(ValueError, match="shapes differ"):
        confusion(np.zeros(3, int), np.zeros(4, int), 2)
