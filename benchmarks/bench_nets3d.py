"""One training step (forward, cross entropy, backward, Adam step) of the 3D U-Net and of V-Net
on a 2x1x64x64x64 batch (quick: 2x1x32x32x32), against MONAI's `UNet` and `VNet`.

Width matching:

* 3D U-Net: densemed `build("unet", dims=3, depth=3, base_width=16, norm="batch", act="relu")`:
  16, 32, 64, 128 channels at 1, 1/2, 1/4, 1/8 resolution, two 3x3x3 conv-BN-ReLU per level,
  max pooling, 2x2x2 transposed convs (1.40 M parameters). MONAI's `UNet` down-samples with
  the first (strided) conv of each residual unit and up-samples with 3x3x3 transposed convs
  followed by a residual unit, so two MONAI settings are timed:
  - "matched": `UNet(channels=(16, 32, 64, 128, 128), strides=(1, 2, 2, 2), num_res_units=2,
    norm="batch", act="relu")` has the same width at every resolution (16 at full size, ...,
    128 at 1/8) with two 3x3x3 convs per encoder level, plus one extra 128-channel bottom unit
    (2.78 M parameters). This is the like-for-like comparison.
  - "literal": `UNet(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)`, the same
    channel list as ours, but its first unit is already strided, so it has no full-resolution
    level and does about 1/8 of our finest level's work; shown for completeness.
* V-Net: densemed `build("vnet", base_width=16)` (paper widths 16..256, 5x5x5 convs, PReLU,
  batch norm) vs MONAI `VNet(act="prelu", no dropout)` (same widths, 5x5x5 convs, batch norm).
  MONAI's stages have 1, 1, 2, 3 | 2 | 2, 2, 1, 1 convolutions; densemed follows the paper's
  1, 2, 3, 3 | 3 | 3, 3, 2, 1, i.e. 21 instead of 15 5x5x5 convolutions (65.2 M vs 45.6 M
  parameters), so equal speed per convolution shows as a ratio of about 0.7. Row "vnet_monai_layout"
  builds densemed's V-Net with MONAI's counts (`stage_convs=MONAI_STAGE_CONVS`, 45.59 M vs 45.60 M
  parameters): the like-for-like comparison.

Peak memory: one training step (the first, so Adam's state is allocated) in a fresh Python
process per network, measured by `harness.measure_peak_memory` (extra resident memory on the
CPU by RSS sampling; the CUDA allocator's peak on a GPU). A fresh process is needed on the CPU:
memory freed by the previous network stays mapped and would hide the next one's peak.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import Row, bench_device, compare, in_fresh_process, measure_peak_memory


def _step_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.train()

    def step() -> None:
        out = net(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _params(net: nn.Module) -> str:
    return f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M"


def _models(case: str) -> tuple[nn.Module, nn.Module, str]:
    from monai.networks.nets import UNet as MonaiUNet
    from monai.networks.nets import VNet as MonaiVNet

    import densemed.nets as nets

    if case.startswith("unet3d"):
        ours = nets.build(
            "unet", dims=3, in_channels=1, out_channels=2, depth=3, base_width=16, norm="batch", act="relu"
        )
        if case == "unet3d":
            ref = MonaiUNet(3, 1, 2, channels=(16, 32, 64, 128, 128), strides=(1, 2, 2, 2), num_res_units=2,
                            norm="batch", act="relu")
            return ours, ref, "monai UNet matched (16,32,64,128,128; s 1,2,2,2)"
        ref = MonaiUNet(3, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2,
                        norm="batch", act="relu")
        return ours, ref, "monai UNet literal (16,32,64,128; s 2,2,2)"
    from densemed.nets.vnet import MONAI_STAGE_CONVS, PAPER_STAGE_CONVS

    layout = MONAI_STAGE_CONVS if case == "vnet_monai_layout" else PAPER_STAGE_CONVS
    ours = nets.build("vnet", in_channels=1, out_channels=2, base_width=16, stage_convs=layout)
    ref = MonaiVNet(3, 1, 2, act="prelu", dropout_prob_down=None, dropout_prob_up=(None, 0.0))
    return ours, ref, "monai VNet (prelu, no dropout)"


def _batch(side: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, side, side, side, generator=g).to(dev)
    return x, (x[:, 0] > 0.5).long()


def peak_child(case: str, which: int, side: int) -> float:
    """In a fresh process: the peak extra memory (MiB) of one training step."""
    torch.manual_seed(0)
    dev = bench_device()
    net = _models(case)[which].to(dev)
    x, y = _batch(side, dev)
    return measure_peak_memory(_step_fn(net, x, y))


def _peak(case: str, which: int, side: int) -> str:
    return f"{in_fresh_process(peak_child, case, which, side):.0f}"


def run(quick: bool) -> list[Row]:
    dev = bench_device()
    side = 32 if quick else 64
    repeats = 2 if quick else 3
    x, y = _batch(side, dev)
    rows = []
    for case in ("unet3d", "unet3d_literal", "vnet", "vnet_monai_layout"):
        torch.manual_seed(0)
        ours, ref, ref_name = _models(case)
        ours, ref = ours.to(dev), ref.to(dev)
        f_ours, f_ref = _step_fn(ours, x, y), _step_fn(ref, x, y)
        row = compare(f"{case} train step 2x1x{side}^3", f_ours, f_ref, ref_name, repeats=repeats, warmup=1)
        row.extra = {
            "peak MiB ours/ref": f"{_peak(case, 0, side)} / {_peak(case, 1, side)}",
            "params ours/ref": f"{_params(ours)} / {_params(ref)}",
        }
        rows.append(row)
        del ours, ref, f_ours, f_ref
    return rows
