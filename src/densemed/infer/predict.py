"""Whole-image prediction of arrays, files or folders from a trained model, through its task.

:class:`Predictor` holds a network (a PyTorch module, or an exported ONNX model from
:func:`densemed.build.load_model`) with its recipe. For every input: check its channels against
the network, resample to ``data.target_spacing``, normalise as in training, let the task infer the
whole image (:meth:`densemed.tasks.Task.infer`: sliding window, optional flip TTA), bring the
outputs back to the input's grid, then either return arrays (:meth:`Predictor.predict`, the
Python API :func:`densemed.load`) or let the task write files (:meth:`Predictor.predict_file`,
``densemed predict``: :meth:`densemed.tasks.Task.write` writes label maps, probabilities,
instances or restored images in the input's format and geometry).

Inputs: PNG/TIFF/NIfTI/NRRD files, and DICOM series: a folder whose files are the slices of one
series is one volume (:func:`densemed.data.dicom.read_dicom_series`), written as
``<folder name>.nii.gz`` on the series' grid (its affine in RAS, as NIfTI stores it).

Many inputs (:meth:`Predictor.predict_paths`): streamed, one in memory at a time and written as it
goes; under ``torchrun --nproc_per_node N -m densemed predict ...`` each process takes every N-th
input (:func:`shard`). By default an unreadable input is reported and skipped and the command
exits 2 at the end, the others written; ``--strict`` stops at the first one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densemed.config import Config
from densemed.data.dicom import is_dicom_series
from densemed.data.io import ImageMeta, is_supported, read_image
from densemed.data.normalize import intensity_params, normalize
from densemed.errors import DensemedError
from densemed.nets.heads import main_kind, to_labels
from densemed.typing import PathType


def list_inputs(path: PathType) -> list[Path]:
    """The inputs at ``path``: an image file, a DICOM series folder, or a folder of both.

    A folder that holds DICOM files is one series; any other folder gives its image files and its
    sub-folders that are DICOM series, sorted by name.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        if is_dicom_series(p):
            return [p]
        found = sorted(f for f in p.iterdir() if not f.name.startswith(".") and (
            (f.is_file() and is_supported(f)) or (f.is_dir() and is_dicom_series(f))))
        if not found:
            raise DensemedError(f"{p}: no images found (PNG, TIFF, NIfTI, NRRD or DICOM series folders expected)")
        return found
    raise DensemedError(f"{p}: input not found")


def read_input(path: PathType, dims: int | None = None) -> tuple[np.ndarray, ImageMeta]:
    """An input file, or a DICOM series folder, as float32 ``(C, *S)`` with its :class:`ImageMeta`."""
    path = Path(path)
    if not path.is_dir():
        return read_image(path, dims)
    from densemed.data.dicom import read_dicom_series

    image, meta = read_dicom_series(path)
    if dims is not None and image.ndim - 1 != dims:
        raise DensemedError(f"{path}: a DICOM series is a 3D volume, the model takes {dims}D images")
    return image, meta


def output_source(path: Path, meta: ImageMeta) -> tuple[Path, ImageMeta]:
    """The name and format results are written under: a DICOM series ``ct/`` becomes ``ct.nii.gz``.

    DICOM is input only; its meta already carries the RAS affine that NIfTI stores, so the results
    are written as NIfTI on the series' grid. NRRD volumes are written like NIfTI ones (class
    indices, not the 0/255 of 2D binary maps; float maps as ``.nii.gz``), the label map keeping
    the ``.nrrd`` suffix and grid (expressed in ``left-posterior-superior``).
    """
    if meta.format == "dicom":
        return path.with_name(path.name + ".nii.gz"), dataclasses.replace(meta, format="nifti")
    if meta.format == "nrrd":
        return path, dataclasses.replace(meta, format="nifti")
    return path, meta


def model_in_channels(model: nn.Module | Any) -> int | None:
    """``in_channels`` of the first convolution (or of an exported model's input), or None."""
    if not isinstance(model, nn.Module):
        return getattr(model, "in_channels", None)
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.in_channels
    return None


