import itertools

import pytest
import torch

from densemed.infer.sliding_window import flip_tta, sliding_window, window_starts


def test_window_starts_cover_the_axis_and_end_at_the_border():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 2) == [0, 2, 4, 6, 7]
    assert window_starts(3, 4, 2) == [0]


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_identity_predictor_returns_the_image_for_odd_sizes(blend):
    x = torch.randn(2, 3, 37, 29)
    y = sliding_window(lambda t: t, x, (16, 16), overlap=0.5, blend=blend)
    torch.testing.assert_close(y, x)


def test_translation_equivariant_net_with_margin_equals_whole_image_prediction():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 3, padding=1))
    x = torch.randn(1, 1, 40, 36, 30)
    with torch.no_grad():
        whole = net(x)
        # receptive-field radius 2: a margin of 2 drops every window-edge voxel that saw zero padding
        tiled = sliding_window(net, x, (24, 24, 24), overlap=0.5, batch_size=3, margin=2)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_without_margin_window_edges_differ_but_interiors_agree():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 5, padding=2)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        whole, tiled = net(x), sliding_window(net, x, (32, 32), overlap=0.5)
    assert (tiled - whole).abs().max() > 1e-3  # blending of edge-affected windows is visible
    torch.testing.assert_close(tiled[..., :14, :14], whole[..., :14, :14], atol=1e-5, rtol=1e-5)


def test_equals_monai_sliding_window_with_constant_blending():
    monai = pytest.importorskip("monai.inferers")
    torch.manual_seed(1)
    net = torch.nn.Conv2d(1, 2, 5, padding=2)
    x = torch.randn(1, 1, 70, 53)
    with torch.no_grad():
        ours = sliding_window(net, x, (32, 32), overlap=0.25, blend="constant")
        ref = monai.sliding_window_inference(x, (32, 32), 4, net, overlap=0.25, mode="constant")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_flip_tta_of_a_flip_equivariant_predictor_is_unchanged():
    x = torch.randn(1, 1, 9, 11)
    y = flip_tta(lambda t: t * 2, x)
    torch.testing.assert_close(y, x * 2)


@pytest.mark.gpu
def test_cuda_sliding_window_equals_cpu_and_can_accumulate_on_the_cpu(cuda_exact):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 3, padding=1))
    x = torch.randn(1, 1, 40, 36, 30)
    with torch.no_grad():
        cpu = sliding_window(net, x, (24, 24, 24), overlap=0.5, batch_size=3)
        net.to(cuda_exact)
        on_gpu = sliding_window(net, x.to(cuda_exact), (24, 24, 24), overlap=0.5, batch_size=3)
        # a volume kept in host memory, windows sent to the GPU one batch at a time
        host = sliding_window(net, x, (24, 24, 24), overlap=0.5, batch_size=3, device=cuda_exact, out_device="cpu")
    assert on_gpu.device.type == "cuda" and host.device.type == "cpu"
    torch.testing.assert_close(on_gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(host, cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("margin", [0, 2])
def test_gaussian_blending_equals_a_brute_force_weighted_average(margin):
    """Sum of w_s(x) * pred_s(x) over windows s, divided by the sum of w_s(x), computed naively."""
    import numpy as np

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    x = torch.randn(1, 1, 30, 27, 20)
    window, step = (16, 12, 10), (8, 6, 5)  # overlap 0.5
    with torch.no_grad():
        got = sliding_window(net, x, window, overlap=0.5, batch_size=5, margin=margin)
    acc, norm = np.zeros((2, 30, 27, 20)), np.zeros((30, 27, 20))
    axes = [window_starts(s, w, st) for s, w, st in zip(x.shape[2:], window, step)]
    for st in itertools.product(*axes):
        prof = []
        for a, w, s in zip(st, window, x.shape[2:]):
            t = np.arange(w) - (w - 1) / 2
            p = np.maximum(np.exp(-0.5 * (t / (w / 8)) ** 2), 1e-3)
            if margin and a > 0:
                p[:margin] = 0
            if margin and a + w < s:
                p[w - margin :] = 0
            prof.append(p)
        wgt = prof[0][:, None, None] * prof[1][None, :, None] * prof[2][None, None, :]
        sl = tuple(slice(a, a + w) for a, w in zip(st, window))
        with torch.no_grad():
            pred = net(x[(slice(None), slice(None)) + sl])[0].double().numpy()
        acc[(slice(None),) + sl] += pred * wgt
        norm[sl] += wgt
    np.testing.assert_allclose(got[0].numpy(), acc / norm, rtol=1e-4, atol=1e-5)
