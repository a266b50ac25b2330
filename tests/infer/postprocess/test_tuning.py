"""Post-processing options set to ``auto``: the shared grid search picks the value known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from densemed import config
from densemed.errors import DensemedError
from densemed.infer.postprocess import get_tuner, to_instances, tunable
from densemed.infer.postprocess.tuning import grid_search, radii, sizes, thresholds


def _squares_and_speck() -> tuple[np.ndarray, np.ndarray]:
    """Two true 6x6 squares (area 36) and, in the prediction only, a 2x2 speck."""
    truth = np.zeros((16, 24), np.int32)
    truth[2:8, 2:8] = 1
    truth[2:8, 12:18] = 2
    fg = (truth > 0).astype(np.float32) * 0.9
    fg[12:14, 20:22] = 0.9
    return fg, truth


def test_candidate_grids_put_the_default_first_and_scale_with_the_true_objects():
    _, truth = _squares_and_speck()
    assert thresholds(0.5) == (0.5, 0.3, 0.7)
    assert thresholds(0.4) == (0.4, 0.3, 0.5, 0.7)
    # median area 36: 0.03 * 36 = 1.08 -> 1, 0.1 * 36 = 3.6 -> 4, 0.3 * 36 = 10.8 -> 11
    assert sizes(0, [truth]) == (0, 1, 4, 11)
    assert sizes(64, [truth]) == (64, 0, 1, 4, 11)
    # equivalent radius sqrt(36 / pi) = 3.385: 0.15 r = 0.5, 0.3 r = 1.0 (already there), 0.5 r = 1.7
    assert radii(2.0, [truth]) == (2.0, 1.0, 0.5, 1.7)


def test_components_min_size_auto_removes_the_known_speck_and_leaves_the_threshold_alone():
    fg, truth = _squares_and_speck()
    chosen, scores = get_tuner("components")([{"foreground": fg}], [truth], {"min_size": "auto", "threshold": 0.5})
    # min_size 0, 1 and 4 keep the 4-pixel speck: AJI = (36 + 36) / (36 + 36 + 4); 11 removes it: AJI 1
    assert chosen == {"min_size": 11}
    assert scores == pytest.approx({"min_size=0": 72 / 76, "min_size=1": 72 / 76, "min_size=4": 72 / 76,
                                    "min_size=11": 1.0})


def test_components_threshold_auto_separates_the_two_known_blobs():
    # two true 10x10 blobs: 8x8 cores at p 0.9, a one-pixel rim at p 0.65, joined by a 2x3 bridge at p 0.55
    truth = np.zeros((14, 27), np.int32)
    truth[2:12, 2:12] = 1
    truth[2:12, 15:25] = 2
    fg = np.where(truth > 0, 0.65, 0.0).astype(np.float32)
    fg[3:11, 3:11] = fg[3:11, 16:24] = 0.9
    fg[6:8, 12:15] = 0.55
    chosen, scores = get_tuner("components")([{"foreground": fg}], [truth], {"threshold": "auto"})
    # 0.3 and 0.5 keep the bridge: one object of 206 px, AJI = (100 + 100) / (206 + 206);
    # 0.7 separates the blobs but drops their rims: AJI = (64 + 64) / (100 + 100)
    assert scores == pytest.approx({"threshold=0.5": 200 / 412, "threshold=0.3": 200 / 412, "threshold=0.7": 0.64})
    assert chosen == {"threshold": 0.7}


def test_watershed_h_auto_keeps_a_dumbbell_whole():
    # one true object: discs of radius 9 and 7 joined by a 9-pixel-wide neck. The distance transform peaks
    # at 9.06 and sqrt(50) = 7.07 with a saddle of 5 between them, so the small lobe's dynamic is 2.07:
    # h = 1, 1.9 and the default 2 split it in two, any h above 2.07 keeps one object.
    yy, xx = np.mgrid[:30, :50]
    truth = (((yy - 15) ** 2 + (xx - 12) ** 2 <= 81) | ((yy - 15) ** 2 + (xx - 36) ** 2 <= 49)
             | ((abs(yy - 15) <= 4) & (xx >= 12) & (xx <= 36))).astype(np.int32)
    fg = truth.astype(np.float32)
    chosen, scores = get_tuner("watershed")([{"foreground": fg}], [truth], {"h": "auto", "min_size": 0})
    # candidates: 2 (default), 1, then 0.15 / 0.3 / 0.5 of the radius sqrt(483 / pi) = 12.40
    assert list(scores) == ["h=2.0", "h=1.0", "h=1.9", "h=3.7", "h=6.2"]
    assert chosen == {"h": 3.7}  # the first candidate above 2.07
    assert scores["h=3.7"] == scores["h=6.2"] == 1.0 and max(scores["h=1.0"], scores["h=2.0"]) < 1.0
    assert to_instances({"foreground": fg}, "watershed", h=2.0).max() == 2


def _touching_pair() -> np.ndarray:
    """Two true 12x10 objects sharing a side."""
    truth = np.zeros((16, 24), np.int32)
    truth[2:14, 2:12] = 1
    truth[2:14, 12:22] = 2
    return truth


def _touching_with_a_seam() -> tuple[np.ndarray, np.ndarray]:
    """:func:`_touching_pair`; the network's probability is 0.95 inside, 0.65 on the 2-px seam."""
    truth = _touching_pair()
    fg = (truth > 0).astype(np.float32) * 0.95
    fg[2:14, 11:13] = 0.65
    return fg, truth