def check_finite_outputs(outputs: torch.Tensor, where: Any) -> None:
    """Refuse outputs holding NaN or infinite values (the input itself was checked finite before).

    Such outputs come from the network: weights of a diverged run, or an overflow in reduced
    precision. Written out, they would become arbitrary labels; the line names the input and the
    counts instead.
    """
    bad = ~torch.isfinite(outputs)
    if bool(bad.any()):
        n_nan, n_inf = int(torch.isnan(outputs).sum()), int(torch.isinf(outputs).sum())
        raise DensemedError(f"{where}: the network's outputs hold {n_nan} NaN and {n_inf} infinite values "
                            f"(of {outputs.numel()}); the checkpoint's weights may be NaN (a diverged run) "
                            "or the input overflows them")


class Predictor:
    """A trained model with its recipe: arrays or files in, predictions out.

    Built by :func:`densemed.load` (checkpoint or exported ``.onnx``); ``densemed predict`` runs
    :meth:`predict_paths`. An exported model runs on onnxruntime's CPU provider and has only its
    main head.

    Args:
        model: the network in eval mode, or an exported model (:class:`densemed.build.OnnxNetwork`).
        cfg: its recipe (window, overlap, normalisation, classes).
        device: where a PyTorch network runs (default: the CPU).

    Example:
        >>> import densemed
        >>> predictor = densemed.load("runs/unet_isbi/best.pt")  # doctest: +SKIP
        >>> print(predictor.predict(np.zeros((512, 512), np.float32)).shape)  # doctest: +SKIP
        (512, 512)
    """

    def __init__(self, model: nn.Module | Any, cfg: Config, device: torch.device | str | None = None) -> None:
        from densemed import tasks

        self.model, self.cfg = model.eval(), cfg
        self.exported = not isinstance(model, nn.Module)
        self.device = torch.device("cpu") if self.exported or device is None else torch.device(device)
        self.task = tasks.build(cfg)
        self.in_channels = model_in_channels(model)

    @property
    def class_names(self) -> dict[int, str] | None:
        """Class index -> name (``data.class_names``, from the dataset's ``dataset.json``), or None."""
        return self.cfg.data.class_names

    @property
    def num_classes(self) -> int:
        """Number of classes of the label maps (``data.num_classes``)."""
        return int(self.cfg.data.num_classes)

    # -- the pipeline -----------------------------------------------------------------------------
    def run(self, image: np.ndarray, spacing: Any = None, where: Any = "array",
            tta: bool | None = None, native: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, tuple[np.ndarray, np.ndarray]]:
        """Channels checked, resampled, normalised, inferred: ``(x, outputs, (shift, scale))``.

        Args:
            image: ``(C, *S)`` float32 in the input's intensities.
            spacing: voxel size of ``image``, resampled to ``data.target_spacing`` when the recipe
                has one (no spacing: one unit per pixel).
            where: the input's name, for messages.
            tta: flip test-time augmentation (default ``infer.tta``).
            native: keep the outputs on the network's grid (``x``'s) instead of the input's.

        Raises:
            DensemedError: other channels than the network's, NaN or infinite intensities, or
                outputs that are not finite (:func:`check_finite_outputs`); the line names ``where``.

        Returns:
            ``x``: the normalised network input ``(1, C, *S')`` (``S'`` after resampling);
            ``outputs``: the task's activated outputs ``(1, K, *S)`` on the CPU, on the input grid
            (``(1, K, *S')`` with ``native``);
            the per-channel normalisation ``(shift, scale)``.
        """
        from densemed.data.dataset import check_finite

        d = self.cfg.data
        if self.in_channels is not None and image.shape[0] != self.in_channels:
            raise DensemedError(f"{where}: image has {image.shape[0]} channels, the model expects {self.in_channels}")
        check_finite(image, [where])  # NaN/inf intensities: the same line as training and densemed check
        orig = image.shape[1:]
        if d.target_spacing:  # no spacing: one unit per pixel (data.dataset.resample)
            from densemed.data.dataset import resample

            image = resample(image, spacing, d.target_spacing, order=1)
        x = torch.from_numpy(normalize(image, d.normalize, d.percentiles, d.window))[None]
        shift, scale, _ = intensity_params(image, d.normalize, d.percentiles, d.window)
        outputs = self.task.infer(self.model, x, self.device, tta)
        check_finite_outputs(outputs, where)
        return x, outputs if native else self.on_grid(outputs, orig), (shift, scale)

    def on_grid(self, outputs: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """``(1, K, *S')`` outputs brought to the input grid ``S`` by linear interpolation (same grid: as is)."""
        if tuple(outputs.shape[2:]) == tuple(shape):
            return outputs
        return F.interpolate(outputs, size=tuple(shape), mode="trilinear" if self.cfg.data.dims == 3 else "bilinear")

    def as_image(self, array: Any) -> np.ndarray:
        """An array as ``(C, *S)`` float32: ``(*S)`` gets one channel; ``(H, W, C)`` colour images are moved."""
        image = np.asarray(array, dtype=np.float32)
        dims = self.cfg.data.dims
        if image.ndim == dims:
            return image[None]
        if image.ndim == dims + 1:
            c = self.in_channels
            if dims == 2 and c is not None and image.shape[-1] == c and image.shape[0] != c:
                image = np.moveaxis(image, -1, 0)  # (H, W, 3) as read by PIL / imageio
            return np.ascontiguousarray(image)
        raise DensemedError(f"array: the model takes {dims}D images, (*S) or (C, *S); got shape {image.shape}")

    def predict(self, array: Any, spacing: Any = None, probabilities: bool = False, instances: bool = False,
                tta: bool | None = None, instance_method: str | None = None) -> Any:
        """Predict one image given as an array.

        Args:
            array: ``(*S)``, ``(C, *S)`` (or ``(H, W, C)``) in the image's own intensities; the
                recipe's normalisation is applied here.
            spacing: voxel size, used to resample to ``data.target_spacing`` when the recipe has one.
            probabilities: also return the class probabilities ``(K, *S)`` float32.
            instances: also return an instance map ``(*S)`` int32 (the recipe's or network's
                post-processing, or ``instance_method``).
            tta: flip test-time augmentation (default ``infer.tta``).
            instance_method: a method of :mod:`densemed.infer.postprocess` for ``instances``.

        Returns:
            The label map ``(*S)`` int64 of class indices (for a network whose main head is a
            regression or image head: its values ``(K, *S)``, image heads in the input's
            intensities). With ``probabilities`` / ``instances``, a tuple ``(labels, probabilities,
            instances)`` holding the requested ones in that order, like :func:`numpy.unique`.

        Shape:
            ``(*S)`` or ``(C, *S)`` -> ``(*S)``.

        Example:
            >>> predictor = densemed.load("run/best.pt")  # doctest: +SKIP
            >>> labels, probs = predictor.predict(volume, spacing=(1, 1, 1), probabilities=True)  # doctest: +SKIP
            >>> print(labels.shape, probs.shape)  # doctest: +SKIP
            (35, 51, 35) (3, 35, 51, 35)
        """
        image = self.as_image(array)
        x, net, (shift, scale) = self.run(image, spacing, "array", tta, native=True)
        outputs = self.on_grid(net, image.shape[1:])
        kind = main_kind(self.model)
        if kind == "logits":
            main = to_labels(outputs)[0].numpy()
        elif kind == "image":  # a restored image: the per-volume normalisation undone (channel 0's, as written)
            main = outputs[0].numpy() * float(scale[0]) + float(shift[0])
        else:
            main = outputs[0].numpy()
        extra = []
        if probabilities:
            if kind != "logits":
                raise DensemedError(f"probabilities: the model's main head is a {kind} head, not class scores")
            extra.append(outputs[0].numpy())
        if instances:
            extra.append(self.instance_map(x, net, instance_method, image.shape[1:]))
        return (main, *extra) if extra else main

    def instance_map(self, x: torch.Tensor, outputs: torch.Tensor, method: str | None = None,
                     shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The task's instance map of one image (its post-processing of the network's heads).

        ``outputs`` are on the network's grid (``x``'s), where the post-processing runs and its
        ``auto`` options were chosen; the map is then resized to ``shape`` when given.
        """
        spec = getattr(self.task, "postprocess_spec", None)
        if spec is None:
            raise DensemedError(f"instances: task {self.task.name!r} does not produce instance maps")
        chosen, params = spec(self.model, method)
        self._check_exported_heads(chosen)
        return self.task.instance_labels(self.model, x, outputs, chosen, params, self.device, shape)

    def _check_exported_heads(self, method: str) -> None:
        if not self.exported:
            return
        from densemed.infer import postprocess

        needs = set(postprocess.get(method).needs) - {"foreground"}
        if needs:
            raise DensemedError(
                f"{getattr(self.model, 'path', 'model')}: an exported model holds only its main head; instance method "
                f"{method!r} needs {sorted(needs)}: use the PyTorch checkpoint or --instance-method components"
            )

    # -- files ------------------------------------------------------------------------------------
    def predict_file(self, path: PathType, out_dir: PathType, options: dict[str, Any] | None = None,
                     tta: bool | None = None) -> list[Path]:
        """Predict one input file (or DICOM series folder) and let the task write its results.

        Returns:
            The written files; the first is the main one (the label map).
        """
        path = Path(path)
        options = {**(options or {}), "device": self.device}
        if options.get("instances") and self.exported:
            spec = getattr(self.task, "postprocess_spec", None)
            if spec is not None:
                self._check_exported_heads(spec(self.model, options.get("instance_method"))[0])
        image, meta = read_input(path, self.cfg.data.dims)
        x, net, norm = self.run(image, meta.spacing, path, tta, native=True)
        outputs = self.on_grid(net, image.shape[1:])
        if outputs is not net:  # resampled: instances are made on the network's grid (Task.write)
            options["network_outputs"] = net
        source, meta = output_source(path, meta)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return self.task.write(self.model, x, outputs, source, meta, out_dir, norm, options)

    def predict_paths(self, inputs: list[Path], out_dir: PathType, tta: bool | None = None,
                      options: dict[str, Any] | None = None, log: Callable[[str], None] = print,
                      strict: bool = False, skip_existing: bool = False) -> list[Path]:
        """Predict every input and write the results into ``out_dir``; returns the main files written.

        Streaming: each input is read, predicted and written before the next one is read, so one
        input (and its outputs) is in memory at a time, whatever the number of inputs. Under
        torchrun (``WORLD_SIZE`` > 1) each process predicts its share (:func:`shard`). An input
        that cannot be read or predicted (a corrupt file: a :class:`DensemedError`) is reported in a
        line ``<name>: skipped (<reason>)`` and the others are written; the call then raises one
        DensemedError naming the failures (``densemed predict`` exits 2). With ``strict`` the first
        failure raises at once.

        Interrupted runs: every file is written atomically (a temporary file renamed into place), and
        once all files of an input are in place the input is recorded, with the writing options, in
        a manifest in ``out_dir`` (:func:`manifest_path`), which is removed again when every input
        has been predicted (the folder then holds the predictions only). With ``skip_existing`` an
        input recorded with the same options whose files all exist is skipped, so a rerun after a
        kill or a failed input continues where it stopped; the checkpoint is not compared.
        Temporary files left by killed runs are removed.
        """
        from densemed.data.io import remove_stale_temporaries

        mine = shard(inputs)
        written, failed = [], []
        out = Path(out_dir)
        remove_stale_temporaries(out)
        done = completed(out) if skip_existing else {}
        skipped = 0
        for path in mine:
            key = manifest_key(path, self.cfg.infer.tta if tta is None else tta, options)
            prior = done.get(key)
            if prior and all((out / f).is_file() for f in prior):
                skipped += 1
                log(f"{Path(path).name}: already predicted ({out / prior[0]}), skipped")
                continue
            try:
                files = self.predict_file(path, out_dir, options, tta)
            except DensemedError as exc:
                if strict:
                    raise
                failed.append((Path(path).name, str(exc)))
                log(f"{Path(path).name}: skipped ({exc})")
                continue
            record_done(out, key, files)
            written.append(files[0])
            log(f"{Path(path).name} -> {', '.join(str(f) for f in files)}")
        if skipped:
            log(f"{skipped} input(s) already predicted in {out_dir} were skipped (--skip-existing)")
        if not failed:  # every input done: the record of an interrupted run is no longer needed
            manifest_path(out).unlink(missing_ok=True)
        if failed:
            names = ", ".join(n for n, _ in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
            raise DensemedError(f"{len(failed)} of {len(mine)} inputs could not be predicted ({names}; first: "
                                f"{failed[0][1]}); the {len(written)} others were written to {out_dir}")
        return written


#: the record of completed inputs in an output folder: one JSON line per input, appended once its files are in place
MANIFEST = ".densemed-predict.jsonl"


def manifest_path(out_dir: PathType) -> Path:
    """This process' manifest in ``out_dir`` (one per rank under torchrun, so ranks never share one)."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1") or 1), int(os.environ.get("RANK", "0") or 0)
    name = MANIFEST if world <= 1 else MANIFEST.replace(".jsonl", f".rank{rank}.jsonl")
    return Path(out_dir) / name


