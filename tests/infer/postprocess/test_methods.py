"""Instance post-processing methods on synthetic maps with touching objects (registry, options, tuning)."""

from __future__ import annotations

import numpy as np
import pytest

from densemed.errors import DensemedError
from densemed.infer.postprocess import names, to_instances
from densemed.infer.postprocess.deepdistance import choose_h, detect
from densemed.metrics.instance import aggregated_jaccard, object_f1
from densemed.targets import contours, distance


@pytest.fixture
def cells() -> np.ndarray:
    """Two touching discs of different size and a small separate one."""
    yy, xx = np.mgrid[:40, :60]
    lab = np.zeros((40, 60), np.int32)
    lab[(yy - 20) ** 2 + (xx - 20) ** 2 <= 144] = 1
    lab[((yy - 20) ** 2 + (xx - 42) ** 2 <= 100) & (lab == 0)] = 2
    lab[(yy - 6) ** 2 + (xx - 52) ** 2 <= 16] = 3
    return lab


def maps(lab: np.ndarray) -> dict[str, np.ndarray]:
    inner, outer = distance.encode(lab)
    return {
        "foreground": (lab > 0).astype(np.float32),
        "contour": contours.encode(lab, thickness=2),
        "inner_distance": inner,
        "outer_distance": outer,
    }


def test_components_merge_touching_objects(cells):
    out = to_instances(maps(cells), "components")
    assert out.max() == 2 and out.dtype == np.int32
    assert object_f1(out, cells)["f1"] == pytest.approx(0.8)  # the merged pair counts once


def test_watershed_methods_split_touching_objects(cells):
    m = maps(cells)
    for method, params in [
        ("watershed", {}),
        ("dcan", {"min_size": 10, "dilate": 2}),
        ("contour_watershed", {}),
        ("deepdistance", {}),
    ]:
        out = to_instances(m, method, **params)
        assert out.max() == 3, method
        assert object_f1(out, cells)["f1"] == 1.0, method
        assert aggregated_jaccard(out, cells) > 0.95, method


def test_deepdistance_without_segmentation_uses_the_outer_map(cells):
    m = maps(cells)
    out = to_instances({"inner_distance": m["inner_distance"], "outer_distance": m["outer_distance"]}, "deepdistance",
                       outer_threshold=0.0)
    assert out.max() == 3 and aggregated_jaccard(out, cells) > 0.99


def test_dcan_removes_small_objects_and_fills_holes():
    fg = np.zeros((20, 20), np.float32)
    fg[2:12, 2:12] = 0.9
    fg[6, 6] = 0.1  # a hole
    fg[16:18, 16:18] = 0.9  # 4 pixels: removed by min_size
    out = to_instances({"foreground": fg, "contour": np.zeros_like(fg)}, "dcan", min_size=10, dilate=0)
    assert out.max() == 1 and out[6, 6] == 1 and out[16, 16] == 0


def test_3d_components_and_dcan():
    lab = np.zeros((6, 10, 10), np.int32)
    lab[1:5, 1:5, 1:5] = 1
    lab[1:5, 5:9, 1:5] = 2
    m = {"foreground": (lab > 0).astype(np.float32), "contour": contours.encode(lab)}
    assert to_instances(m, "components").max() == 1
    assert to_instances(m, "dcan", min_size=1, dilate=2).max() == 2


def test_bad_requests_raise():
    fg = np.zeros((4, 4), np.float32)
    with pytest.raises(DensemedError, match="unknown instance method 'magic'"):
        to_instances({"foreground": fg}, "magic")
    with pytest.raises(DensemedError, match="needs the 'contour'"):
        to_instances({"foreground": fg}, "dcan")
    with pytest.raises(DensemedError, match="no option"):
        to_instances({"foreground": fg}, "components", t_o=0.3)
    with pytest.raises(DensemedError, match="different shapes"):
        to_instances({"foreground": fg, "contour": np.zeros((3, 3))}, "dcan")


def test_detect_and_choose_h(cells):
    inner = distance.encode_inner(cells)
    rng = np.random.default_rng(0)
    noisy = inner + (cells > 0) * rng.uniform(0, 0.03, inner.shape)  # spurious shallow maxima
    assert len(detect(inner, h=0.02)) == 3
    assert len(detect(noisy, h=0.0)) > 3
    best, scores = choose_h([noisy], [cells], candidates=(0.0, 0.05))
    assert best == 0.05 and scores[0.05] == 1.0 and scores[0.0] < 1.0


def test_every_method_is_registered_once():
    assert names() == ["cells", "components", "contour_watershed", "dcan", "deepdistance", "watershed"]


def test_tune_h_resolves_auto_from_the_validation_outputs(cells):
    from densemed.infer.postprocess import get_tuner

    inner = distance.encode_inner(cells)
    noisy = inner + (cells > 0) * np.random.default_rng(0).uniform(0, 0.03, inner.shape)
    tune = get_tuner("deepdistance")
    chosen, scores = tune([{"inner_distance": noisy}], [cells], {"h": "auto"})
    # the same choice choose_h makes over the default candidates, with F1 1 at the chosen h
    assert chosen == {"h": choose_h([noisy], [cells])[0]} and scores[chosen["h"]] == 1.0
    assert tune([{"inner_distance": noisy}], [cells], {"h": 0.05}) is None  # nothing set to auto


