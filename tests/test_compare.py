"""``densemed compare``: same split and budget, the task's metrics, a self-contained report, resume and reuse.

Training runs in-process here (``compare._stream`` replaced by a call of the CLI with the same
arguments) to keep the file fast; the test marked ``slow`` runs the real ``python -m densemed``
subprocesses and screenshots the report in headless Chromium where it is installed.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from densemed import compare
from densemed.cli import main as cli_main
from densemed.config import TrainConfig
from densemed.data.synthetic import make_dataset
from densemed.errors import DensemedError

SEG = """
data: {{root: {root}, patch_size: [32, 32], batch_size: 4, samples_per_epoch: 24, val_fraction: {val}}}
model: {model}
loss: {{name: dice_ce}}
train: {{epochs: 2, threads: 1, lr: 0.02}}
"""
DCAN = """
task:
  name: instances
  targets: {{contour: {{name: contour, thickness: 1}}}}
  postprocess: {{method: dcan, min_size: 4, dilate: 1}}
data: {{root: {root}, label_dir: instances, patch_size: [32, 32], batch_size: 4, samples_per_epoch: 16,
       val_fraction: 0.34}}
model: {{name: dcan, base_width: 4, depth: 3, fuse_levels: 2}}
loss:
  name: multitask
  tasks:
    object: {{loss: {{name: ce}}, weight: 1.0, target: label}}
    contour: {{loss: {{name: ce}}, weight: 1.0, target: contour}}
train: {{epochs: 2, threads: 1, lr: 0.02}}
"""


def write_cells(root: Path, n: int = 6, size: int = 40) -> Path:
    """Generated touching cells: grey PNG images, 0/255 masks in labels/, instance ids in instances/."""
    for sub in ("images", "labels", "instances"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (img, inst) in enumerate(make_dataset(n=n, size=size, seed=0)):
        Image.fromarray((np.clip(img[0], 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"c{i}.png")
        Image.fromarray(((inst > 0) * 255).astype(np.uint8)).save(root / "labels" / f"c{i}.png")
        Image.fromarray(inst.astype(np.uint16)).save(root / "instances" / f"c{i}.png")
    return root


def recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class InProcess:
    """Stands in for ``compare._stream``: the same ``densemed train`` arguments, run by the CLI in this process."""

    def __init__(self, kill_first: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.kill_first = kill_first

    def __call__(self, cmd: list[str], log_file: Path) -> int:
        assert cmd[:4] == [sys.executable, "-m", "densemed", "train"]
        self.calls.append(cmd)
        argv = cmd[3:]
        if self.kill_first and len(self.calls) == 1:  # one epoch of two, then "Ctrl-C"
            cli_main(argv + ["train.epochs=1"])
            raise KeyboardInterrupt
        return cli_main(argv)


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """unet (base width 4) and fcn8s (small) on 6 generated images, 2 epochs each.

    The first compare is killed after unet's first epoch; the second resumes unet and trains
    fcn8s; the third finds both finished.
    """
    tmp = tmp_path_factory.mktemp("compare")
    root = write_cells(tmp / "data")
    unet = recipe(tmp / "unet_tiny.yaml", SEG.format(root=root, val=0.34,
                                                    model="{name: unet, base_width: 4, depth: 2}"))
    fcn = recipe(tmp / "fcn8s_tiny.yaml", SEG.format(root=root, val=0.34,
                                                    model="{name: fcn8s, base_width: 4, fc_width: 16}"))
    out = tmp / "out"
    logs: list[list[str]] = [[], [], []]
    streams = [InProcess(kill_first=True), InProcess(), InProcess()]
    mtimes = []
    with pytest.MonkeyPatch.context() as mp:
        for k, stream in enumerate(streams):
            mp.setattr(compare, "_stream", stream)
            if k == 2:
                mtimes.append({n: (out / n / "last.pt").stat().st_mtime_ns for n in ("unet_tiny", "fcn8s_tiny")})
            try:
                rc = compare.run_compare([unet, fcn], out, epochs=2, log=logs[k].append)
            except KeyboardInterrupt:
                rc = None
            if k == 0:
                assert rc is None
            else:
                assert rc == 0
        mtimes.append({n: (out / n / "last.pt").stat().st_mtime_ns for n in ("unet_tiny", "fcn8s_tiny")})
    return SimpleNamespace(root=root, out=out, logs=logs, streams=streams, mtimes=mtimes, recipes=(unet, fcn))


def md_table(text: str) -> dict[str, dict[str, str]]:
    """The first Markdown table of ``text`` as {recipe: {column: cell}}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) != len(head):
            break
        rows[cells[0]] = dict(zip(head, cells))
    return rows


