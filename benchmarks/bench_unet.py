"""U-Net training step and sliding-window prediction, densemed vs MONAI (issue 2, issue 6).

* Training step (forward, backward, Adam step) of the 2D U-Net on 4x1x256x256 against MONAI
  ``BasicUNet`` at the same widths (32, 64, 128, 256, 512), both with instance norm and
  LeakyReLU(0.1); MONAI's last decoder level has 32 instead of our 32+32 input channels, so its
  network is ~0.1% smaller. FLOP share: convolution FLOPs of forward + backward (3x forward)
  per second, divided by the float32 peak of a 2048x2048 matrix product measured in the same run.
* Sliding-window prediction of 1x1x1024x1024 (2D) with the same network, window 256, overlap
  0.5, Gaussian blending, 4 windows per batch, against ``monai.inferers.sliding_window_inference``.
* Sliding-window prediction of 1x1x192x192x192 (3D U-Net, base width 8, depth 3) with window 64,
  overlap 0.25, Gaussian blending against MONAI; peak memory of each (RSS growth on the CPU).
"""

from __future__ import annotations

import torch

from benchmarks.flops import conv_flops, matmul_peak_flops
from benchmarks.harness import Row, bench_device, compare, in_fresh_process, measure_peak_memory
from densemed import nets
from densemed.infer.sliding_window import sliding_window

ACT = ("leakyrelu", {"negative_slope": 0.1})


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer):
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def _sliding_window_3d_case() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    dev = bench_device()
    net = nets.build("unet", dims=3, in_channels=1, out_channels=3, base_width=8, depth=3, norm="instance").eval()
    return net.to(dev), torch.randn(1, 1, 192, 192, 192).to(dev)


def sliding_window_3d_peak(which: str) -> float:
    """In a fresh process: peak extra MiB of one 3D sliding-window prediction (densemed or MONAI)."""
    from monai.inferers import sliding_window_inference

    net, vol = _sliding_window_3d_case()

    def call() -> None:
        with torch.inference_mode():
            if which == "densemed":
                sliding_window(net, vol, (64, 64, 64), overlap=0.25, batch_size=2)
            else:
                sliding_window_inference(vol, (64, 64, 64), 2, net, overlap=0.25, mode="gaussian")

    return measure_peak_memory(call)


def run(quick: bool = False) -> list[Row]:
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import BasicUNet

    rows: list[Row] = []
    torch.manual_seed(0)
    dev = bench_device()
    reps = 3 if quick else 5
    ours = nets.build("unet", dims=2, in_channels=1, out_channels=2, base_width=32, norm="instance", act=ACT).to(dev)
    ref = BasicUNet(2, 1, 2, features=(32, 64, 128, 256, 512, 32),
                    act=("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
                    norm=("instance", {"affine": True}), dropout=0.0, upsample="deconv").to(dev)
    x = torch.randn(4, 1, 256, 256).to(dev)
    y = torch.randint(0, 2, (4, 256, 256)).to(dev)
    r = compare(
        "U-Net 2D train step 4x1x256x256",
        _train_step(ours, x, y, torch.optim.Adam(ours.parameters())),
        _train_step(ref, x, y, torch.optim.Adam(ref.parameters())),
        "MONAI BasicUNet", repeats=reps,
    )
    flops = 3 * conv_flops(ours, x)
    peak = matmul_peak_flops(4096 if dev.type == "cuda" else 2048, device=dev)
    achieved = flops / min(r.ours)
    r.extra = {
        "params": f"{nets.count_parameters(ours):,} vs {sum(p.numel() for p in ref.parameters()):,}",
        "conv GFLOP/step": f"{flops / 1e9:.1f}",
        "achieved": (
            f"{achieved / 1e9:.1f} GFLOP/s = {100 * achieved / peak:.0f}% of matmul peak {peak / 1e9:.0f} GFLOP/s"
        ),
    }
    rows.append(r)

    ours.eval(), ref.eval()
    img = torch.randn(1, 1, 1024, 1024).to(dev)

    def sw_ours() -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window(ours, img, (256, 256), overlap=0.5, batch_size=4)

    def sw_ref() -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window_inference(img, (256, 256), 4, ref, overlap=0.5, mode="gaussian")

    rows.append(compare("sliding window 2D 1x1x1024x1024, window 256, overlap 0.5", sw_ours, sw_ref,
                        "MONAI sliding_window_inference", repeats=max(2, reps - 2)))

    ours3, vol = _sliding_window_3d_case()

    def sw3_ours() -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window(ours3, vol, (64, 64, 64), overlap=0.25, batch_size=2)

    def sw3_ref() -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window_inference(vol, (64, 64, 64), 2, ours3, overlap=0.25, mode="gaussian")

    r3 = compare("sliding window 3D 1x1x192^3, window 64, overlap 0.25 (same network)", sw3_ours, sw3_ref,
                 "MONAI sliding_window_inference", repeats=2)
    peaks = [in_fresh_process(sliding_window_3d_peak, which) for which in ("densemed", "monai")]
    r3.extra = {"peak MiB densemed / MONAI (fresh process)": f"{peaks[0]:.0f} / {peaks[1]:.0f}"}
    rows.append(r3)
    return rows
