"""The CLI paths of degrade, evaluate (image, instances), augment-preview and demo's folder safety."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from densemed.cli import main


@pytest.fixture
def volumes(tmp_path):
    nib = pytest.importorskip("nibabel")
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in (12, 10, 16)], indexing="ij")
    (tmp_path / "hr").mkdir()
    for k in range(2):
        vol = (np.sin(4 * x + k) * np.cos(3 * y) + z).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "hr" / f"v{k}.nii.gz")
    return tmp_path / "hr"


def test_degrade_writes_the_tricubic_thick_slice_volume(volumes, tmp_path, capsys):
    import nibabel as nib

    from densemed.data.sr import degrade

    assert main(["degrade", "--input", str(volumes), "--output", str(tmp_path / "lr"), "--factor", "2",
                 "--axis", "2"]) == 0
    assert "wrote 2 thick-slice volume(s)" in capsys.readouterr().out
    hr = nib.load(volumes / "v0.nii.gz").get_fdata(dtype=np.float32)
    lr = nib.load(tmp_path / "lr" / "v0.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_allclose(lr, degrade(hr, 2, 2), rtol=1e-5, atol=1e-6)


def test_evaluate_image_task_scores_psnr_beside_the_baseline(volumes, tmp_path, capsys):
    import json

    import nibabel as nib

    from densemed.metrics.image_quality import psnr

    assert main(["degrade", "--input", str(volumes), "--output", str(tmp_path / "lr"), "--factor", "2"]) == 0
    # the degraded volumes as the "prediction" and as the baseline: both columns equal psnr(lr, hr)
    assert main(["evaluate", "--task", "sr", "--pred", str(tmp_path / "lr"), "--truth", str(volumes),
                 "--baseline", str(tmp_path / "lr"), "--json", str(tmp_path / "sr.json")]) == 0
    result = json.loads((tmp_path / "sr.json").read_text())
    hr = nib.load(volumes / "v1.nii.gz").get_fdata(dtype=np.float32)
    lr = nib.load(tmp_path / "lr" / "v1.nii.gz").get_fdata(dtype=np.float32)
    v1 = next(im for im in result["images"] if im["name"] == "v1")
    assert v1["psnr"] == pytest.approx(psnr(lr, hr), rel=1e-6) and v1["baseline_psnr"] == v1["psnr"]
    assert "baseline_psnr" in capsys.readouterr().out


def test_evaluate_instances_scores_objects(tmp_path, capsys):
    from densemed.data.io import write_label

    truth = np.zeros((20, 30), np.int32)
    truth[2:8, 2:8] = 1
    truth[10:18, 10:20] = 2
    pred = truth.copy()
    pred[10:18, 15:20] = 3  # object 2 split in two halves
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    write_label(tmp_path / "t" / "a.png", truth)
    write_label(tmp_path / "p" / "a.png", pred)
    assert main(["evaluate", "--instances", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"),
                 "--json", str(tmp_path / "i.json")]) == 0
    import json

    res = json.loads((tmp_path / "i.json").read_text())
    # one-to-one matching: object 1 is found; truth 2 is matched by one of its halves (each covers
    # 50% of it), the other half is a false positive: precision 2/3, recall 2/2, F1 0.8
    assert res["pooled"]["precision"] == pytest.approx(2 / 3)
    assert res["pooled"]["recall"] == 1.0 and res["pooled"]["object_f1"] == pytest.approx(0.8)
    assert "object_f1" in capsys.readouterr().out


def test_augment_preview_writes_the_grid_of_what_training_applies(tmp_path, capsys):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.integers(0, 255, (32, 32)).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "d" / "images" / f"c{i}.png")
        Image.fromarray(((img > 128) * 255).astype(np.uint8)).save(tmp_path / "d" / "labels" / f"c{i}.png")
    out = tmp_path / "grid.png"
    assert main(["augment-preview", str(tmp_path / "d"), "--n", "2", "--out", str(out),
                 "--set", "data.patch_size=[32,32]"]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 3 and grid.shape[0] > 100 and grid.std() > 0


def test_demo_refuses_a_folder_it_did_not_create(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"someone else's run")
    assert main(["demo", "--out", str(tmp_path / "run"), "--budget", "1"]) == 2
    assert "did not create" in capsys.readouterr().err
    assert (tmp_path / "run" / "last.pt").read_bytes() == b"someone else's run"


def _three_class_folders(tmp_path):
    """Truth and prediction of 3 classes: Dice of class 1 is 2*2/(4+2) = 2/3, of class 2 2*4/(4+6) = 0.8."""
    truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]], np.uint8)
    pred = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 2, 2, 2], [0, 2, 2, 2]], np.uint8)
    for sub, arr in (("t", truth), ("p", pred)):
        (tmp_path / sub).mkdir()
        Image.fromarray(arr).save(tmp_path / sub / "a.png")
    return tmp_path / "p", tmp_path / "t"


def _class_rows(out):
    """``{class shown: dice}`` of the per-image rows of evaluate's table."""
    return {line.split()[1]: float(line.split()[2]) for line in out.splitlines() if line.startswith("a ")}


def test_evaluate_shows_the_class_names_of_a_recipe_and_of_a_run_folder(tmp_path, capsys):
    import json

    from densemed import config

    pred, truth = _three_class_folders(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {num_classes: 3, class_names: [background, anterior, posterior]}\n"
                      "model: {name: unet, base_width: 4, depth: 2}\n")
    run = tmp_path / "run"
    run.mkdir()
    # a run folder: its config.yaml is the resolved recipe (names as a mapping, as training writes it)
    config.save(config.load(recipe), run / "config.yaml")
    assert "anterior" in (run / "config.yaml").read_text()
    for source in (recipe, run):
        capsys.readouterr()
        out_json = tmp_path / f"{source.name}.json"
        assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--num-classes", "3",
                     "--config", str(source), "--json", str(out_json)]) == 0
        rows = _class_rows(capsys.readouterr().out)
        assert rows == {"anterior": pytest.approx(2 / 3, abs=1e-4), "posterior": pytest.approx(0.8, abs=1e-4)}
        res = json.loads(out_json.read_text())
        assert res["class_names"] == {"1": "anterior", "2": "posterior"}
        assert res["per_class"]["1"]["dice"] == pytest.approx(2 / 3)


def test_evaluate_class_names_flag_and_fallback_to_indices(tmp_path, capsys):
    pred, truth = _three_class_folders(tmp_path)
    args = ["evaluate", "--pred", str(pred), "--truth", str(truth), "--num-classes", "3"]
    assert main(args + ["--class-names", "bg,front,back"]) == 0
    assert set(_class_rows(capsys.readouterr().out)) == {"front", "back"}
    recipe = tmp_path / "plain.yaml"
    recipe.write_text("data: {num_classes: 3}\n")  # names no classes: indices
    assert main(args + ["--config", str(recipe)]) == 0
    assert set(_class_rows(capsys.readouterr().out)) == {"1", "2"}
    assert main(args + ["--config", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'nowhere'}: not found" in err