def test_report_md_table_has_both_recipes_with_dice_equal_to_a_numpy_reference(compared):
    rows = md_table((compared.out / "report.md").read_text())
    assert set(rows) == {"unet_tiny", "fcn8s_tiny"}
    val = json.loads((compared.out / "results.json").read_text())["settings"]["validation"]
    assert val == ["c2", "c3"]  # default_rng(0) split of 6 stems with val_fraction 0.34: the same for both
    for name, row in rows.items():
        assert row["network"] == name.split("_")[0]
        assert row["epochs"] == "2"
        for col in ("Dice", "IoU", "precision", "recall", "HD95", "ASD"):
            assert col in row
        dice = []
        for stem in val:  # Dice of the written prediction against the label file, by hand
            pred = np.asarray(Image.open(compared.out / name / "compare" / "pred" / f"{stem}.png")) > 0
            truth = np.asarray(Image.open(compared.root / "labels" / f"{stem}.png")) > 0
            dice.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
        assert float(row["Dice"]) == pytest.approx(np.mean(dice), abs=5e-5)
    # the U-Net learns the bright cells in 12 steps (Dice 0.85 when this test was written)
    assert float(rows["unet_tiny"]["Dice"]) > 0.5


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        for key in ("src", "href"):
            if tag != "img" and a.get(key):
                self.external.append(f"{tag} {key}={a[key]}")
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)


def test_report_html_is_self_contained_and_every_img_is_a_png_data_uri(compared):
    parser = _Collect()
    text = (compared.out / "report.html").read_text()
    parser.feed(text)
    assert parser.external == []
    # curves, grid, one worst case per network
    assert len(parser.imgs) == 4
    sizes = []
    for src in parser.imgs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG"
            sizes.append(im.size)
    assert sizes[0] == (1000, 400)  # the curves figure: 10 x 4 inches at 100 dpi
    # the grid: 4 columns of 256 px (40 px images enlarged 6x = 240) with 3 gaps of 4 px; 2 rows
    assert sizes[1][0] == 4 * 256 + 3 * 4
    assert "unet_tiny" in text and "fcn8s_tiny" in text and "Dice" in text


