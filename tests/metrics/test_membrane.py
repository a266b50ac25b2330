"""ISBI 2012 pixel and Rand errors (densemed.metrics.membrane) and ``densemed evaluate --membranes``."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from densemed.cli import main
from densemed.metrics.membrane import cell_segments, membrane_scores, rand_scores


def _grid(size: int = 12, step: int = 4) -> np.ndarray:
    """Membrane lines every ``step`` pixels: (size/step)^2 square cells of (step - 1)^2 pixels."""
    m = np.zeros((size, size), bool)
    m[::step, :] = True
    m[:, ::step] = True
    return m


def test_rand_error_equals_scikit_image_adapted_rand_error_on_random_maps(rng):
    for _ in range(5):
        truth = rng.integers(0, 6, (40, 40))
        pred = rng.integers(0, 9, (40, 40))
        err, sk_prec, sk_rec = adapted_rand_error(truth, pred, ignore_labels=(0,))
        ours = rand_scores(pred, truth)
        assert ours["rand_error"] == pytest.approx(err, abs=1e-12)
        # scikit-image names the merge and split scores the other way round
        assert ours["rand_precision"] == pytest.approx(sk_rec, abs=1e-12)
        assert ours["rand_recall"] == pytest.approx(sk_prec, abs=1e-12)


def test_merging_two_cells_hand_computed():
    truth = np.array([[1, 1, 2, 2]])
    merged = rand_scores(np.array([[5, 5, 5, 5]]), truth)
    # 12 ordered pairs together in the prediction, 4 of them together in the truth; all 4 true pairs kept
    assert merged == pytest.approx({"rand_error": 0.5, "rand_precision": 1 / 3, "rand_recall": 1.0})
    split = rand_scores(np.array([[1, 2, 3, 3]]), truth)  # 2 of the 4 true pairs survive
    assert split == pytest.approx({"rand_error": 1 - 2 * 0.5 / 1.5, "rand_precision": 1.0, "rand_recall": 0.5})
    assert rand_scores(np.array([[7, 7, 0, 0]]), truth)["rand_error"] == 0.0  # ids need not match


def test_true_membrane_pixels_are_left_out_of_the_rand_index():
    truth = np.array([[1, 1, 0, 2, 2]])
    # the prediction joins the membrane pixel to cell 1: no effect, the truth's 0 is not counted
    assert rand_scores(np.array([[1, 1, 1, 2, 2]]), truth)["rand_error"] == 0.0


def test_cells_are_four_connected_so_a_diagonal_membrane_separates_them():
    cell = np.array([[1, 0], [0, 1]], bool)
    assert cell_segments(cell).max() == 2


def test_perfect_mask_scores_zero_errors_and_a_thick_membrane_hand_computed():
    truth = _grid()  # 9 cells of 3x3 pixels, 63 membrane pixels, 81 cell pixels
    perfect = membrane_scores(truth, truth)
    assert perfect["pixel_error"] == 0.0 and perfect["rand_error"] == 0.0
    thick = truth.copy()
    thick[1, :] = True  # one more membrane row: 12 - 3 (already membrane) = 9 cell pixels lost, no cell split
    s = membrane_scores(thick, truth)
    assert s["pixel_error"] == pytest.approx(1 - 2 * 72 / (72 + 81))
    # the 9 lost pixels (3 from each top cell) join the predicted-membrane segment 0 together:
    # ordered pairs together in the prediction 3 * 6 * 5 + 6 * 9 * 8 + 9 * 8 = 594,
    # together in both 3 * 6 * 5 + 6 * 9 * 8 + 3 * 3 * 2 = 540, together in the truth 9 * 9 * 8
    assert s["rand_precision"] == pytest.approx(540 / 594)
    assert s["rand_recall"] == pytest.approx(540 / (9 * 9 * 8))


def test_probability_map_is_scored_at_its_best_threshold():
    truth = _grid()
    prob = np.where(truth, 0.6, 0.45).astype(np.float32)  # cell = p < t is exact for 0.45 < t <= 0.6
    s = membrane_scores(prob, truth)
    assert s["pixel_error"] == 0.0 and s["rand_error"] == 0.0
    assert 0.45 < s["threshold_pixel"] <= 0.6 and 0.45 < s["threshold_rand"] <= 0.6


def test_evaluate_membranes_cli_on_isbi_style_files(tmp_path):
    truth = _grid()
    for d in ("truth", "pred", "prob"):
        (tmp_path / d).mkdir()
    # ISBI files: 0 = membrane, 255 = cell; predictions of densemed predict: 255 = class 1 = membrane
    Image.fromarray(np.where(truth, 0, 255).astype(np.uint8)).save(tmp_path / "truth/s1.png")
    thick = truth.copy()
    thick[1, :] = True
    Image.fromarray((thick * 255).astype(np.uint8)).save(tmp_path / "pred/s1.png")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--label-map", "0:1,255:0", "--membranes", "--json", str(out)]) == 0
    mem = json.loads(out.read_text())["membranes"]
    assert mem["mean"]["pixel_error"] == pytest.approx(1 - 2 * 72 / (72 + 81))
    # a STEM_prob file (predict --probabilities) is preferred and scored at its best threshold
    Image.fromarray((thick * 255).astype(np.uint8)).save(tmp_path / "prob/s1.png")
    tifffile.imwrite(tmp_path / "prob/s1_prob.tif", np.where(truth, 0.6, 0.45).astype(np.float32))
    assert main(["evaluate", "--pred", str(tmp_path / "prob"), "--truth", str(tmp_path / "truth"),
                 "--label-map", "0:1,255:0", "--membranes", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["membranes"]["mean"] == {"pixel_error": 0.0, "rand_error": 0.0}


def test_evaluate_membranes_refuses_volumes_in_one_line(tmp_path, capsys):
    import nibabel as nib

    for d in ("truth", "pred"):
        (tmp_path / d).mkdir()
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(tmp_path / d / "v.nii.gz"))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--membranes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "v.nii.gz" in err[0] and "2D" in err[0]


def test_a_folder_of_sections_is_cut_at_one_threshold_for_all_hand_computed(tmp_path):
    from densemed.metrics.membrane import evaluate_membrane_folders

    truth = _grid()  # 81 cell pixels in 9 cells, 63 membrane pixels
    for d in ("truth", "pred"):
        (tmp_path / d).mkdir()
    # section a is exact for 0.45 < t <= 0.6, section b for 0.65 < t <= 0.8: no single cut is exact for both
    for name, (mem, cell) in {"a": (0.6, 0.45), "b": (0.8, 0.65)}.items():
        Image.fromarray(np.where(truth, 0, 255).astype(np.uint8)).save(tmp_path / f"truth/{name}.png")
        tifffile.imwrite(tmp_path / f"pred/{name}_prob.tif", np.where(truth, mem, cell).astype(np.float32))
    r = evaluate_membrane_folders(tmp_path / "pred", tmp_path / "truth", {0: 1, 255: 0})
    # t in (0.65, 0.8]: a is all cell (F = 2 * 81 / (81 + 144)), b exact -> mean 0.14; t <= 0.6: b has no cell, error 1
    assert r["mean"]["pixel_error"] == pytest.approx((1 - 2 * 81 / 225) / 2)
    assert 0.65 < r["threshold_pixel"] <= 0.8
    # Rand: the section cut wrongly has its 81 cell pixels in one segment: precision 9*9*8 / (81*80) = 0.1,
    # recall 1, F = 0.2 / 1.1; both cuts tie at (1 - F) / 2
    assert r["mean"]["rand_error"] == pytest.approx((1 - 0.2 / 1.1) / 2)
    # per section alone both are perfect, which is what one threshold per section would have reported
    assert all(membrane_scores(tifffile.imread(tmp_path / f"pred/{n}_prob.tif"), truth)["pixel_error"] == 0.0
               for n in "ab")


def test_a_cell_id_map_is_scored_by_its_ids_not_by_connectivity():
    truth = _grid()
    cells = cell_segments(~truth)  # 9 true cells, membrane 0
    grown = ndimage.grey_dilation(cells, size=3)  # every membrane pixel taken by a neighbouring cell
    assert (grown > 0).all()
    s = membrane_scores(grown, truth)
    assert s["rand_error"] == pytest.approx(0.0)  # the true cell pixels keep their own cells
    assert s["pixel_error"] == pytest.approx(1 - 2 * 81 / (81 + 144))  # every pixel is called cell


def test_evaluate_membranes_on_cell_maps_reports_only_membrane_scores(tmp_path, capsys):
    truth = _grid()
    for d in ("truth", "cells"):
        (tmp_path / d).mkdir()
    Image.fromarray(np.where(truth, 0, 255).astype(np.uint8)).save(tmp_path / "truth/s1.png")
    grown = ndimage.grey_dilation(cell_segments(~truth), size=3).astype(np.uint16)  # 9 cell ids, no membrane
    Image.fromarray(grown).save(tmp_path / "cells/s1.png")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--pred", str(tmp_path / "cells"), "--truth", str(tmp_path / "truth"),
                 "--label-map", "0:1,255:0", "--membranes", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result) == ["membranes"]  # cell ids are not classes: no Dice table
    assert result["membranes"]["images"][0]["kind"] == "cells" and result["membranes"]["mean"]["rand_error"] == 0.0
    assert "dice" not in capsys.readouterr().out


def test_a_folder_mixing_a_mask_and_a_probability_map_reports_the_maps_threshold(tmp_path):
    from densemed.metrics.membrane import evaluate_membrane_folders

    truth = _grid()
    for d in ("truth", "pred"):
        (tmp_path / d).mkdir()
    for name in "ab":
        Image.fromarray(np.where(truth, 0, 255).astype(np.uint8)).save(tmp_path / f"truth/{name}.png")
    Image.fromarray((truth * 255).astype(np.uint8)).save(tmp_path / "pred/a.png")  # an exact mask, listed first
    tifffile.imwrite(tmp_path / "pred/b_prob.tif", np.where(truth, 0.6, 0.45).astype(np.float32))
    r = evaluate_membrane_folders(tmp_path / "pred", tmp_path / "truth", {0: 1, 255: 0})
    assert [im["kind"] for im in r["images"]] == ["mask", "probability"]
    assert r["mean"] == {"pixel_error": 0.0, "rand_error": 0.0}
    assert 0.45 < r["threshold_pixel"] <= 0.6 and 0.45 < r["threshold_rand"] <= 0.6
