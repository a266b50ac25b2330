"""Classic 2D networks at the papers' widths: one training step (forward, backward, SGD) on 2x3x256x256.

Rows ``<net> train`` time the eager step in the default (contiguous, NCHW) memory format as
"densemed" and the same step with model and input in ``torch.channels_last`` as the "reference"
column (so ratio > 1 means channels-last is slower). Rows ``<net> infer`` time an eval-mode
forward (batch 2) as is and with batch norm folded into the preceding (transposed) convolution
(ratio > 1: folding is slower). ``img/s`` is 2 / median step time; ``peak`` is the extra resident
memory of one call (RSS sampled every ms; CPU has no allocator statistics); that call is each
variant's first warm-up. With ``--quick`` each case is timed once after it; otherwise three times
after one more warm-up. Rows are also printed to stderr as they finish. ``DENSEMED_BENCH_COMPILE=1`` adds a
``torch.compile`` row for the U-Net training step, with its compile time.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import densemed.nets as nets
from benchmarks.harness import Row, compare, fmt_row, measure_peak_memory

#: network -> builder kwargs at the paper's widths (AttentionBoost: this toolkit's default).
NETS = {
    "unet": {"norm": "batch"},
    "attentionboost": {},
    "fcn8s": {},
    "deconvnet": {},
}
SHAPE = (2, 3, 256, 256)

NOTES = (
    "Measured on a 2-core CPU shared with other jobs: absolute times are noisy; the ratios come from "
    "alternating calls in one process. BN folding applies to DeconvNet, U-Net and AttentionBoost "
    "(FCN has no batch norm)."
)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` with every ``BatchNorm`` that follows a (transposed) convolution
    in an ``nn.Sequential`` folded into that convolution's weights and bias (the BN becomes Identity)."""
    model = copy.deepcopy(model).eval()
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        keys = list(seq._modules)
        for a, b in zip(keys, keys[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq._modules[b] = nn.Identity()
    return model


def _build(name: str, in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nets.build(name, in_channels=in_channels, out_channels=2, **NETS[name])


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        out = model(x)
        outs = out if isinstance(out, list) else [out]
        loss = sum(nn.functional.cross_entropy(o, y) for o in outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _extra(row: Row, mem_ours: float, mem_ref: float, ref: str) -> Row:
    ours, other = (SHAPE[0] / statistics.median(t) for t in (row.ours, row.ref))
    row.extra["img/s"] = f"{ours:.2f} vs {other:.2f} ({ref})"
    row.extra["peak MiB"] = f"{mem_ours:.0f} vs {mem_ref:.0f}"
    return row


def _show(row: Row) -> None:
    # progress on stderr: at the papers' widths one case takes minutes on a small CPU
    print(fmt_row(row), file=sys.stderr, flush=True)


def run(quick: bool) -> list[Row]:
    repeats, warmup = (1, 1) if quick else (3, 2)
    rows: list[Row] = []
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*SHAPE, generator=g)
    y = torch.randint(0, 2, (SHAPE[0], *SHAPE[2:]), generator=g)
    for name in NETS:
        model = _build(name, SHAPE[1])
        params = nets.count_parameters(model)
        # -- training step: contiguous vs channels-last ------------------------------------
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        step, step_cl = _train_step(model.train(), x, y), _train_step(model_cl.train(), x_cl, y)
        # the memory measurement is each variant's warm-up call (allocations happen there)
        mem, mem_cl = measure_peak_memory(step), measure_peak_memory(step_cl)
        row = compare(f"{name} train ({params / 1e6:.1f} M params)", step, step_cl, "channels_last",
                      repeats=repeats, warmup=warmup - 1)
        rows.append(_extra(row, mem, mem_cl, "channels_last"))
        _show(rows[-1])
        del model_cl, step, step_cl
        # -- inference: as is vs batch norm folded ----------------------------------------
        model.eval()
        if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
            folded = fold_batchnorm(model)
            with torch.no_grad():
                err = (model(x[:1]) - folded(x[:1])).abs().max().item()

            def infer(m: nn.Module = model) -> None:
                with torch.inference_mode():
                    m(x)

            def infer_folded(m: nn.Module = folded) -> None:
                with torch.inference_mode():
                    m(x)

            mem, mem_f = measure_peak_memory(infer), measure_peak_memory(infer_folded)
            row = compare(f"{name} infer", infer, infer_folded, "BN folded", repeats=repeats, warmup=warmup - 1)
            row.extra["max |diff|"] = f"{err:.1e}"
            rows.append(_extra(row, mem, mem_f, "folded"))
            _show(rows[-1])
            del folded
        del model
    if os.environ.get("DENSEMED_BENCH_COMPILE") == "1":
        model = _build("unet", SHAPE[1]).train()
        compiled = torch.compile(copy.deepcopy(model))
        step, step_c = _train_step(model, x, y), _train_step(compiled, x, y)
        t = time.perf_counter()
        step_c()  # first call compiles forward and backward
        compile_s = time.perf_counter() - t
        row = compare("unet train", step, step_c, "torch.compile", repeats=repeats, warmup=warmup)
        row.extra["compile s"] = f"{compile_s:.0f}"
        rows.append(row)
        _show(row)
    return rows
