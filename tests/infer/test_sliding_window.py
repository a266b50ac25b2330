import importlib
import itertools

import pytest
import torch

from densemed.errors import DensemedError
from densemed.infer.sliding_window import (
    flip_tta,
    label_dtype,
    sliding_window,
    sliding_window_labels,
    window_starts,
)

# the module itself (densemed.infer re-exports the function under the same name)
sw = importlib.import_module("densemed.infer.sliding_window")


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


def test_flip_tta_averages_a_position_dependent_predictor_over_all_flips():
    # predict(t) = t * w with a fixed, non-symmetric w: flipping t, predicting and flipping back gives
    # x * flip(w), so the TTA average is x * mean over flips of w; without flips it would be x * w.
    # w = [[0, 1, 5], [2, 7, 3]]; flipped rows [[2, 7, 3], [0, 1, 5]]; flipped columns [[5, 1, 0], [3, 7, 2]];
    # both [[3, 7, 2], [5, 1, 0]]; the sum is [[10, 16, 10], [10, 16, 10]], the mean a quarter of it.
    w = torch.tensor([[0.0, 1.0, 5.0], [2.0, 7.0, 3.0]])
    x = torch.tensor([[[[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]]])
    y = flip_tta(lambda t: t * w, x)
    torch.testing.assert_close(y, x * torch.tensor([[2.5, 4.0, 2.5], [2.5, 4.0, 2.5]]))
    # only the last axis: the mean of w and its column flip, [[2.5, 1, 2.5], [2.5, 7, 2.5]]
    y1 = flip_tta(lambda t: t * w, x, axes=(1,))
    torch.testing.assert_close(y1, x * torch.tensor([[2.5, 1.0, 2.5], [2.5, 7.0, 2.5]]))


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


# ---------------------------------------------------------------------------------------------------
# bounded-memory labels (slab by slab along the first axis) and mixed precision


def _random_logits(n_classes: int, seed: int):
    """A predictor giving fresh random logits for every window: overlapping windows disagree, so the
    labels depend on the blending. Both aggregations call it in the same order, so each gets the same
    logits when given a generator with the same seed."""
    g = torch.Generator().manual_seed(seed)

    def predict(t: torch.Tensor) -> torch.Tensor:
        return torch.randn((t.shape[0], n_classes, *t.shape[2:]), generator=g) * 3

    return predict


LABEL_CASES = [
    # (image shape, window, overlap, batch size, margin)
    ((1, 1, 45), (16,), 0.5, 3, 0),  # 1D
    ((1, 1, 37, 29), (16, 16), 0.5, 4, 0),  # 2D, no size divisible by the window
    ((2, 1, 50, 23), (16, 8), 0.25, 3, 0),  # two images; a batch mixes images and rows of windows
    ((1, 2, 17, 12), (8, 16), 0.5, 2, 1),  # second axis smaller than the window (zero-padded), margin
    ((1, 1, 23, 19, 17), (8, 8, 8), 0.5, 5, 0),  # 3D; starts 0, 4, ..., 12, 15: a 3-row last slab
    ((1, 1, 17, 11, 9), (8, 8, 8), 0.5, 4, 2),  # 3D; starts 0, 4, 8, 9: a one-row slab, margin
    ((2, 1, 30, 13, 21), (12, 6, 10), 2 / 3, 7, 0),  # 3D, anisotropic window, step 4 of 12
]


@pytest.mark.parametrize("shape, window, overlap, bs, margin", LABEL_CASES)
def test_slab_labels_are_identical_to_the_argmax_of_the_full_accumulator(shape, window, overlap, bs, margin):
    x = torch.randn(shape)
    kw = dict(overlap=overlap, batch_size=bs, margin=margin)
    full = sliding_window(_random_logits(5, 7), x, window, **kw)
    slab = sliding_window_labels(_random_logits(5, 7), x, window, max_bytes=0, **kw)
    unbounded = sliding_window_labels(_random_logits(5, 7), x, window, max_bytes=None, **kw)
    assert slab.shape == (shape[0], *shape[2:]) and slab.dtype == torch.uint8
    assert len(slab.unique()) == 5  # not a degenerate map
    assert torch.equal(slab.long(), full.argmax(1))
    assert torch.equal(unbounded, slab)


def test_slab_labels_of_a_convolutional_net_equal_the_full_accumulator_in_3d():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1))
    x = torch.randn(1, 1, 41, 26, 19)
    with torch.no_grad():
        full = sliding_window(net, x, (16, 12, 12), overlap=0.5, batch_size=3).argmax(1)
        slab = sliding_window_labels(net, x, (16, 12, 12), overlap=0.5, batch_size=3, max_bytes=0)
    assert len(slab.unique()) == 3
    assert torch.equal(slab.long(), full)


def test_one_channel_probabilities_are_thresholded_at_one_half_slab_by_slab():
    def sigmoid_of(seed: int):
        logits = _random_logits(1, seed)
        return lambda t: torch.sigmoid(logits(t))

    x = torch.randn(2, 1, 27, 22, 18)
    full = sliding_window(sigmoid_of(11), x, (10, 8, 8), overlap=0.5, batch_size=4)
    slab = sliding_window_labels(sigmoid_of(11), x, (10, 8, 8), overlap=0.5, batch_size=4, max_bytes=0)
    assert slab.dtype == torch.uint8 and set(slab.unique().tolist()) == {0, 1}
    assert torch.equal(slab.bool(), full[:, 0] > 0.5)
    lower = sliding_window_labels(sigmoid_of(11), x, (10, 8, 8), overlap=0.5, batch_size=4, max_bytes=0, threshold=0.3)
    assert torch.equal(lower.bool(), full[:, 0] > 0.3) and lower.sum() > slab.sum()


