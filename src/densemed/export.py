"""Export a trained network to ONNX or TorchScript, verified against PyTorch in the same call.

:func:`export` writes the network (``model.onnx`` or ``model.pt``) and a JSON sidecar
``<file>.json`` holding the caller's ``meta`` (normalisation, window, classes, class names: what
another runtime needs to reproduce ``densemed predict``) plus an ``export`` section (inputs,
output, main head, shapes, opset). It then loads the file back, runs it (onnxruntime for ONNX,
``torch.jit.load`` for TorchScript) on a random input and, when given, on one real image, and
compares with the PyTorch network in eval mode: the largest absolute difference of the logits
is returned, and above ``tolerance`` (default 1e-4) the files are removed and a
:class:`~densemed.errors.DensemedError` is raised, so no unverified model is left behind.

Documented choices:

* Both formats are produced by **tracing** (``torch.onnx.export(..., dynamo=False)``, the
  TorchScript-based exporter, and ``torch.jit.trace``); the ``torch.export``-based ONNX exporter
  needs the extra ``onnxscript`` package. Tracing records the operations run for one input, so
  Python branches on the input's size are frozen. The networks pad their input to a multiple of
  their stride (``blocks.pad_to_multiple``) only when needed; traced on a size that needs no
  padding, the graph has no padding at all and fails on other sizes. With ``dynamic=True`` the
  trace input therefore has an **odd** size along every spatial axis, which takes every padding
  branch; a pad amount computed as zero at run time is still correct.
* The batch axis is always dynamic: the sliding window sends a variable number of windows.
  ``dynamic=False`` fixes the spatial size to ``example``'s (the window).
* Verification: the random input has batch 2 (proving the dynamic batch axis); with
  ``dynamic=True`` a second random input of another spatial size is checked as well. A real
  image larger than a static export's window is cut to one window at its start (what the sliding
  window would feed), and zero-padded when smaller.
* Only the main head is exported (what ``forward`` returns in eval mode); ``export.heads`` in the
  sidecar names its channels and kind so a runtime knows how to activate it.
* A network that ONNX cannot represent says so in a class attribute ``onnx_unsupported`` (the
  reason); :func:`check_exportable` refuses it before anything is traced or written, naming the
  network and the reason (SegNetMRI: its data-consistency layers compute complex FFTs, and the
  TorchScript-based ONNX exporter has no complex tensors). TorchScript exports it.

:class:`OnnxPredictor` wraps an onnxruntime session as a callable ``(B, C, *S) -> (B, K, *S)``
tensor function for :func:`densemed.infer.sliding_window.sliding_window`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densemed.errors import DensemedError
from densemed.nets.heads import heads_of, main_head, model_inputs
from densemed.typing import PathType

FORMATS = ("onnx", "torchscript")
OPSET = 17
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}


def sidecar_path(path: PathType) -> Path:
    """Where the JSON sidecar of an exported model lives: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def check_exportable(model: nn.Module, format: str) -> None:
    """Refuse, in one line naming the network and why, a network that ``format`` cannot represent.

    A network (or a network inside a wrapper such as ``slicewise``) declares what ONNX cannot hold
    in a class attribute ``onnx_unsupported``: the reason, a string.

    Raises:
        DensemedError: ``"<network>: cannot be exported to ONNX: <reason>; --format torchscript exports it"``.
    """
    if format != "onnx":
        return
    for m in model.modules():
        reason = getattr(type(m), "onnx_unsupported", None)
        if reason:
            raise DensemedError(f"{type(m).__name__.lower()}: cannot be exported to ONNX: {reason}; "
                                "--format torchscript exports it")


