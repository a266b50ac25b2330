"""Fourier descriptor error of matched objects: hand-made pairs, an analytic reference, the folder evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from densemed.metrics.instance import instance_scores
from densemed.metrics.shape import descriptor_error, match_objects


def disc(radius: float, centre: tuple[float, float], shape=(80, 120)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


def continuous_square_amplitudes(n_harmonics: int = 8, m: int = 1 << 16) -> np.ndarray:
    """``A_n / a_0`` of a continuous square: xi(u) = sqrt(h^2 + u^2) on each side, by an FFT (h = 1)."""
    u = (np.arange(m) + 0.5) / m * 8 - 4  # arc length over the 4 sides of length 2, centred on a side
    xi = np.hypot(1.0, (u + 1) % 2 - 1)
    c = np.fft.rfft(xi) / m
    return 2 * np.abs(c[1 : n_harmonics + 1]) / c[0].real


def test_identical_objects_have_zero_error_whatever_their_ids():
    truth = np.zeros((80, 120), np.int32)
    truth[disc(15, (30, 30))] = 1
    truth[10:40, 70:110] = 2
    pred = np.where(truth == 1, 9, np.where(truth == 2, 4, 0))
    pairs = match_objects(pred, truth)
    assert pairs == [(4, 2), (9, 1)]
    assert descriptor_error(pred, truth, pairs) == 0.0


def test_disc_against_square_equals_the_analytic_amplitude_difference():
    truth = np.zeros((80, 120), np.int32)
    truth[disc(20, (40, 40))] = 1
    pred = np.zeros_like(truth)
    pred[22:58, 22:58] = 7  # a 36 x 36 square over the disc
    assert match_objects(pred, truth) == [(7, 1)]
    # disc: every A_n = 0; square: energy at n = 4, 8 -> mean over n of |difference| = sum(A_n/a_0) / 8
    expected = continuous_square_amplitudes(8).sum() / 8
    # stated pixelisation tolerance: 0.3 / r per amplitude of the disc, 0.01 on the square's
    assert descriptor_error(pred, truth, [(7, 1)]) == pytest.approx(expected, abs=0.005)


def test_error_averages_over_pairs():
    truth = np.zeros((80, 120), np.int32)
    truth[disc(15, (30, 30))] = 1
    truth[disc(15, (30, 90))] = 2
    pred = truth.copy()
    pred[pred == 2] = 0
    pred[15:46, 75:106] = 2  # the second disc predicted as a square
    both = descriptor_error(pred, truth, [(1, 1), (2, 2)])
    only_square = descriptor_error(pred, truth, [(2, 2)])
    assert both == pytest.approx(only_square / 2)
    assert only_square > 0.015


def test_no_match_gives_nan_and_an_unknown_id_raises():
    lab = np.zeros((10, 10), np.int32)
    lab[2:6, 2:6] = 1
    assert math.isnan(descriptor_error(lab, lab, []))
    with pytest.raises(ValueError, match="missing"):
        descriptor_error(lab, lab, [(1, 5)])


def test_instance_scores_report_the_descriptor_error_over_f1_matches():
    truth = np.zeros((80, 120), np.int32)
    truth[disc(20, (40, 40))] = 1
    truth[disc(10, (40, 100))] = 2
    pred = np.zeros_like(truth)
    pred[22:58, 22:58] = 3  # matches object 1 as a square
    pred[5:8, 5:8] = 4  # a false positive: not part of the shape score
    s = instance_scores(pred, truth)
    assert s["object_f1"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert s["descriptor_error"] == pytest.approx(descriptor_error(pred, truth, [(3, 1)]))
    assert math.isnan(instance_scores(np.zeros_like(truth), truth)["descriptor_error"])
    assert "descriptor_error" not in instance_scores(np.ones((3, 4, 5), int), np.ones((3, 4, 5), int))


def test_evaluate_instance_folders_lists_the_descriptor_error_column(tmp_path):
    from densemed.data.io import write_label
    from densemed.metrics.instance import evaluate_instance_folders, format_instance_table

    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    truth = np.zeros((80, 120), np.uint16)
    truth[disc(20, (40, 40))] = 1
    truth[disc(12, (40, 95))] = 2
    square = truth.copy()
    square[truth == 1] = 0
    square[22:58, 22:58] = 1
    write_label(tmp_path / "truth" / "a.png", truth)
    write_label(tmp_path / "pred" / "a.png", truth)
    write_label(tmp_path / "truth" / "b.png", truth)
    write_label(tmp_path / "pred" / "b.png", square)
    res = evaluate_instance_folders(tmp_path / "pred", tmp_path / "truth")
    assert "descriptor_error" in res["metrics"]
    b = descriptor_error(square, truth, [(1, 1), (2, 2)])
    assert res["mean"]["descriptor_error"] == pytest.approx(b / 2)
    assert "descriptor_error" in format_instance_table(res)
