import pytest
import torch

import densemed.precision as precision
from densemed import config
from densemed.errors import DensemedError
from densemed.precision import amp_dtype, cpu_has_bf16


def test_amp_names_map_to_autocast_dtypes_and_bad_values_are_rejected():
    assert amp_dtype(True, "cpu") == torch.bfloat16
    assert amp_dtype("bf16", "cpu") == amp_dtype(torch.bfloat16, "cpu") == torch.bfloat16
    assert amp_dtype("fp16", "cuda") == amp_dtype("float16", "cpu") == torch.float16
    assert amp_dtype(False, "cpu") is None and amp_dtype(None, "cuda") is None
    with pytest.raises(DensemedError, match="amp"):
        amp_dtype("int8", "cpu")


@pytest.mark.parametrize("flags, has", [("fpu sse avx2 avx512f", False), ("avx2 avx512f avx512_bf16", True),
                                        ("avx2 amx_tile amx_bf16", True), ("avx2 avx512_bf16_x", False)])
def test_cpu_bf16_is_read_from_the_cpuinfo_flags(tmp_path, flags, has):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_bf16(str(info)) is has


def test_cpu_bf16_is_no_when_cpuinfo_is_missing(tmp_path):
    assert cpu_has_bf16(str(tmp_path / "absent")) is False


def test_auto_amp_is_bf16_only_on_a_cpu_with_bf16_units(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert amp_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert amp_dtype("auto", "cpu") is None
    assert amp_dtype("auto", "mps") is None  # no measured gain there: auto stays in float32


@pytest.mark.parametrize("key", ["train.amp", "infer.amp"])
def test_amp_settings_are_validated(key):
    for ok in ("true", "false", "auto", "bf16"):
        config.load(None, [f"{key}={ok}"])  # checked on loading
    with pytest.raises(DensemedError, match="auto"):
        config.load(None, [f"{key}=maybe"])
