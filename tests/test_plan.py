"""densemed plan: fingerprints of real and generated datasets and the decisions they lead to."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from densemed import config
from densemed.cli import main
from densemed.data.io import write_label
from densemed.plan import MIN_STEPS, WIDE_STEPS, _touching, fingerprint, plan

DATA = config.data_home()


def fixed_time(seconds: float):
    """A step timer that returns ``seconds`` for every candidate (no measurement in tests)."""
    return lambda *args: seconds


def need(name: str) -> Path:
    root = DATA / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    return root


def write_nifti(path: Path, arr: np.ndarray, spacing: tuple[float, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(path))


# -- generated datasets -------------------------------------------------------------------------


def positional_3d(root: Path, n: int = 6) -> None:
    """Class 1 always at low axis-1 positions, class 2 at high ones; same axis-0/2 centre, jittered together."""
    rng = np.random.default_rng(0)
    for i in range(n):
        lab = np.zeros((16, 24, 16), np.uint8)
        cx, cz = 8 + rng.integers(-2, 3), 8 + rng.integers(-2, 3)
        y = 6 + rng.integers(-1, 2)
        lab[cx - 2:cx + 2, y - 2:y + 2, cz - 2:cz + 2] = 1
        lab[cx - 2:cx + 2, y + 10:y + 14, cz - 2:cz + 2] = 2
        img = rng.normal(100, 10, lab.shape).astype(np.float32) + 50 * lab
        write_nifti(root / "images" / f"c{i}.nii.gz", img, (1.0, 1.0, 1.0))
        write_nifti(root / "labels" / f"c{i}.nii.gz", lab, (1.0, 1.0, 1.0))


def touching_2d(root: Path) -> None:
    """Two cases: 3 objects of which 2 touch, and 4 objects of which 2 touch (diagonal contact)."""
    a = np.zeros((32, 32), np.uint16)
    a[2:8, 2:8] = 1
    a[2:8, 8:14] = 2  # shares an edge with 1
    a[20:26, 20:26] = 3
    b = np.zeros((32, 32), np.uint16)
    b[2:8, 2:8] = 1
    b[8:14, 8:14] = 2  # touches 1 only at a corner: still neighbours in the 8-neighbourhood
    b[20:26, 2:8] = 3
    b[20:26, 20:26] = 4
    for stem, lab in (("a", a), ("b", b)):
        write_label(root / "images" / f"{stem}.png", ((lab > 0) * 180 + 30).astype(np.uint8))
        write_label(root / "labels" / f"{stem}.png", lab)


def anisotropic_ct(root: Path) -> None:
    """128 x 128 x 20 volumes at 0.8 x 0.8 x 4 mm, air -1000 around soft tissue (CT-like integers)."""
    rng = np.random.default_rng(1)
    for i in range(3):
        img = np.full((128, 128, 20), -1000, np.int16)
        img[20:108, 20:108] = 40 + rng.integers(-20, 20, (88, 88, 20))
        lab = np.zeros(img.shape, np.uint8)
        lab[50:70, 50:70, 5:15] = 1
        write_nifti(root / "images" / f"v{i}.nii.gz", img, (0.8, 0.8, 4.0))
        write_nifti(root / "labels" / f"v{i}.nii.gz", lab, (0.8, 0.8, 4.0))


def tiny_2d(root: Path, n: int = 4) -> None:
    rng = np.random.default_rng(2)
    for i in range(n):
        lab = np.zeros((32, 32), np.uint8)
        r, c = rng.integers(4, 20, 2)
        lab[r:r + 8, c:c + 8] = 1
        write_label(root / "images" / f"t{i}.png", (lab * 150 + rng.integers(0, 60, lab.shape)).astype(np.uint8))
        write_label(root / "labels" / f"t{i}.png", lab)


# -- tests on generated data ---------------------------------------------------------------------


def test_touching_counts_edge_and_corner_contacts_by_hand() -> None:
    lab = np.zeros((10, 10), np.int32)
    lab[0:3, 0:3] = 1
    lab[3:5, 3:5] = 2  # corner contact with 1
    lab[7:9, 7:9] = 3  # alone
    lab[7:9, 0:2] = 4
    lab[7:9, 2:4] = 5  # edge contact with 4
    assert _touching(lab) == (4, 5)


def test_positional_classes_in_3d_forbid_flips_on_that_axis(tmp_path: Path) -> None:
    positional_3d(tmp_path)
    fp = fingerprint(tmp_path)
    assert fp.dims == 3 and fp.label_kind == "classes" and fp.class_values == [0, 1, 2]
    # expected: the class centroids differ by 12 voxels along axis 1 in every case, by 0 along axes 0 and 2
    assert fp.positional_axes == [1]
    recipe, why = plan(fp, 10, step_time=fixed_time(0.1))
    assert recipe["augment"]["flip"] == {"p": 0.5, "axes": [0, 2]}
    assert "rot90" not in recipe["augment"]  # a quarter turn would move axis 1 onto another axis
    assert recipe["infer"]["tta_axes"] == [0, 2]
    assert recipe["data"]["num_classes"] == 3 and recipe["loss"] == {"name": "dice_ce"}
    assert any("positional" in reason for _, reason in why)
    config.from_dict(recipe, "plan")


def test_touching_objects_give_border_weight_instance_recipe(tmp_path: Path) -> None:
    touching_2d(tmp_path)
    fp = fingerprint(tmp_path)
    assert fp.label_kind == "instances"
    assert fp.touching_fraction == pytest.approx(4 / 7)  # (2 + 2) touching of (3 + 4) objects
    # within 10 px (chessboard): in a, object 3 is 13 rows from 2; in b, 3 and 4 are 7 px from 2
    assert fp.near_fraction == pytest.approx(6 / 7)
    assert fp.object_sizes["median"] == 36.0  # every object is 6 x 6
    recipe, _ = plan(fp, 10, step_time=fixed_time(0.1))
    assert recipe["task"]["name"] == "instances"
    assert recipe["task"]["seams"] == 1  # contacts become background seams in the training target
    assert recipe["task"]["targets"]["weights"]["name"] == "border_weights"
    assert recipe["loss"] == {"name": "weighted_ce"}
    # its parameters are chosen on validation at the end of training (issue 17), not fixed in the plan
    assert recipe["task"]["postprocess"] == {"method": "watershed", "markers": "auto", "core": "auto", "h": "auto",
                                             "threshold": "auto", "min_size": "auto", "seams": "auto"}
    config.from_dict(recipe, "plan")


def _rows_of_squares(root: Path, step: int) -> None:
    """Cases ``a`` (3) and ``b`` (4 objects): 6 x 6 px squares in a row, ``step`` px from one to the next."""
    for stem, n in (("a", 3), ("b", 4)):
        lab = np.zeros((32, 2 + step * 3 + 8), np.uint16)
        for i in range(n):
            lab[2:8, 2 + step * i:8 + step * i] = i + 1
        write_label(root / "images" / f"{stem}.png", ((lab > 0) * 180 + 30).astype(np.uint8))
        write_label(root / "labels" / f"{stem}.png", lab)


def test_separate_objects_give_components_with_thresholds_chosen_on_validation(tmp_path: Path) -> None:
    _rows_of_squares(tmp_path, 18)  # 12 background px between squares: distance 13, not within 10 px
    fp = fingerprint(tmp_path)
    assert fp.label_kind == "instances" and fp.touching_fraction == 0.0 and fp.near_fraction == 0.0
    recipe, _ = plan(fp, 10, step_time=fixed_time(0.1))
    assert recipe["task"] == {"name": "instances",
                              "postprocess": {"method": "components", "threshold": "auto", "min_size": "auto"}}
    assert recipe["loss"] == {"name": "dice_ce"}
    config.from_dict(recipe, "plan")


def test_near_objects_are_counted_but_still_get_components(tmp_path: Path) -> None:
    _rows_of_squares(tmp_path, 15)  # 9 background px between squares: distance 10 = NEAR_GAP (16 would give 11)
    fp = fingerprint(tmp_path)
    assert fp.touching_fraction == 0.0 and fp.near_fraction == 1.0
    recipe, why = plan(fp, 10, step_time=fixed_time(0.1))
    # border weights + watershed for near objects measured no better on GlaS (3 seeds): not a decision
    assert recipe["task"]["postprocess"]["method"] == "components" and recipe["loss"] == {"name": "dice_ce"}
    assert any("100% have another within 10 voxels" in reason for _, reason in why)


def _disc_and_squares(root: Path, side: int) -> None:
    """Two 600 x 600 cases with a disc of radius 150 (diameter 300 px) and 2 / 3 ``side`` px squares."""
    yy, xx = np.mgrid[:600, :600]
    for stem, corners in (("a", [(450, 450), (450, 520)]), ("b", [(450, 450), (450, 520), (520, 450)])):
        lab = np.zeros((600, 600), np.uint16)
        lab[(yy - 200) ** 2 + (xx - 200) ** 2 <= 150 ** 2] = 1
        for i, (r, c) in enumerate(corners, start=2):
            lab[r:r + side, c:c + side] = i
        write_label(root / "images" / f"{stem}.png", ((lab > 0) * 180 + 30).astype(np.uint8))
        write_label(root / "labels" / f"{stem}.png", lab)


def test_large_objects_shrink_2d_instance_images_until_the_largest_spans_at_most_128_px(tmp_path: Path) -> None:
    # diameters 300 (p95) and 45 px (p5, 40 px squares): /2 -> 150 > 128 (small 22.6 >= 8), /4 -> 75 <= 128 (small 11.3)
    _disc_and_squares(tmp_path, 40)
    recipe, why = plan(fingerprint(tmp_path), 10, step_time=fixed_time(0.1))
    assert recipe["data"]["target_spacing"] == [4.0, 4.0]
    assert recipe["data"]["patch_size"] == [144, 144]  # 600 / 4 = 150, rounded down to a multiple of 2^4
    spacing_lines = [d for d, _ in why if d.startswith("target spacing")]
    assert spacing_lines == ["target spacing: 4x4 (images shrunk 4x)"]  # one decision, one line
    config.from_dict(recipe, "plan")


def test_shrinking_stops_where_the_smallest_objects_would_fall_below_8_px(tmp_path: Path) -> None:
    # 16 px squares (equivalent diameter 18.05 px): /2 keeps 9.0 px, /4 would leave 4.5 < 8
    _disc_and_squares(tmp_path, 16)
    recipe, _ = plan(fingerprint(tmp_path), 10, step_time=fixed_time(0.1))
    assert recipe["data"]["target_spacing"] == [2.0, 2.0]


def test_written_plan_has_no_yaml_aliases_and_loads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    monkeypatch.setenv("DENSEMED_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    positional_3d(data)
    out = tmp_path / "planned.yaml"
    monkeypatch.setattr("densemed.plan.measure_step", fixed_time(0.1))
    assert main(["plan", str(data), "--budget", "1", "--out", str(out)]) == 0
    text = out.read_text()
    # the flip axes and the test-time flip axes are the same list; a YAML alias (&id001) would puzzle a reader
    assert "&id" not in text and "*id" not in text
    loaded = yaml.safe_load(text)
    assert loaded["augment"]["flip"]["axes"] == loaded["infer"]["tta_axes"] == [0, 2]


def test_anisotropic_ct_volumes_keep_spacing_get_anisotropic_patch_and_ct_window(tmp_path: Path) -> None:
    anisotropic_ct(tmp_path)
    fp = fingerprint(tmp_path)
    assert fp.median_spacing == pytest.approx([0.8, 0.8, 4.0], rel=1e-5)
    assert fp.anisotropy == pytest.approx(5.0, rel=1e-5)
    assert fp.ct_like
    recipe, _ = plan(fp, 10, step_time=fixed_time(0.1))
    assert "target_spacing" not in recipe["data"]
    # 128x128x16 (multiples of 8) shrunk on the largest physical extent until <= 48^3 voxels:
    # ... (88, 88, 16) 123904 > 110592 -> (80, 88, 16) 112640 -> (80, 80, 16) 102400
    assert recipe["data"]["patch_size"] == [80, 80, 16]
    assert recipe["data"]["normalize"] == "window"
    lo, hi = recipe["data"]["window"]
    assert 19 <= lo <= 22 and 58 <= hi <= 60  # foreground tissue is 40 + [-20, 20)
    assert "rot90" not in recipe["augment"] and "affine" not in recipe["augment"]
    assert recipe["augment"]["flip"] == {"p": 0.5}
    config.from_dict(recipe, "plan")


def test_width_is_the_widest_that_gets_enough_steps(tmp_path: Path) -> None:
    tiny_2d(tmp_path)
    fp = fingerprint(tmp_path)
    # 10 min: 540 s of training. Step 0.1 s x width/16 -> width 16 gets 5400 steps, width 32 2700 < 4000
    recipe, _ = plan(fp, 10, step_time=lambda model, *a: 0.1 * model["base_width"] / 16)
    assert recipe["model"]["base_width"] == 16
    # 0.05 s x width/16 -> width 16 gets 10800 >= 2 x 4000, width 32 5400 >= 4000
    assert 2700 < WIDE_STEPS <= 5400
    recipe, _ = plan(fp, 10, step_time=lambda model, *a: 0.05 * model["base_width"] / 16)
    assert recipe["model"]["base_width"] == 32
    # 1 s per step -> 540 steps < MIN_STEPS for every width: the narrowest
    assert 540 < MIN_STEPS
    recipe, why = plan(fp, 10, step_time=fixed_time(1.0))
    assert recipe["model"]["base_width"] == 8
    assert any(d == "budget short" for d, _ in why)
    assert recipe["train"]["time_budget_s"] == 600.0


def test_train_with_plan_trains_the_planned_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("DENSEMED_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    tiny_2d(data)
    out = tmp_path / "run"
    code = main(["train", "--plan", str(data), "--budget", "1", "--set", "train.epochs=1", "data.samples_per_epoch=2",
                 "data.batch_size=2", f"train.out={out}", "train.progress=false", "train.threads=1"])
    assert code == 0
    assert (out / "last.pt").is_file()
    printed = capsys.readouterr().out
    assert "decision     2D" in printed and "network: unet" in printed
    assert (tmp_path / "cache" / "plan_step_times.json").is_file()  # the measured step times are cached


# -- tests on the real datasets ------------------------------------------------------------------


def test_dsb2018_nuclei_plans_an_instance_recipe_for_touching_nuclei() -> None:
    fp = fingerprint(need("dsb2018_nuclei"), max_cases=4)
    assert fp.label_kind == "instances" and fp.touching_fraction >= 0.1
    recipe, _ = plan(fp, 30, step_time=fixed_time(0.5))
    assert recipe["task"]["targets"]["weights"]["name"] == "border_weights" and recipe["task"]["seams"] == 1
    assert recipe["task"]["postprocess"]["method"] == "watershed"
    assert recipe["data"]["normalize"] == "zscore"
    assert "target_spacing" not in recipe["data"]  # nuclei (95th percentile ~46 px across) are not shrunk
    config.from_dict(recipe, "plan")


def test_glas_glands_close_but_not_touching_get_components() -> None:
    fp = fingerprint(need("glas_gland"), max_cases=4)
    assert fp.touching_fraction == 0.0 and fp.near_fraction >= 0.1  # glands apart, but often by a thin stroma
    recipe, _ = plan(fp, 30, step_time=fixed_time(0.5))
    assert recipe["task"]["postprocess"]["method"] == "components" and "seams" not in recipe["task"]
    # glands up to ~250 px across: shrunk 2x, the 261 x 387 median image gives the 256 x 256 patch
    assert recipe["data"]["target_spacing"] == [2.0, 2.0] and recipe["data"]["patch_size"] == [256, 256]
    config.from_dict(recipe, "plan")


def test_msd_hippocampus_plans_3d_without_flips_on_the_anterior_posterior_axis() -> None:
    fp = fingerprint(need("msd_hippocampus"), max_cases=6)
    assert fp.dims == 3 and fp.label_kind == "classes" and fp.class_values == [0, 1, 2]
    # the hand-written recipes note anterior vs posterior centroids 18 +- 1.6 voxels apart along axis 1
    assert 1 in fp.positional_axes
    recipe, _ = plan(fp, 30, step_time=fixed_time(0.5))
    assert 1 not in recipe["augment"].get("flip", {}).get("axes", [])
    assert "rot90" not in recipe["augment"]
    assert 1 not in recipe["infer"]["tta_axes"]
    config.from_dict(recipe, "plan")


def test_isbi2012_membranes_at_value_0_are_flagged_for_a_label_map(tmp_path: Path) -> None:
    import yaml

    fp = fingerprint(need("isbi2012_em"), max_cases=4)
    assert fp.label_kind == "classes" and fp.class_values == [0, 255]
    assert fp.class_fractions[0] < 0.5  # the membranes (0) are the minority
    recipe, why = plan(fp, 10, step_time=fixed_time(0.5))
    assert "label_map" not in recipe["data"]  # not guessed: flagged
    hint = [r for d, r in why if d == "classes: value 0 = background (check)"]
    assert len(hint) == 1 and '"data.label_map={0: 1, 255: 0}"' in hint[0]
    # the printed --set, given to the planned recipe, maps the membranes to class 1 as the hand-written recipes do
    (tmp_path / "planned.yaml").write_text(yaml.safe_dump(recipe))
    override = hint[0].split('--set "')[1].rstrip('"')
    assert config.load(tmp_path / "planned.yaml", [override]).data.label_map == {0: 1, 255: 0}
    fp = fingerprint(need("msd_hippocampus"), max_cases=2)  # background the majority: no such line
    assert not any(d.startswith("classes: value 0") for d, _ in plan(fp, 10, step_time=fixed_time(0.5))[1])


def test_brain_templates_without_labels_give_one_line_error(capsys: pytest.CaptureFixture) -> None:
    root = need("brain_mri_templates")
    assert main(["plan", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("densemed: error:") and "no label file" in err


def test_amp_is_planned_only_where_bf16_steps_are_measured_faster(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import densemed.precision as precision

    tiny_2d(tmp_path)
    fp = fingerprint(tmp_path)
    half_under_bf16 = lambda model, *a: 0.05 if a[-1] else 0.1  # noqa: E731  (amp is the last argument)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    recipe, why = plan(fp, 10, step_time=half_under_bf16)
    assert recipe["train"]["amp"] == "auto" and recipe["train"]["channels_last"] is True
    assert any(d == "train.amp: auto" and "2.0x faster" in r for d, r in why)
    recipe, _ = plan(fp, 10, step_time=lambda model, *a: 0.09 if a[-1] else 0.1)  # 0.9 of float32: not worth it
    assert "amp" not in recipe["train"] and "channels_last" not in recipe["train"]
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)  # no bf16 units: never timed, never planned
    recipe, why = plan(fp, 10, step_time=half_under_bf16)
    assert "amp" not in recipe["train"] and any(d == "train.amp: false" and "no bf16 units" in r for d, r in why)


def test_the_step_timed_for_the_amp_decision_is_not_timed_again(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import densemed.precision as precision

    tiny_2d(tmp_path)
    fp = fingerprint(tmp_path)
    calls: list[tuple[int, bool]] = []

    def timer(model, *a):
        calls.append((model["base_width"], a[-1]))
        return 0.05 if a[-1] else 0.1

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    plan(fp, 10, step_time=timer)
    assert calls.count((16, True)) == 1 and calls.count((16, False)) == 1
