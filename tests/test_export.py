import json

import numpy as np
import pytest
import torch

from densemed import nets
from densemed.errors import DensemedError
from densemed.export import OnnxPredictor, export, sidecar_path
from densemed.infer.sliding_window import sliding_window

META = {"normalize": "zscore", "window": [16, 20], "in_channels": 1, "classes": 2,
        "class_names": {0: "background", 1: "cell"}}


def small_unet(seed=0, **kw):
    torch.manual_seed(seed)
    net = nets.build("unet", in_channels=1, out_channels=2, base_width=4, depth=2, **kw)
    # move the batch-norm statistics away from (0, 1) so eval mode differs from an identity
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def static_onnx(tmp_path_factory):
    """One static ONNX export of a small U-Net (window 16 x 20), verified on a real-sized image too."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    net = small_unet()
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    real = np.random.default_rng(0).normal(size=(1, 40, 50)).astype(np.float32)
    result = export(net, META, path, "onnx", example=(1, 1, 16, 20), real_image=real)
    return net, path, result


def test_onnx_export_matches_pytorch_and_writes_the_sidecar(static_onnx):
    net, path, result = static_onnx
    assert set(result["checks"]) == {"random", "real"}
    assert result["max_abs_diff"] <= 1e-4
    side = json.loads(sidecar_path(path).read_text())
    assert side["class_names"] == {"0": "background", "1": "cell"} and side["window"] == [16, 20]
    assert side["export"]["heads"] == {"segmentation": {"channels": 2, "kind": "logits"}}
    assert side["export"]["input_shape"] == ["batch", 16, 20]
    # an independent comparison: onnxruntime's output against the PyTorch network, batch 3
    x = torch.randn(3, 1, 16, 20)
    with torch.no_grad():
        ref = net(x)
    got = OnnxPredictor(path)(x)
    assert got.shape == (3, 2, 16, 20)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_static_onnx_refuses_another_window_naming_the_file(static_onnx):
    predictor = OnnxPredictor(static_onnx[1])
    assert predictor.window == (16, 20) and predictor.in_channels == 1 and predictor.out_channels == 2
    with pytest.raises(DensemedError, match=r"m\.onnx: exported for windows of \(16, 20\), got \(17, 20\)"):
        predictor(torch.zeros(1, 1, 17, 20))


def test_onnx_predictor_runs_inside_the_sliding_window_like_the_network(static_onnx):
    net, path, _ = static_onnx
    image = torch.randn(1, 1, 37, 45)
    with torch.no_grad():
        ref = sliding_window(net, image, (16, 20), overlap=0.5, batch_size=3)
    got = sliding_window(OnnxPredictor(path), image, (16, 20), overlap=0.5, batch_size=3)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_dynamic_export_accepts_other_sizes_including_ones_needing_padding(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    net = small_unet(1)
    path = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    result = export(net, META, path, fmt, dynamic=True, example=(1, 1, 16, 20))
    assert set(result["checks"]) == {"random", "random_other_size"}
    run = OnnxPredictor(path) if fmt == "onnx" else torch.jit.load(str(path))
    for size in [(16, 20), (13, 7), (33, 32)]:  # multiples of 4 and odd sizes (the net pads to 4)
        x = torch.randn(2, 1, *size)
        with torch.no_grad():
            ref, got = net(x), run(x)
        assert got.shape == (2, 2, *size)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_torchscript_export_matches_pytorch_and_embeds_the_sidecar(tmp_path):
    net = small_unet(2)
    result = export(net, META, tmp_path / "m.pt", "torchscript", example=torch.randn(1, 1, 16, 20),
                    real_image=torch.randn(1, 1, 12, 25))
    assert result["max_abs_diff"] <= 1e-4 and set(result["checks"]) == {"random", "real"}
    files = {"densemed.json": ""}
    module = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=files)
    assert json.loads(files["densemed.json"])["classes"] == 2
    x = torch.randn(1, 1, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(module(x), net(x), atol=1e-4, rtol=0)


def test_a_difference_above_tolerance_raises_and_removes_the_files(tmp_path):
    with pytest.raises(DensemedError, match=r"m\.pt: exported torchscript model differs from PyTorch by .* \(> 0\)"):
        export(_Noisy(), META, tmp_path / "m.pt", "torchscript", example=(1, 1, 8, 8), tolerance=0.0)
    assert not (tmp_path / "m.pt").exists() and not sidecar_path(tmp_path / "m.pt").exists()


class _Noisy(torch.nn.Module):
    """Different on every call: its export can never match the reference run."""

    def forward(self, x):
        return x + torch.rand_like(x)


def test_meta_that_is_not_json_and_unknown_format_are_user_errors(tmp_path):
    with pytest.raises(DensemedError, match="--format: must be one of"):
        export(small_unet(), META, tmp_path / "m.x", "tflite", example=(1, 1, 8, 8))
    with pytest.raises(DensemedError, match=r"meta\.bad: cannot be written to the JSON sidecar \(object\)"):
        export(small_unet(), {"bad": object()}, tmp_path / "m.pt", "torchscript", example=(1, 1, 8, 8))


def test_network_with_an_extra_input_unused_in_eval_mode_exports_and_runs(tmp_path):
    pytest.importorskip("onnxruntime")
    entry = nets.info("classnseg")
    torch.manual_seed(0)
    net = nets.build("classnseg", in_channels=1, **entry.small).eval()
    result = export(net, {}, tmp_path / "c.onnx", example=(1, 1, 32, 40))
    assert result["max_abs_diff"] <= 1e-4
    predictor = OnnxPredictor(tmp_path / "c.onnx")
    assert predictor.inputs == ("image", "class_label")  # declared, though ONNX keeps only "image"
    x = torch.randn(2, 1, 32, 40)
    extra = net.example_inputs(x)["class_label"]
    with torch.no_grad():
        torch.testing.assert_close(predictor(x, extra), net(x, extra), atol=1e-4, rtol=0)


def _perturbed(net):
    """Batch-norm statistics away from (0, 1), so eval mode differs from an identity."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("fc_padding", ["same", "valid"])