def manifest_key(path: PathType, tta: bool, options: dict[str, Any] | None) -> str:
    """What identifies one input's results: its name, TTA and the writing options (not the device)."""
    opts = {k: v for k, v in (options or {}).items() if k != "device"}
    return json.dumps({"input": Path(path).name, "tta": bool(tta), "options": opts}, sort_keys=True, default=str)


def completed(out_dir: PathType) -> dict[str, list[str]]:
    """``{manifest key: output files relative to out_dir}`` of the inputs recorded in ``out_dir``.

    A line cut short by a kill is ignored (its input is predicted again).
    """
    done: dict[str, list[str]] = {}
    lines: list[str] = []
    for f in sorted(Path(out_dir).glob(MANIFEST.replace(".jsonl", "*.jsonl"))):  # every rank's
        try:
            lines += f.read_text().splitlines()
        except OSError:
            continue
    for line in lines:
        try:
            rec = json.loads(line)
            done[str(rec["key"])] = [str(f) for f in rec["outputs"]]
        except (ValueError, KeyError, TypeError):
            continue
    return done


def record_done(out_dir: PathType, key: str, files: list[Path]) -> None:
    """Append one input's record to this process' manifest (a line cut short by a kill is ignored when read)."""
    out = Path(out_dir)
    names = [os.path.relpath(f, out) for f in files]
    line = json.dumps({"key": key, "outputs": names}) + "\n"
    try:
        with open(manifest_path(out), "a") as fh:
            fh.write(line)
    except OSError as exc:
        from densemed.data.io import write_error

        raise write_error(manifest_path(out), exc) from None


