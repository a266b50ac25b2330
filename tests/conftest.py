"""Shared fixtures: the real-data root and small synthetic inputs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# Most tests run tiny tensors, where a second thread only adds synchronisation (measured 3-10x
# slower on a loaded 2-core machine); the real-data tests ask for 2 threads via train.threads.
torch.set_num_threads(1)

# The on-disk case cache is on by default (~/.cache/densemed): the tests (and the CLI processes they
# start, which inherit the environment) use a fresh folder of their own and remove it at the end.
_CACHE = tempfile.mkdtemp(prefix="densemed-test-cache-")
os.environ["DENSEMED_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)


def data_root() -> Path:
    """``$DENSEMED_DATA``, else ``../shared/data`` relative to the repository root."""
    env = os.environ.get("DENSEMED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def real_data() -> Path:
    """Root of the real datasets; skips the test with a reason when absent."""
    root = data_root()
    if not (root / "isbi2012_em").is_dir():
        pytest.skip(f"real data not found at {root} (set DENSEMED_DATA)")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Reset to one thread for every test (a recipe's train.threads changes it process-wide)."""
    torch.set_num_threads(1)
    yield


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def cuda_exact():
    """A CUDA device with TF32 off, so that GPU results can be compared with the CPU's in float32."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
