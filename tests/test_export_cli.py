"""`densemed export` then `densemed predict --checkpoint model.onnx`: the PyTorch predictions within 1e-4."""

import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from densemed.cli import main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny U-Net trained one epoch on 40 x 48 discs; its window (32 x 32) needs several windows per image."""
    tmp = tmp_path_factory.mktemp("export")
    data = tmp / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :48]
    for i in range(4):
        cy, cx = rng.integers(10, 30, 2)
        lab = ((yy - cy) ** 2 + (xx - cx) ** 2 < 60).astype(np.uint8)
        Image.fromarray((lab * 120 + rng.normal(60, 20, lab.shape)).clip(0, 255).astype(np.uint8)).save(
            data / "images" / f"c{i}.png")
        Image.fromarray(lab * 255).save(data / "labels" / f"c{i}.png")
    out = tmp / "run"
    argv = ["train", "--set", f"data.root={data}", "data.patch_size=[32,32]", "model.name=unet", "model.base_width=4",
            "model.depth=2", "train.epochs=1", "data.samples_per_epoch=4", f"train.out={out}", "train.progress=false",
            "train.threads=1", "data.class_names={0: background, 1: disc}"]
    assert main(argv) == 0
    return data, out


def test_onnx_export_is_verified_and_its_sidecar_holds_what_predict_needs(run, capsys):
    data, out = run
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(out / "best.pt"), "--format", "onnx"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {out / 'model.onnx'} and {out / 'model.onnx.json'} (onnx, input (batch, 1, 32, 32))"
    assert lines[1].startswith("verified with onnxruntime against PyTorch: max abs difference ")
    assert "random batch" in lines[1] and "real image" in lines[1] and str(data / "images") in lines[1]
    side = json.loads((out / "model.onnx.json").read_text())
    assert side["window"] == [32, 32] and side["in_channels"] == 1 and side["num_classes"] == 2
    assert side["normalize"] == {"method": "zscore", "percentiles": [0.5, 99.5], "window": None}
    assert side["class_names"] == {"0": "background", "1": "disc"}
    assert side["export"]["heads"] == {"segmentation": {"channels": 2, "kind": "logits"}}


def test_predict_with_the_onnx_model_equals_pytorch_within_1e_4(run, tmp_path, capsys):
    data, out = run
    if not (out / "model.onnx").is_file():
        assert main(["export", "--checkpoint", str(out / "best.pt")]) == 0
    for ckpt, name in ((out / "model.onnx", "onnx"), (out / "best.pt", "torch")):
        assert main(["predict", "--checkpoint", str(ckpt), "--input", str(data / "images"),
                     "--output", str(tmp_path / name), "--probabilities", "--device", "cpu"]) == 0
    assert "wrote 4 prediction(s)" in capsys.readouterr().out
    for i in range(4):
        p_onnx = tifffile.imread(tmp_path / "onnx" / f"c{i}_prob.tif")
        p_torch = tifffile.imread(tmp_path / "torch" / f"c{i}_prob.tif")
        assert p_onnx.shape == (40, 48)
        np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)
        decided = np.abs(p_torch - 0.5) > 1e-4  # labels may differ only where the probability is a tie
        a = np.asarray(Image.open(tmp_path / "onnx" / f"c{i}.png"))
        b = np.asarray(Image.open(tmp_path / "torch" / f"c{i}.png"))
        np.testing.assert_array_equal(a[decided], b[decided])


def test_a_static_export_refuses_another_window(run, tmp_path, capsys):
    data, out = run
    if not (out / "model.onnx").is_file():
        assert main(["export", "--checkpoint", str(out / "best.pt")]) == 0
    capsys.readouterr()
    argv = ["predict", "--checkpoint", str(out / "model.onnx"), "--input", str(data / "images" / "c0.png"),
            "--output", str(tmp_path), "--window", "16", "16"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("densemed: error:") and "exported for windows of (32, 32), got (16, 16)" in err


def test_dynamic_torchscript_export_matches_the_network_on_another_size(run, tmp_path, capsys):
    from densemed.build import load_model

    _, out = run
    target = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(out / "best.pt"), "--format", "torchscript", "--dynamic",
                 "--out", str(target)]) == 0
    assert "random batch of another size" in capsys.readouterr().out
    model, _, _ = load_model(out / "best.pt")
    scripted = torch.jit.load(str(target))
    x = torch.randn(1, 1, 27, 45)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), atol=1e-5, rtol=0)


def test_an_onnx_model_without_its_sidecar_is_one_error_line(run, tmp_path, capsys):
    data, out = run
    if not (out / "model.onnx").is_file():
        assert main(["export", "--checkpoint", str(out / "best.pt")]) == 0
    lone = tmp_path / "lone.onnx"
    lone.write_bytes((out / "model.onnx").read_bytes())
    capsys.readouterr()
    argv = ["predict", "--checkpoint", str(lone), "--input", str(data / "images"), "--output", str(tmp_path / "p")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"densemed: error: {tmp_path / 'lone.onnx.json'}: sidecar not found; `densemed export` writes it beside the "
        "model (normalisation, window, classes)")


def test_onnx_export_of_segnetmri_is_one_line_naming_it_and_exit_2(tmp_path, capsys):
    """A SegNetMRI checkpoint (untrained, saved by hand): refused before its data would be read."""
    from densemed import config
    from densemed.build import build_model

    loss = ("loss={name: multitask, tasks: {reconstruction: {loss: {name: mse}, target: target}, "
            "segmentation: {loss: {name: ce}, target: label}}}")
    cfg = config.load(None, ["task={name: recon_seg}", f"data.root={tmp_path / 'no_data'}", "data.patch_size=[32,32]",
                             "model={name: segnetmri, base_width: 2, depth: 1, num_blocks: 1}", loss])
    model = build_model(cfg, 1)
    ckpt = tmp_path / "best.pt"
    torch.save({"format": 2, "config": cfg.to_dict(), "net": "segnetmri", "in_channels": 1,
                "networks": {"model": model.state_dict()}, "epoch": 0}, ckpt)
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("densemed: error: segnetmri: cannot be exported to ONNX: its data-consistency layers "
                          "compute complex-valued FFTs")
    assert not (tmp_path / "model.onnx").exists()