def _membrane_map() -> tuple[np.ndarray, np.ndarray]:
    """Membrane probability of two 10x10 cells left and right of a membrane column with a 2-pixel gap."""
    p = np.zeros((12, 23), np.float32)
    p[[0, -1], :] = p[:, [0, 11, 22]] = 0.95
    p[5:7, 11] = 0.3  # the gap: membrane less sure, below the usual 0.5 cut
    truth = np.zeros_like(p, dtype=np.int32)
    truth[1:11, 1:11], truth[1:11, 12:22] = 1, 2
    return p, truth


def test_cells_keep_two_cells_apart_across_a_membrane_gap_and_leave_no_membrane_segment():
    from densemed.metrics.membrane import cell_segments, rand_scores

    p, truth = _membrane_map()
    assert cell_segments(p < 0.5).max() == 1  # thresholding merges the two cells through the gap
    out = to_instances({"foreground": p}, "cells")
    assert out.min() == 1 and out.max() == 2  # every pixel in one of two cells
    assert len(np.unique(out[truth == 1])) == 1 and len(np.unique(out[truth == 2])) == 1
    assert rand_scores(out, truth)["rand_error"] == 0.0
    # a marker smaller than min_marker seeds nothing: a 2x2 dip inside the left cell's region stays in it
    p2 = p.copy()
    p2[1:11, 1:11] = 0.2
    p2[4:6, 4:6] = 0.0
    assert to_instances({"foreground": p2}, "cells", markers="threshold", min_marker=10).max() == 1
    assert to_instances({"foreground": p2}, "cells", markers="threshold", min_marker=4).max() == 2


def test_cells_tuner_picks_the_marker_threshold_by_rand_score():
    from densemed.infer.postprocess import get_tuner

    p, truth = _membrane_map()
    p[1:11, 1:11] = 0.15  # the left cell is only moderately sure: markers need a cut above 0.15
    chosen, scores = get_tuner("cells")([{"foreground": p}], [truth],
                                        {"markers": "threshold", "marker_threshold": "auto", "min_marker": 10})
    assert chosen == {"marker_threshold": 0.2}
    assert scores["marker_threshold=0.05"] < scores["marker_threshold=0.2"] == 1.0


def _missed_membrane() -> tuple[np.ndarray, np.ndarray]:
    """Two 15x15 cells either side of a membrane column that the network missed over 3 pixels (p = 0.01)."""
    p = np.zeros((17, 33), np.float32)
    p[[0, -1], :] = p[:, [0, 16, 32]] = 0.95
    p[7:10, 16] = 0.01  # a gap as sure as the cells' insides
    truth = np.zeros_like(p, dtype=np.int32)
    truth[1:16, 1:16], truth[1:16, 17:32] = 1, 2
    return p, truth


def test_cells_distance_markers_split_cells_that_a_missed_membrane_joins():
    from densemed.metrics.membrane import rand_scores

    p, truth = _missed_membrane()
    merged = to_instances({"foreground": p}, "cells", markers="threshold")
    assert merged.max() == 1  # the gap joins the confident pixels of both cells into one marker
    # 2 cells of 225 px in one segment: pairs together in the truth 2 * 225 * 224, in the prediction 450 * 449
    assert rand_scores(merged, truth)["rand_precision"] == pytest.approx(2 * 225 * 224 / (450 * 449))
    # the distance to the membrane is 8 px at each cell's centre and at most 2 px in the 3-px neck:
    # two h-maxima of height >= 5, so two markers, grown apart along the membrane column
    out = to_instances({"foreground": p}, "cells")
    assert out.max() == 2 and rand_scores(out, truth)["rand_error"] == 0.0
    # h above the cells' 8 px leaves no h-maximum: the region joined through the gap gets one marker -> one cell
    assert to_instances({"foreground": p}, "cells", h=9).max() == 1


def test_cells_distance_markers_give_a_thin_cell_its_own_marker_unless_smaller_than_min_marker():
    p, _ = _missed_membrane()
    p[7:10, 16] = 0.95  # membranes closed
    p[1:16, 5] = 0.95  # a membrane cuts a 15x4 strip (max distance 2 px < h) off the left cell
    out = to_instances({"foreground": p}, "cells")
    assert out.max() == 3 and len(np.unique(out[1:16, 1:5])) == 1  # the strip has no h-maximum but is a cell
    assert to_instances({"foreground": p}, "cells", min_marker=61).max() == 2  # 60 px < 61: grown into by a neighbour


def test_cells_refuse_an_unknown_marker_rule():
    p, _ = _missed_membrane()
    with pytest.raises(DensemedError, match="cells markers must be one of distance, threshold"):
        to_instances({"foreground": p}, "cells", markers="peaks")


def test_cells_tuner_picks_distance_markers_where_a_membrane_is_missed():
    from densemed.infer.postprocess import get_tuner

    p, truth = _missed_membrane()
    chosen, scores = get_tuner("cells")([{"foreground": p}], [truth], {"markers": "auto"})
    assert chosen == {"markers": "distance"}
    assert scores["markers=distance"] == 1.0 > scores["markers=threshold"]
