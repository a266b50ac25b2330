"""Mixed precision: which autocast dtype a ``train.amp`` / ``infer.amp`` setting means on a device.

One rule for training and inference (both import it):

* ``false`` / ``None`` -- float32, no autocast.
* ``true`` -- bfloat16 on the CPU and on GPUs that support it, float16 (with a gradient scaler in
  training) on older GPUs.
* ``"auto"`` -- mixed precision only where it is known to pay: bfloat16 on a CPU whose instruction
  set has bf16 arithmetic (``amx_bf16`` or ``avx512_bf16``, read from ``/proc/cpuinfo``; other
  systems answer no) and on a bf16-capable GPU; float32 everywhere else. Measured reason
  (``benchmarks/bench_amp.py``, README): on an AVX2 CPU without bf16 units a U-Net training step was
  4x *slower* under bf16 (emulated), on an Intel Xeon with AMX 2x faster.
* ``"bf16"`` / ``"fp16"`` (or the torch dtypes) force one dtype.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from densemed.errors import DensemedError

#: what ``amp`` may be: a switch, "auto", a dtype name or a dtype
AmpSpec = bool | str | torch.dtype | None

_AMP_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


@functools.cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises bf16 arithmetic (``amx_bf16`` or ``avx512_bf16`` flags); False if unknown."""
    try:
        flags = set(Path(cpuinfo).read_text(errors="replace").split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def amp_dtype(amp: AmpSpec, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype that ``amp`` asks for on ``device`` (None: run in float32).

    Example:
        >>> print(amp_dtype(True, "cpu"), amp_dtype(False, "cpu"))
        torch.bfloat16 None
    """
    if amp is None or amp is False:
        return None
    dev = torch.device(device)
    if amp is True:
        if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.float16 if dev.type == "mps" else torch.bfloat16
    if isinstance(amp, str) and amp.lower() == "auto":
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if dev.type == "cpu" and cpu_has_bf16() else None
    if isinstance(amp, torch.dtype) and amp in (torch.bfloat16, torch.float16):
        return amp
    if isinstance(amp, str) and amp.lower() in _AMP_NAMES:
        return _AMP_NAMES[amp.lower()]
    raise DensemedError(f"amp must be true, false, 'auto', 'bf16' or 'fp16', got {amp!r}")