def _jsonable(obj: Any, key: str = "meta") -> Any:
    """``meta`` as plain JSON types (numpy scalars/arrays, tuples, Paths converted)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{key}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise DensemedError(f"{key}: cannot be written to the JSON sidecar ({type(obj).__name__})")


def _inputs_of(model: nn.Module, image: torch.Tensor) -> tuple[tuple[str, ...], tuple[torch.Tensor, ...]]:
    """Input names and tensors for ``model`` (extra inputs from ``model.example_inputs``)."""
    names = model_inputs(model)
    if names == ("image",):
        return names, (image,)
    extra = model.example_inputs(image)
    return names, (image, *(extra[n] for n in names[1:]))


def _trace_shape(shape: Sequence[int], dynamic: bool) -> tuple[int, ...]:
    """Batch 1; with ``dynamic`` every spatial size made odd so padding branches are traced."""
    spatial = [s + 1 if dynamic and s % 2 == 0 else s for s in shape[2:]]
    return (1, int(shape[1]), *spatial)


def _fit(image: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Cut ``image`` (B, C, *S) to ``spatial`` from its start, zero-padding where it is smaller."""
    out = image.new_zeros((*image.shape[:2], *spatial))
    src = tuple(slice(0, min(s, t)) for s, t in zip(image.shape[2:], spatial))
    out[(slice(None), slice(None), *src)] = image[(slice(None), slice(None), *src)]
    return out