def test_slab_mode_is_chosen_exactly_when_the_full_accumulator_exceeds_max_bytes(monkeypatch):
    calls = []
    real = sw._labels_by_slab

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sw, "_labels_by_slab", spy)
    x = torch.randn(2, 1, 20, 13)  # padded to the window (16) on the second axis: 20 x 16
    full_bytes = 4 * 2 * 3 * 20 * 16  # float32 x images x classes x padded voxels
    for max_bytes, slab in ((full_bytes, False), (full_bytes - 1, True), (None, False), (0, True)):
        calls.clear()
        sliding_window_labels(_random_logits(3, 0), x, (16, 16), max_bytes=max_bytes)
        assert bool(calls) == slab, max_bytes


def test_slab_mode_never_allocates_more_than_one_band_of_accumulators():
    from torch.profiler import ProfilerActivity, profile

    net = torch.nn.Conv3d(1, 6, 1)
    x = torch.randn(1, 1, 64, 40, 37)  # padded rows: 64; the other axes are not padded
    window = (16, 16, 16)
    band = 4 * 6 * 16 * 40 * 37  # float32 x classes x window[0] rows x the other axes
    full = 4 * 6 * 64 * 40 * 37
    largest = {}
    for mode, max_bytes in (("slab", 0), ("full", None)):
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            sliding_window_labels(net, x, window, max_bytes=max_bytes)
        largest[mode] = max(e.cpu_memory_usage for e in prof.events())
    assert largest["slab"] == band
    assert largest["full"] == full  # the same measurement sees the full accumulator when it exists


def test_label_dtype_is_the_smallest_that_holds_every_class_index():
    assert label_dtype(1) == label_dtype(2) == label_dtype(256) == torch.uint8
    assert label_dtype(257) == label_dtype(2**15) == torch.int16
    assert label_dtype(2**15 + 1) == torch.int32
    y = sliding_window_labels(_random_logits(300, 1), torch.randn(1, 1, 20, 20), (16, 16), max_bytes=0)
    assert y.dtype == torch.int16 and y.max() > 255


def test_bf16_autocast_on_the_cpu_is_close_to_float32_and_blends_in_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1))
    seen = []

    def fwd(t: torch.Tensor) -> torch.Tensor:
        y = net(t)
        seen.append(y.dtype)
        return y

    x = torch.randn(1, 1, 30, 27, 20)
    ref = sliding_window(net, x, (16, 12, 10), overlap=0.5, batch_size=4)
    got = sliding_window(fwd, x, (16, 12, 10), overlap=0.5, batch_size=4, amp="bf16")
    assert set(seen) == {torch.bfloat16}  # the network really ran in bfloat16
    assert got.dtype == torch.float32  # the accumulator is float32
    assert not torch.equal(got, ref)
    # bfloat16 keeps 8 significant bits: each rounding (input, weights, hidden layer, output) is within
    # 2^-9 relative; on outputs of magnitude <= ~1 the blended error stays well below 0.02
    assert ref.abs().max() < 2
    torch.testing.assert_close(got, ref, atol=2e-2, rtol=0)
    # labels: wherever float32's two best classes differ by more than twice the tolerance, bf16 agrees
    labels = sliding_window_labels(fwd, x, (16, 12, 10), overlap=0.5, batch_size=4, amp=True, max_bytes=0)
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 4e-2
    assert clear.float().mean() > 0.5
    assert torch.equal(labels.long()[clear], ref.argmax(1)[clear])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(overlap=1.0), "overlap"),
        (dict(blend="linear"), "blend"),
        (dict(max_bytes=-1), "max_bytes"),
        (dict(amp="int8"), "amp"),
        (dict(margin=5), "margin"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments_raise_a_densemed_error_naming_the_argument(kwargs, message):
    with pytest.raises(DensemedError, match=message):
        sliding_window_labels(lambda t: t, torch.randn(1, 1, 20, 20), (8, 8), **kwargs)


@pytest.mark.gpu
def test_cuda_slab_labels_equal_the_full_accumulator_and_fp16_autocast_blends_in_float32(cuda_exact):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1))
    net.to(cuda_exact)
    x = torch.randn(2, 1, 41, 26, 19, device=cuda_exact)
    window = (16, 12, 12)
    seen = []

    def fwd(t: torch.Tensor) -> torch.Tensor:
        y = net(t)
        seen.append(y.dtype)
        return y

    with torch.no_grad():
        full = sliding_window(net, x, window, overlap=0.5, batch_size=3)
        slab = sliding_window_labels(net, x, window, overlap=0.5, batch_size=3, max_bytes=0)
        # windows on the GPU, the band and the labels in host memory
        host = sliding_window_labels(net, x, window, overlap=0.5, batch_size=3, max_bytes=0, out_device="cpu")
        half = sliding_window(fwd, x, window, overlap=0.5, batch_size=3, amp="fp16")
    assert slab.device.type == "cuda" and host.device.type == "cpu"
    assert torch.equal(slab.long(), full.argmax(1))
    # the host band sees the same float32 windows as the GPU: equal wherever the two best classes differ clearly
    top2 = full.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4
    assert torch.equal(host.cuda().long()[clear], full.argmax(1)[clear])
    assert set(seen) == {torch.float16} and half.dtype == torch.float32
    # float16 keeps 11 significant bits: each rounding is within 2^-12 relative
    torch.testing.assert_close(half, full, atol=5e-3, rtol=0)