def test_killed_compare_resumes_the_unfinished_run_and_trains_the_rest(compared):
    first, second, _ = compared.streams
    assert len(first.calls) == 1 and "--resume" not in first.calls[0]
    assert len(second.calls) == 2
    resumed, fresh = second.calls
    assert resumed[resumed.index("--resume") + 1] == str((compared.out / "unet_tiny").resolve())
    assert "--resume" not in fresh and str(compared.recipes[1].resolve()) in fresh
    history = [json.loads(x) for x in (compared.out / "unet_tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]


def test_second_compare_reuses_both_finished_runs_without_training(compared):
    assert compared.streams[2].calls == []
    assert compared.mtimes[0] == compared.mtimes[1]
    log = "\n".join(compared.logs[2])
    assert "unet_tiny: reusing the finished run" in log and "fcn8s_tiny: reusing the finished run" in log
    assert "scores of best.pt from" in log  # predictions not redone either


def test_compare_with_other_settings_refuses_to_mix_them_into_a_finished_run(compared):
    with pytest.raises(DensemedError, match="unet_tiny: trained by an earlier compare with other settings"):
        compare.run_compare(list(compared.recipes), compared.out, epochs=3, log=lambda s: None)


def test_instance_recipe_is_predicted_as_instances_and_gets_object_level_metrics(tmp_path, monkeypatch):
    from densemed.metrics.instance import evaluate_instance_folders

    root = write_cells(tmp_path / "data")
    dcan = recipe(tmp_path / "dcan_tiny.yaml", DCAN.format(root=root))
    monkeypatch.setattr(compare, "_stream", InProcess())
    assert compare.run_compare([dcan], tmp_path / "out", epochs=2, log=lambda s: None) == 0
    row = md_table((tmp_path / "out" / "report.md").read_text())["dcan_tiny"]
    for col in ("object F1", "object Dice", "object Hausdorff", "AJI", "PQ"):
        assert col in row
    run = tmp_path / "out" / "dcan_tiny" / "compare"
    # scored against the instance ids of the recipe's label_dir, not the 0/255 masks
    assert sorted(p.name for p in (run / "truth").iterdir()) == ["c2.png", "c3.png"]
    assert (run / "truth" / "c2.png").resolve() == (root / "instances" / "c2.png").resolve()
    ref = evaluate_instance_folders(run / "pred", run / "truth")
    for col, key in (("object F1", "object_f1"), ("AJI", "aji"), ("PQ", "pq")):
        assert float(row[col]) == pytest.approx(ref["mean"][key], abs=5e-5)


def test_plan_gives_a_recipe_with_another_split_the_first_recipes_split(tmp_path):
    root = write_cells(tmp_path / "data")
    a = recipe(tmp_path / "a.yaml", SEG.format(root=root, val=0.34, model="{name: unet, base_width: 4}"))
    b = recipe(tmp_path / "b.yaml", SEG.format(root=root, val=0.5, model="{name: unet, base_width: 4}"))
    plans = compare.plan_runs([a, b], tmp_path / "out", epochs=1, log=lambda s: None)
    assert plans[0].val == ["c2", "c3"] and not plans[0].pinned
    assert plans[1].pinned and (plans[1].train, plans[1].val) == (plans[0].train, plans[0].val)
    assert 'data.val_files=["c2", "c3"]' in plans[1].sets
    assert plans[1].sets[-2:] == [f"train.out={(tmp_path / 'out' / 'b').resolve()}", "train.progress=false"]


def test_plan_refuses_two_data_folders_unless_data_sets_one_for_all(tmp_path):
    r1, r2 = write_cells(tmp_path / "d1"), write_cells(tmp_path / "d2")
    a = recipe(tmp_path / "a.yaml", SEG.format(root=r1, val=0.34, model="{name: unet}"))
    b = recipe(tmp_path / "b.yaml", SEG.format(root=r2, val=0.34, model="{name: unet}"))
    with pytest.raises(DensemedError, match="pass --data DIR"):
        compare.plan_runs([a, b], tmp_path / "out", epochs=1)
    plans = compare.plan_runs([a, b], tmp_path / "out", data=str(r2), epochs=1)
    assert {compare._root(p) for p in plans} == {r2.resolve()}


def test_plan_without_budget_or_epochs_needs_recipes_that_train_alike(tmp_path):
    root = write_cells(tmp_path / "data")
    a = recipe(tmp_path / "a.yaml", SEG.format(root=root, val=0.34, model="{name: unet}"))
    five = SEG.format(root=root, val=0.34, model="{name: unet}").replace("epochs: 2", "epochs: 5")
    b = recipe(tmp_path / "b.yaml", five)
    with pytest.raises(DensemedError, match="--budget SECONDS or --epochs N"):
        compare.plan_runs([a, b], tmp_path / "out")
    plans = compare.plan_runs([a, b], tmp_path / "out", budget=30)
    assert [(p.cfg.train.time_budget_s, p.cfg.train.epochs) for p in plans] == [(30.0, compare.BUDGET_EPOCHS)] * 2


def test_finished_means_budget_spent_or_last_epoch_complete():
    budget = TrainConfig(epochs=compare.BUDGET_EPOCHS, time_budget_s=60.0)
    assert compare.finished({"elapsed": 60.0, "epoch": 3, "epoch_step": 2}, budget)
    assert not compare.finished({"elapsed": 59.9, "epoch": 3, "epoch_step": 0}, budget)
    epochs = TrainConfig(epochs=3)
    assert compare.finished({"epoch": 2, "epoch_step": 0}, epochs)
    assert not compare.finished({"epoch": 2, "epoch_step": 5}, epochs)  # stopped inside the last epoch
    assert not compare.finished({"epoch": 1, "epoch_step": 0}, epochs)


def test_cli_compare_of_a_missing_recipe_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli_main(["compare", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"densemed: error: {tmp_path / 'nope.yaml'}: recipe not found"


@pytest.mark.slow
def test_compare_subprocesses_write_a_report_that_chromium_renders(tmp_path):
    root = write_cells(tmp_path / "data")
    unet = recipe(tmp_path / "unet_tiny.yaml", SEG.format(root=root, val=0.34, model="{name: unet, base_width: 4}"))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "densemed", "compare", str(unet), "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert md_table((out / "report.md").read_text())["unet_tiny"]["epochs"] == "1"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless chromium not installed")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,1800", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    page = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert page.shape == (1800, 1400)
    assert page.std() > 20  # text, table and figures drawn, not a blank page


def test_volume_grid_shows_the_slice_with_most_true_foreground_for_every_network(tmp_path):
    from densemed.data.io import write_float, write_label
    from densemed.report import RunSummary

    rng = np.random.default_rng(0)
    image = rng.random((5, 6, 7)).astype(np.float32)
    truth = np.zeros((5, 6, 7), np.uint8)
    truth[1, 2, 2] = 1
    truth[3, 1:4, 1:5] = 2  # 12 voxels on slice 3, 1 on slice 1
    pred = np.zeros_like(truth)
    pred[0, :, :] = 1  # most predicted foreground elsewhere: the slice follows the truth, not a network
    pred[3, 0, 0] = 2
    write_float(tmp_path / "img.nii.gz", image)
    write_label(tmp_path / "truth.nii.gz", truth)
    write_label(tmp_path / "pred.nii.gz", pred)
    run = RunSummary(recipe="net", run=tmp_path, preds={"case": tmp_path / "pred.nii.gz"})
    shown = compare._load_shown("case", tmp_path / "img.nii.gz", tmp_path / "truth.nii.gz", [run], "label", None, 3)
    np.testing.assert_array_equal(shown.truth, truth[3])
    np.testing.assert_array_equal(shown.preds["net"], pred[3])
    np.testing.assert_allclose(shown.image, image[3], rtol=1e-6)


def test_image_task_restores_a_degraded_copy_and_is_scored_against_the_image(tmp_path):
    from densemed import config, tasks
    from densemed.data.io import read_image, write_float
    from densemed.data.sr import degrade

    hr = np.random.default_rng(1).random((6, 6, 8)).astype(np.float32)
    write_float(tmp_path / "vol.nii.gz", hr)
    cfg = config.from_dict({"task": {"name": "image", "factor": 2, "axis": 2},
                            "data": {"dims": 3, "patch_size": [4, 4, 4]}, "model": {"name": "deepresolve"},
                            "loss": {"name": "mse"}})
    task = tasks.build(cfg)
    assert compare.predict_options(task) == {}
    inputs, truth = compare.evaluation_inputs(task, [("vol", tmp_path / "vol.nii.gz", None)], tmp_path / "work")
    assert inputs == [tmp_path / "work" / "inputs" / "vol.nii.gz"]
    assert (truth / "vol.nii.gz").resolve() == (tmp_path / "vol.nii.gz").resolve()
    lr = read_image(inputs[0])[0][0]
    np.testing.assert_allclose(lr, degrade(hr, 2, 2), atol=1e-6)
    assert np.abs(lr - hr).max() > 0.05  # the network gets the thick-slice volume, not the truth


def test_predict_options_ask_for_instance_maps_only_for_the_instance_task(tmp_path):
    from densemed import config, tasks

    seg = tasks.build(config.from_dict({"model": {"name": "unet"}}))
    inst = tasks.build(config.from_dict({"task": {"name": "instances"}, "model": {"name": "unet"}}))
    assert compare.predict_options(seg) == {}
    assert compare.predict_options(inst) == {"instances": True}


def test_per_class_tables_of_the_reports_show_the_recipes_class_names(tmp_path):
    """A tiny 3-class run (an untrained U-Net saved as best.pt): the report names classes as its recipe does."""
    import torch

    from densemed import report
    from densemed.build import build_model

    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(3):
        lab = np.zeros((16, 16), np.uint8)
        lab[2:8, 2:10], lab[9:14, 4:14] = 1, 2
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "data" / "images" / f"c{i}.png")
        Image.fromarray(lab).save(tmp_path / "data" / "labels" / f"c{i}.png")
    path = recipe(tmp_path / "tri.yaml", f"""
data: {{root: {tmp_path / 'data'}, patch_size: [16, 16], num_classes: 3, val_fraction: 0.34,
       class_names: [background, anterior, posterior]}}
model: {{name: unet, base_width: 4, depth: 2}}
loss: {{name: dice_ce}}
train: {{epochs: 1, threads: 1}}
""")
    (plan,) = compare.plan_runs([path], tmp_path / "out", epochs=1, log=lambda s: None)
    torch.manual_seed(0)
    model = build_model(plan.cfg, 1)
    plan.run.mkdir(parents=True)
    torch.save({"format": 2, "config": plan.cfg.to_dict(), "net": "unet", "in_channels": 1,
                "networks": {"model": model.state_dict()}, "epoch": 0}, plan.run / "best.pt")
    summary = compare.evaluate_run(plan, torch.device("cpu"), log=lambda s: None)
    assert summary.error is None and len(plan.val) == 1
    assert summary.class_names == {"1": "anterior", "2": "posterior"}
    for stem in plan.val:  # the per-class Dice against a numpy reference on the written predictions
        pred = np.asarray(Image.open(summary.preds[stem]))
        truth = np.asarray(Image.open(tmp_path / "data" / "labels" / f"{stem}.png"))
        for c in (1, 2):
            both = (pred == c).sum() + (truth == c).sum()
            ref = 2 * ((pred == c) & (truth == c)).sum() / both if both else 1.0
            assert summary.per_class[str(c)]["dice"] == pytest.approx(ref, abs=1e-6)
    report.write_markdown(tmp_path / "report.md", "t", [], [summary], [], [])
    report.write_html(tmp_path / "report.html", "t", [], [summary], [], [])
    md = (tmp_path / "report.md").read_text()
    per_class = [ln for ln in md.splitlines() if ln.startswith("| recipe | Dice anterior")]
    assert per_class == ["| recipe | Dice anterior | Dice posterior | HD95 anterior | HD95 posterior |"]
    assert "<th>Dice anterior</th><th>Dice posterior</th>" in (tmp_path / "report.html").read_text().replace("\n", "")
    # a run whose recipe names no classes keeps the indices
    plain = report.RunSummary("plain", tmp_path, per_class=summary.per_class)
    assert report.per_class_table([plain])[0] == ["recipe", "Dice 1", "Dice 2", "HD95 1", "HD95 2"]
    assert compare.class_names_for({"1": {}, "2": {}}, {0: "bg", 2: "posterior"}) == {"2": "posterior"}