def export(
    model: nn.Module,
    meta: Mapping[str, Any],
    out_path: PathType,
    format: str = "onnx",
    dynamic: bool = False,
    example: torch.Tensor | Sequence[int] | None = None,
    real_image: torch.Tensor | np.ndarray | None = None,
    tolerance: float = 1e-4,
    opset: int = OPSET,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``model`` as ONNX or TorchScript with a JSON sidecar, and verify it against PyTorch.

    Args:
        model: the network (any registered one); a CPU copy in eval mode is exported.
        meta: plain dict written into the sidecar (normalisation, window, classes, class names...).
        out_path: the model file (``.onnx`` / ``.pt``); the sidecar is ``<out_path>.json``.
        format: ``onnx`` or ``torchscript``.
        dynamic: accept any spatial size (else the size of ``example`` only).
        example: input shape ``(B, C, *S)`` or a tensor of it; default ``(1, C, *meta["window"])``
            with ``C`` from ``meta["in_channels"]``.
        real_image: one normalised image ``(C, *S)`` or ``(1, C, *S)`` to verify on as well.
        tolerance: largest allowed absolute difference of the logits.
        opset: ONNX opset version.
        seed: seed of the random verification inputs.

    Returns:
        ``{"path", "sidecar", "format", "dynamic", "input_shape", "max_abs_diff",
        "checks": {"random": d, "random_other_size": d, "real": d}}`` (checks that ran).

    Raises:
        DensemedError: bad arguments, a network the format cannot represent
            (:func:`check_exportable`), a missing runtime package, an export that fails, or a
            difference above ``tolerance`` (the written files are then removed).

    Example:
        >>> import tempfile, pathlib, densemed.nets as nets
        >>> net = nets.build("unet", in_channels=1, out_channels=2, base_width=4, depth=2)
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.pt"
        >>> result = export(net, {"classes": 2}, out, "torchscript", example=(1, 1, 16, 16))
        >>> print(result["max_abs_diff"] < 1e-4)
        True
    """
    if format not in FORMATS:
        raise DensemedError(f"--format: must be one of {FORMATS}, got {format!r}")
    check_exportable(model, format)
    out_path = Path(out_path)
    if example is None:
        window = meta.get("window") or meta.get("patch_size")
        if window is None or meta.get("in_channels") is None:
            raise DensemedError("meta: give 'window' and 'in_channels', or pass example=(B, C, *S)")
        example = (1, int(meta["in_channels"]), *[int(w) for w in window])
    shape = tuple(example.shape) if isinstance(example, torch.Tensor) else tuple(int(s) for s in example)
    if len(shape) < 3:
        raise DensemedError(f"example: expected a shape (B, C, *S), got {shape}")
    real = None
    if real_image is not None:
        real = torch.as_tensor(np.asarray(real_image), dtype=torch.float32)
        real = real[None] if real.dim() == len(shape) - 1 else real
        if real.dim() != len(shape) or real.shape[1] != shape[1]:
            raise DensemedError(f"real_image: shape {tuple(real.shape)} does not fit the network's input "
                                f"(B, {shape[1]}, *{len(shape) - 2} spatial axes)")
    net = copy.deepcopy(model).cpu().float().eval()
    gen = torch.Generator().manual_seed(seed)
    trace_shape = _trace_shape(shape, dynamic)
    trace_image = torch.randn(trace_shape, generator=gen)
    names, trace_args = _inputs_of(net, trace_image)
    try:
        main = main_head(net)
        head = heads_of(net)[main]
        declared = {main: {"channels": head.channels, "kind": head.kind}}
    except (TypeError, AttributeError, KeyError):  # a network that declares no heads
        main, declared = None, None
    info = {
        "format": format,
        "inputs": list(names),
        "output": "logits",
        "dims": len(shape) - 2,
        "in_channels": int(shape[1]),
        "input_shape": ["batch", *(["any"] * (len(shape) - 2) if dynamic else list(trace_shape[2:]))],
        "dynamic": bool(dynamic),
        "main_head": main,
        "heads": declared,
        "opset": opset if format == "onnx" else None,
        "torch": torch.__version__,
    }
    sidecar = sidecar_path(out_path)
    side = {**_jsonable(meta), "export": info}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # tracer warnings about frozen size branches are expected (see the module docstring)
        warnings.simplefilter("ignore")
        try:
            if format == "onnx":
                _onnx_export(net, trace_args, names, out_path, opset, dynamic)
            else:
                traced = torch.jit.trace(net, trace_args, check_trace=False)
                torch.jit.save(traced, str(out_path), _extra_files={"densemed.json": json.dumps(side)})
        except DensemedError:
            raise
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = "; --format torchscript may work" if format == "onnx" else ""
            raise DensemedError(f"{out_path}: {format} export failed ({msg}){hint}") from None
    sidecar.write_text(json.dumps(side, indent=2) + "\n")

    run = _runner(out_path, format)
    checks: dict[str, float] = {}
    first = example if isinstance(example, torch.Tensor) else torch.randn(shape, generator=gen)
    first = first.detach().cpu().float()
    inputs = {"random": torch.cat([first[:1], torch.randn((1, *first.shape[1:]), generator=gen)])}
    if dynamic:
        # another size, of the other parity than the example's: both padding cases are checked
        other = [s + 3 for s in shape[2:]]
        inputs["random_other_size"] = torch.randn((2, shape[1], *other), generator=gen)
    if real is not None:
        inputs["real"] = real[:1] if dynamic else _fit(real[:1], trace_shape[2:])
    for key, x in inputs.items():
        _, args = _inputs_of(net, x)
        with torch.no_grad():
            ref = net(*args)
        try:
            got = run(args)
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _remove(out_path, sidecar)
            raise DensemedError(f"{out_path}: exported {format} model failed on the {key} input "
                                f"{tuple(x.shape)} ({msg}); files removed") from None
        if got.shape != ref.shape:
            _remove(out_path, sidecar)
            raise DensemedError(f"{out_path}: exported output {tuple(got.shape)} differs from PyTorch's "
                                f"{tuple(ref.shape)} on the {key} input; files removed")
        checks[key] = float((got - ref).abs().max())
    worst = max(checks.values())
    if not worst <= tolerance:  # also catches NaN
        _remove(out_path, sidecar)
        key = max(checks, key=lambda k: checks[k])
        raise DensemedError(f"{out_path}: exported {format} model differs from PyTorch by {worst:.3g} "
                            f"(> {tolerance:g}) on the {key} input; files removed")
    return {"path": str(out_path), "sidecar": str(sidecar), "format": format, "dynamic": bool(dynamic),
            "input_shape": info["input_shape"], "max_abs_diff": worst, "checks": checks}


def _onnx_export(net: nn.Module, args: tuple[torch.Tensor, ...], names: tuple[str, ...], path: Path,
                 opset: int, dynamic: bool) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise DensemedError("ONNX export needs the onnx package: pip install onnx onnxruntime") from None
    axes: dict[str, dict[int, str]] = {}
    for name, a in zip(names, args):
        axes[name] = {0: "batch"}
        if dynamic:
            axes[name].update({d: f"{name}_s{d - 2}" for d in range(2, a.dim())})
    axes["logits"] = {0: "batch"}
    if dynamic:
        axes["logits"].update({d: f"s{d - 2}" for d in range(2, args[0].dim())})
    with _quiet_stdout():
        torch.onnx.export(net, args, str(path), dynamo=False, input_names=list(names), output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 while the ONNX exporter runs.

    On failure its C++ side prints the whole TorchScript graph (hundreds of lines) to stdout
    before raising; the error message alone says what failed.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _runner(path: Path, format: str) -> Any:
    """A function running the exported file on a tuple of tensors, returning a CPU tensor."""
    if format == "onnx":
        predictor = OnnxPredictor(path)
        return lambda args: predictor(*args)
    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return module(*args)

    return run


def _remove(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


class OnnxPredictor:
    """An exported ONNX network as a callable on tensors, for the sliding window.

    Runs on onnxruntime's CPU provider unless ``providers`` says otherwise; no autograd. The
    sidecar ``<path>.json``, when present, is read into :attr:`meta` and gives the main head
    (:attr:`heads`, :attr:`main_head`) the way a network declares it.

    Args:
        path: the ``.onnx`` file.
        providers: onnxruntime execution providers (default ``["CPUExecutionProvider"]``).
        threads: intra-op threads (None: onnxruntime's default).

    Shape:
        ``(B, C, *S) -> (B, K, *S)``; ``S`` fixed to the exported window unless exported dynamic.

    Example:
        >>> predictor = OnnxPredictor("model.onnx")  # doctest: +SKIP
        >>> print(predictor(torch.zeros(1, 1, 64, 64)).shape)  # doctest: +SKIP
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, path: PathType, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise DensemedError("running an ONNX model needs onnxruntime: pip install onnxruntime") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise DensemedError(f"{self.path}: ONNX model not found")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DensemedError(f"{self.path}: cannot load ONNX model ({msg})") from None
        side = sidecar_path(self.path)
        self.meta: dict[str, Any] = json.loads(side.read_text()) if side.is_file() else {}
        self._inputs = self.session.get_inputs()
        info = self.meta.get("export", {})
        # the network's declared inputs; the exporter drops those unused in eval mode, so the
        # session may take fewer (ClassNSeg's class label)
        self.inputs = tuple(info.get("inputs") or (i.name for i in self._inputs))
        self._types = {i.name: _NUMPY_TYPES.get(i.type, np.float32) for i in self._inputs}
        self._output = self.session.get_outputs()[0].name
        shape = self._inputs[0].shape  # e.g. ["batch", 1, 64, 64] or ["batch", 1, "image_s0", ...]
        self.in_channels = shape[1] if isinstance(shape[1], int) else None
        spatial = shape[2:]
        #: fixed spatial input size of a static export, else None
        self.window = tuple(spatial) if all(isinstance(s, int) for s in spatial) else None
        from densemed.nets.heads import Head

        heads = info.get("heads") or {}
        self.main_head = info.get("main_head") or "segmentation"
        self.heads = {k: Head(int(v["channels"]), v.get("kind", "logits")) for k, v in heads.items()}
        self.out_channels = next(iter(self.heads.values())).channels if self.heads else None

    def eval(self) -> OnnxPredictor:
        """No-op, so code written for ``nn.Module`` can call it."""
        return self

    def __call__(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """Logits of the main head for ``x`` (and the network's extra inputs, in declared order)."""
        if len(extra) != len(self.inputs) - 1:
            raise DensemedError(f"{self.path}: the model takes inputs {self.inputs}, got {1 + len(extra)} tensors")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise DensemedError(f"{self.path}: the model takes {self.in_channels} channels, got {x.shape[1]}")
        if self.window is not None and tuple(x.shape[2:]) != self.window:
            raise DensemedError(f"{self.path}: exported for windows of {self.window}, got {tuple(x.shape[2:])} "
                                "(use this window for the sliding window, or export with --dynamic)")
        feed = {name: t.detach().cpu().numpy().astype(self._types[name], copy=False)
                for name, t in zip(self.inputs, (x, *extra)) if name in self._types}
        out = self.session.run([self._output], feed)[0]
        return torch.from_numpy(out).to(x.device)