def test_watershed_markers_auto_picks_confident_cores_where_the_network_marks_the_seam():
    # the mask (> 0.5) is one 12x20 rectangle: its distance transform has one ridge, so h-maxima give one
    # marker (AJI = 240 / 480 = 0.5 for any h); the cores (> 0.8) are the two objects minus the seam, and
    # flooding the rectangle from them gives each seam column to the nearer core: the truth exactly
    fg, truth = _touching_with_a_seam()
    chosen, scores = get_tuner("watershed")([{"foreground": fg}], [truth],
                                            {"h": "auto", "markers": "auto", "core": "auto"})
    assert chosen == {"h": 2.0, "markers": "cores", "core": 0.8}  # h back to its default: unused by cores
    assert [k for k in scores if k.startswith("markers=distance")] == [
        "markers=distance h=2.0", "markers=distance h=1.0", "markers=distance h=0.9", "markers=distance h=1.9",
        "markers=distance h=3.1"]  # 0.15 / 0.3 / 0.5 of the radius sqrt(120 / pi) = 6.18
    assert all(scores[k] == pytest.approx(0.5) for k in scores if k.startswith("markers=distance"))
    # core 0.6 is not above the seam: one marker again
    assert scores == pytest.approx({**{k: 0.5 for k in scores if "distance" in k}, "markers=cores core=0.8": 1.0,
                                    "markers=cores core=0.6": 0.5, "markers=cores core=0.7": 1.0,
                                    "markers=cores core=0.9": 1.0})
    np.testing.assert_array_equal(to_instances({"foreground": fg}, "watershed", markers="cores"), truth)
    assert to_instances({"foreground": fg}, "watershed", markers="distance", h=1.0).max() == 1


def test_watershed_markers_auto_keeps_distance_on_a_tie():
    # one uniform square: both marker rules find it exactly, and a tie keeps the default rule
    truth = np.zeros((12, 12), np.int32)
    truth[2:10, 2:10] = 1
    chosen, scores = get_tuner("watershed")([{"foreground": truth * 0.9}], [truth], {"markers": "auto"})
    assert chosen == {"markers": "distance"}
    assert scores == {"markers=distance": 1.0, "markers=cores": 1.0}


def test_watershed_seams_auto_gives_back_the_contact_a_seam_trained_network_leaves_out():
    # a network trained with task.seams=1 sees the pair as two 12x9 blocks with background in columns 11-12;
    # seams 0 keeps the gap (AJI = (108 + 108) / (120 + 120) = 0.9), seams 1 gives each block its column back
    from densemed.targets.seams import separate

    truth = _touching_pair()
    fg = (separate(truth, 1) > 0).astype(np.float32) * 0.95
    chosen, scores = get_tuner("watershed")([{"foreground": fg}], [truth], {"seams": "auto"})
    assert chosen == {"seams": 1}
    assert scores["seams=0"] == pytest.approx(0.9) and scores["seams=1"] == 1.0
    assert scores["seams=2"] < 1.0  # 2 px also fills background beside the contact's ends
    np.testing.assert_array_equal(to_instances({"foreground": fg}, "watershed", seams=1), truth)
    # with other options auto, seams is chosen last: both marker rules tie at 0.9 with seams 0 (distance kept)
    chosen, scores = get_tuner("watershed")([{"foreground": fg}], [truth], {"markers": "auto", "seams": "auto"})
    assert chosen == {"markers": "distance", "seams": 1}
    assert scores["markers=distance"] == scores["markers=cores"] == pytest.approx(0.9)
    assert scores["then seams=1"] == 1.0 and scores["then seams=0"] == pytest.approx(0.9)


def test_refilling_seams_leaves_an_object_border_with_the_background_alone():
    from densemed.infer.postprocess._common import refill_seams

    lab = np.zeros((9, 9), np.int32)
    lab[2:7, 2:7] = 4  # alone: no background pixel has two objects near it
    np.testing.assert_array_equal(refill_seams(lab, 2), lab)
    assert refill_seams(lab, 0) is lab


def test_watershed_refuses_an_unknown_marker_rule_in_one_line():
    with pytest.raises(DensemedError, match="markers must be one of distance, cores, got 'peaks'"):
        to_instances({"foreground": np.ones((4, 4), np.float32)}, "watershed", markers="peaks")