def shard(inputs: list[Path]) -> list[Path]:
    """This process' inputs under torchrun: every ``$WORLD_SIZE``-th from ``$RANK`` (all of them when alone).

    Read from the environment torchrun sets, so prediction needs no process group.
    """
    rank, world = int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)
    return list(inputs[rank::world]) if world > 1 else list(inputs)


def rank_device(spec: str) -> str:
    """``auto``/``cuda`` -> ``cuda:$LOCAL_RANK`` under torchrun with CUDA (one GPU per process); else ``spec``."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and spec in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
    return spec


def predict_paths(
    model: nn.Module,
    cfg: Config,
    inputs: list[Path],
    out_dir: PathType,
    device: torch.device,
    tta: bool | None = None,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    skip_existing: bool = False,
) -> list[Path]:
    """Predict every input file and write the task's results into ``out_dir``; returns the main files.

    Args:
        model: the network in eval mode (or an exported model).
        cfg: its recipe.
        inputs: image files or DICOM series folders.
        out_dir: output folder (created).
        device: where the network runs.
        tta: flip test-time augmentation (default ``infer.tta``).
        options: the task's writing options (``probabilities``, ``instances``, ``instance_method``).
        log: progress lines.
        skip_existing: skip inputs a previous run recorded as done (:meth:`Predictor.predict_paths`).
    """
    return Predictor(model, cfg, device).predict_paths(inputs, out_dir, tta, options, log,
                                                       skip_existing=skip_existing)