def test_deconvnet_exports_to_onnx_and_onnxruntime_equals_pytorch(tmp_path, fc_padding):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(3)
    net = _perturbed(nets.build("deconvnet", in_channels=1, out_channels=3, base_width=4, fc_width=16,
                                fc_padding=fc_padding))
    static = export(net, {}, tmp_path / "s.onnx", example=(1, 1, 64, 96))
    dynamic = export(net, {}, tmp_path / "d.onnx", dynamic=True, example=(1, 1, 64, 96))
    assert static["max_abs_diff"] <= 1e-4 and dynamic["max_abs_diff"] <= 1e-4
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        ref = net(x)
    assert ref.abs().max() > 1e-2  # the comparison is not between two near-zero maps
    torch.testing.assert_close(OnnxPredictor(tmp_path / "s.onnx")(x), ref, atol=1e-4, rtol=0)
    run = OnnxPredictor(tmp_path / "d.onnx")
    for size in [(64, 96), (37, 50)]:  # a size that needs padding to 32
        x = torch.randn(1, 1, *size)
        with torch.no_grad():
            ref = net(x)
        got = run(x)
        assert got.shape == (1, 3, *size)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_segnetmri_onnx_export_is_refused_naming_the_network_and_torchscript_works(tmp_path):
    net = nets.build("segnetmri", in_channels=1, **nets.info("segnetmri").small).eval()
    with pytest.raises(DensemedError) as info:
        export(net, {}, tmp_path / "m.onnx", example=(1, 1, 32, 32))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("segnetmri: cannot be exported to ONNX: ")
    assert "complex-valued FFTs" in msg and msg.endswith("--format torchscript exports it")
    assert list(tmp_path.iterdir()) == []  # refused before anything is written
    # inside the slice-by-slice wrapper the same
    wrapped = nets.build("slicewise", in_channels=1, axis=0,
                         net={"name": "segnetmri", **nets.info("segnetmri").small})
    with pytest.raises(DensemedError, match="^segnetmri: cannot be exported to ONNX"):
        export(wrapped, {}, tmp_path / "w.onnx", example=(1, 1, 2, 32, 32))
    result = export(net, {}, tmp_path / "m.pt", "torchscript", example=(1, 1, 32, 32))
    assert result["max_abs_diff"] <= 1e-4