def test_dcan_t_c_auto_finds_a_weak_contour_between_touching_objects():
    # two touching 12x10 objects; the network's contour probability on their 2-pixel shared band is only 0.4
    truth = _touching_pair()
    p_o = (truth > 0).astype(np.float32) * 0.9
    p_c = np.full(truth.shape, 0.05, np.float32)
    p_c[2:14, 11:13] = 0.4
    outputs = [{"foreground": p_o, "contour": p_c}]
    chosen, scores = get_tuner("dcan")(outputs, [truth], {"t_c": "auto", "t_o": 0.5, "min_size": 10, "dilate": 1})
    assert chosen == {"t_c": 0.3}  # below 0.4: the band is contour and the objects come apart
    assert to_instances(outputs[0], "dcan", t_c=0.3, min_size=10, dilate=1).max() == 2
    assert to_instances(outputs[0], "dcan", t_c=0.5, min_size=10, dilate=1).max() == 1
    assert scores["t_c=0.3"] > scores["t_c=0.5"] == scores["t_c=0.7"]


def test_contour_watershed_and_deepdistance_tune_their_min_size():
    fg, truth = _squares_and_speck()
    cw = get_tuner("contour_watershed")([{"foreground": fg, "contour": np.zeros_like(fg)}], [truth],
                                        {"min_size": "auto"})
    assert cw[0] == {"min_size": 11}
    # inner distance: a 2x2 peak of 1 on a plateau of 0.5 per true object; the speck its own maximum of 0.5
    inner = np.zeros(fg.shape)
    inner[2:8, 2:8] = inner[2:8, 12:18] = inner[12:14, 20:22] = 0.5
    inner[4:6, 4:6] = inner[4:6, 14:16] = 1.0
    dd = get_tuner("deepdistance")([{"foreground": fg, "inner_distance": inner}], [truth],
                                   {"h": 0.05, "min_size": "auto"})
    assert dd[0] == {"min_size": 11}
    assert to_instances({"foreground": fg, "inner_distance": inner}, "deepdistance", h=0.05).max() == 3


def test_nothing_auto_or_no_validation_image_leaves_the_options_alone():
    fg, truth = _squares_and_speck()
    for method, params in [("components", {"threshold": 0.5, "min_size": 3}), ("watershed", {"h": 2.0}),
                           ("dcan", {"t_o": 0.5}), ("contour_watershed", {})]:
        out = {"foreground": fg, "contour": np.zeros_like(fg)}
        assert get_tuner(method)([out], [truth], params) is None, method
    assert get_tuner("components")([], [], {"min_size": "auto"}) is None
    assert grid_search([{"foreground": fg}], [truth], "components", {"min_size": 4}, {"min_size": (0, 4)}) is None


def test_every_method_has_a_tuner_with_its_auto_options():
    assert tunable("components") == ("threshold", "min_size")
    assert tunable("watershed") == ("threshold", "h", "min_size", "markers", "core", "seams")
    assert tunable("dcan") == tunable("contour_watershed") == ("t_o", "t_c", "min_size")
    assert tunable("deepdistance") == ("h", "threshold", "outer_threshold", "min_size")


def _recipe(post: str, *extra: str) -> config.Config:
    return config.load(None, [f"task={{name: instances, postprocess: {post}}}", "model={name: unet, base_width: 2}",
                              "data.patch_size=[16,16]", *extra])


def test_the_recipe_accepts_auto_for_tunable_options_and_refuses_junk_with_one_line():
    _recipe("{method: components, threshold: auto, min_size: auto}")
    _recipe("{method: watershed, h: auto, threshold: 0.4, min_size: auto}")
    _recipe("{method: dcan, t_o: auto, t_c: auto, min_size: auto, dilate: 3}")
    cases = [
        ("{method: components, fill: auto}", "method 'components' cannot choose 'fill' itself (auto); "
                                             "options it can choose: threshold, min_size"),
        ("{method: dcan, t_o: high}", "method 'dcan' option 't_o' must be a number or auto, got 'high'"),
        ("{method: components, min_size: 2.5}", "option 'min_size' must be a whole number or auto, got 2.5"),
        ("{method: watershed, fill: 1}", "option 'fill' must be true or false, got 1"),
        ("{method: dcan, dilate: auto}", "cannot choose 'dilate' itself"),
    ]
    for post, message in cases:
        with pytest.raises(DensemedError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            _recipe(post)
        assert "\n" not in str(err.value)


def test_to_instances_refuses_an_unresolved_auto():
    fg, _ = _squares_and_speck()
    with pytest.raises(DensemedError, match="option 'min_size' is still auto; resolve it first"):
        to_instances({"foreground": fg}, "components", min_size="auto")
