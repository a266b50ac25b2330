"""``classify_seg``: an image-level class beside the segmentation (and the reconstruction) of each image.

The medical use of ClassNSeg (Nguyen, Fang, Yamagishi, Echizen, BTAS 2019, arXiv 1906.06876):
one network learns from one dataset to classify, segment and reconstruct. Recipe section::

    task: {name: classify_seg, csv: null, slice_axis: null, class_input: true}

**Classes** (binary, one per 2D slice of a volume or per 2D image):

* by rule (``csv: null``, default): **class 1 iff the slice holds at least one foreground pixel**
  of the label map ("this slice shows hippocampus", "this patch contains gland"). In training it
  is computed on each sample as cropped and augmented (a patch smaller than the image is
  classified by its own content); in validation and evaluation on every whole slice.
* from a CSV (``csv: path``; absolute, else relative to the working directory, else to
  ``data.root``): columns ``case`` (file stem), ``class`` (0 or 1) and, for volumes, ``slice``
  (index along ``slice_axis``). Every slice of every training and validation case needs a row
  (a missing one is an error naming the case and slice). The classes travel with each sample as
  a map (``class_map``, constant over each slice, copied by nearest neighbour under geometric
  augmentation; a sample's class is the map's maximum over its slice).

Volumes (``data.dims: 3``) go through a 2D network applied slice by slice
(``model: {name: slicewise, axis: a, net: {name: classnseg, ...}}``); ``slice_axis`` (needed with a
CSV) must equal the model's ``axis``. The batch carries ``class_label``: ``(B,)`` for 2D images,
``(B, D)`` per slice for volumes.

**Network input**: ``class_input: true`` gives ``class_label`` to the network in training (ClassNSeg
zeroes the latent half of the other class); ``false`` gives None (the network then decodes the
whole latent: the "segmentation alone" baseline with ``gamma_act = gamma_rec = 0``).

**Loss**: ``L = g_act L_act + g_seg L_seg + g_rec L_rec``, the multi-task loss with the heads'
names (``activation`` -> ``class_label`` with ``activation``, ``segmentation`` -> ``label``,
``reconstruction`` -> ``image`` with ``mse``). Per-slice scores ``(B, 2, D)`` and labels ``(B, D)``
are given to the loss as ``B * D`` samples.

**Validation**: loss on the fixed patches; on every whole validation image (volumes: every slice
whole, zero-padded in-plane to the patch size as in training): Dice per foreground class over
the image (``val_dice``: mean), and over all validation slices the classification accuracy and
AUC of the network's class (``a_1 >= a_0``; score ``softmax(a_0, a_1)_1``) and, for comparison,
of the class read off the segmentation (class 1 iff a pixel is predicted foreground; score the
largest foreground probability): ``val_accuracy``, ``val_auc``, ``val_accuracy_seg``,
``val_auc_seg``. ``val_score = (val_dice + val_accuracy) / 2``.

**Prediction**: the label map ``<stem><suffix>`` and the rows of ``classes.csv`` in the output
folder (``case, slice, axis, class, probability, seg_class, seg_probability``; a case predicted
again replaces its rows). **Evaluation** (``densemed evaluate --task classify_seg --pred OUT
--truth DATA``; ``DATA`` a folder with ``labels/``, or the labels folder itself): the
segmentation table, then accuracy, AUC and the confusion matrix ``[[TN, FP], [FN, TP]]`` (rows:
true class) of both class predictions against ``DATA/classes.csv`` if present, else against the
rule on the true label maps.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densemed.config import resolve_data_root
from densemed.data.dataset import Case, map_labels, read_image_case, read_label_case
from densemed.data.io import ImageMeta, split_name
from densemed.data.slices import center_crop, center_pad, check_axis, padded_size, slice_axis_of, to_slices
from densemed.errors import DensemedError
from densemed.nets import all_outputs
from densemed.nets.heads import activate, foreground, head_outputs, heads_of, main_head, model_inputs, to_labels
from densemed.tasks.base import Task
from densemed.tasks.registry import register
from densemed.tasks.segmentation import foreground_dice, patch_loss_record, write_label_map
from densemed.train.module import SupervisedModule

CSV_COLUMNS = ("case", "slice", "axis", "class", "probability", "seg_class", "seg_probability")


@dataclass
class ClassifySegOptions:
    """The ``task`` section of a ``classify_seg`` recipe."""

    #: CSV of image-level classes (columns case, [slice,] class); None: class 1 iff any foreground
    csv: str | None = None
    #: slice axis of volumes (needed with ``csv``; must equal the model's axis)
    slice_axis: int | None = None
    #: give the class label to the network in training (ClassNSeg's latent zeroing)
    class_input: bool = True


def auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve: the Mann-Whitney statistic ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2``.

    Ties get average ranks. None when only one class is present.

    Example:
        >>> print(auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])))
        0.75
    """
    from scipy.stats import rankdata

    scores, truth = np.asarray(scores, np.float64), np.asarray(truth).astype(bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def class_scores(pred: np.ndarray, score: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Accuracy, AUC and confusion matrix ``[[TN, FP], [FN, TP]]`` (rows: true class) of binary predictions."""
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    conf = [[int((~truth & ~pred).sum()), int((~truth & pred).sum())],
            [int((truth & ~pred).sum()), int((truth & pred).sum())]]
    return {"accuracy": float((pred == truth).mean()) if truth.size else None, "auc": auc(score, truth),
            "confusion": conf}


def slice_classes(label: torch.Tensor | np.ndarray, axis: int | None) -> np.ndarray:
    """The rule: class 1 iff the slice holds a foreground pixel. ``(*S)`` label map -> ``(D,)`` (2D: ``(1,)``)."""
    lab = torch.as_tensor(np.asarray(label))[None, None]
    return (to_slices(lab, axis) > 0).flatten(1).any(1).numpy().astype(np.int64)


@register
class ClassifySeg(Task):
    """Image-level classes (per slice of a volume) learned with the segmentation (see the module docstring)."""

    name = "classify_seg"
    Options = ClassifySegOptions
    writes = "label maps and classes.csv"

    def check(self, source: str) -> None:
        """``slice_axis`` a volume axis; a CSV on volumes needs it."""
        o = self.opts
        if o.slice_axis is not None:
            check_axis(o.slice_axis, f"{source}: task.slice_axis")
        if o.csv is not None and not isinstance(o.csv, str):
            raise DensemedError(f"{source}: task.csv must be a file path, got {o.csv!r}")
        if o.csv is not None and self.cfg.data.dims == 3 and o.slice_axis is None:
            raise DensemedError(f"{source}: task.slice_axis: needed with task.csv on volumes (the axis of its "
                                "'slice' column, the model's axis)")
        if not isinstance(o.class_input, bool):
            raise DensemedError(f"{source}: task.class_input must be true or false, got {o.class_input!r}")

    # -- data -------------------------------------------------------------------------------------
    def csv_path(self) -> Path:
        """The class CSV: absolute, else relative to the working directory, else to ``data.root``."""
        p = Path(str(self.opts.csv)).expanduser()
        if p.is_absolute() or p.is_file():
            return p
        return resolve_data_root(self.cfg.data.root) / p

    def table(self) -> dict[tuple[str, int], int]:
        """``{(case, slice): class}`` from the CSV (slice 0 when the CSV has no slice column)."""
        if getattr(self, "_table", None) is None:  # read once, on the first case
            self._table = read_class_csv(self.csv_path(), "task.csv")
        return self._table

    def nearest_keys(self) -> frozenset[str]:
        """The class map keeps its 0/1 values under geometric augmentation."""
        return frozenset({"class_map"})

    def load_case(self, name: str, image_path: Path, label_path: Path | None) -> Case:
        """Normalised image, class labels and, with a CSV, the per-slice class map."""
        image, meta = read_image_case(self.cfg, image_path)
        raw, _ = read_label_case(self.cfg, label_path, image.shape[1:])
        maps = {}
        if self.opts.csv is not None:
            axis = self.opts.slice_axis if self.cfg.data.dims == 3 else None
            depth = image.shape[1 + axis] if axis is not None else 1
            table, path = self.table(), self.csv_path()
            missing = [k for k in range(depth) if (name, k) not in table]
            if missing:
                where = f" slice {missing[0]}" if axis is not None else ""
                raise DensemedError(f"{path}: no class for case {name!r}{where} (task.csv needs a row per "
                                    f"{'slice' if axis is not None else 'image'})")
            values = np.array([table[(name, k)] for k in range(depth)], np.float32)
            shape = [1] * image[0].ndim
            if axis is not None:
                shape[axis] = depth
            maps["class_map"] = np.broadcast_to(values.reshape(shape), image.shape[1:])[None].astype(np.float32)
        return Case(name, image, map_labels(raw, self.cfg.data, label_path), maps, meta)

    # -- the classes of a batch -------------------------------------------------------------------
    def axis_of(self, model: nn.Module) -> int | None:
        """The model's slice axis, checked against ``task.slice_axis``."""
        axis = slice_axis_of(model, self.cfg.data.dims, self.name)
        if axis is not None and self.opts.slice_axis is not None and axis != self.opts.slice_axis:
            raise DensemedError(f"task.slice_axis ({self.opts.slice_axis}) differs from the model's axis ({axis})")
        return axis

    def with_classes(self, batch: dict[str, torch.Tensor], axis: int | None) -> dict[str, torch.Tensor]:
        """The batch with ``class_label``: ``(B,)`` for 2D images, ``(B, D)`` per slice for volumes."""
        b = batch["image"].shape[0]
        if self.opts.csv is not None:
            per_slice = to_slices(batch["class_map"], axis).flatten(1).amax(1) > 0.5
        else:
            per_slice = (to_slices(batch["label"], axis) > 0).flatten(1).any(1)
        labels = per_slice.long()
        return {**batch, "class_label": labels if axis is None else labels.reshape(b, -1)}

    # -- training ---------------------------------------------------------------------------------
    def model_args(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        """The declared inputs; ``class_label`` only with ``class_input``."""
        args = super().model_args(model, batch)
        if not self.opts.class_input:
            keys = model_inputs(model)
            args = [None if k == "class_label" else a for k, a in zip(keys, args)]
        return args

    def compute_loss(self, loss_fn: nn.Module, out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss on per-slice scores: ``(B, 2, D)`` and labels ``(B, D)`` as ``B * D`` samples."""
        if isinstance(out, dict) and isinstance(out.get("activation"), torch.Tensor) and out["activation"].dim() == 3:
            act = out["activation"]
            out = {**out, "activation": act.movedim(2, 1).reshape(-1, act.shape[1])}
            batch = {**batch, "class_label": batch["class_label"].reshape(-1)}
        return super().compute_loss(loss_fn, out, batch)

    def training_module(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> ClassifySegModule:
        """:class:`ClassifySegModule`: adds ``class_label`` to every batch."""
        return ClassifySegModule(self, model, loss_fn, self.cfg.train, device)

    # -- whole images -----------------------------------------------------------------------------
    def run(self, model: nn.Module, image: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """Class probabilities ``(1, K, *S)`` and per-slice scores ``(D, 2) = (a_0, a_1)`` of one whole image."""
        axis = self.axis_of(model)
        padded, back = center_pad(image.to(device), padded_size(image.shape[2:], self.cfg.data.patch_size, axis))
        model.eval()
        with torch.inference_mode(), all_outputs(model):
            outs = head_outputs(model, model(*self.model_args(model, {"image": padded})))
        head = main_head(model)
        res = {"probs": center_crop(activate(outs[head].float(), heads_of(model)[head].kind).cpu(), back)}
        if "activation" in outs:
            act = outs["activation"].float().cpu()
            res["activation"] = act[0].T if act.dim() == 3 else act  # (D, 2)
        return res

    def slice_predictions(self, model: nn.Module, image: torch.Tensor, device: torch.device) -> dict[str, Any]:
        """Probabilities and, per slice, the network's class and score and the segmentation's."""
        axis = self.axis_of(model)
        res = self.run(model, image, device)
        fg = to_slices(foreground(res["probs"])[:, None], axis).flatten(1)  # (D, H * W)
        labels = to_slices(to_labels(res["probs"])[:, None], axis).flatten(1)
        out = {"probs": res["probs"], "axis": axis, "seg_class": (labels > 0).any(1).numpy().astype(np.int64),
               "seg_probability": fg.amax(1).numpy()}
        if "activation" in res:
            a = res["activation"]
            out["class"] = (a[:, 1] >= a[:, 0]).numpy().astype(np.int64)
            out["probability"] = torch.softmax(a, dim=1)[:, 1].numpy()
        return out

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, val_cases: list[Case], val_patches: list[dict], device: torch.device
    ) -> dict[str, Any]:
        """Loss; Dice per image; accuracy and AUC over every validation slice (see the module docstring)."""
        if not val_cases:
            return {}
        rec: dict[str, Any] = self.patch_loss(model, loss_fn, val_patches, device) if val_patches else {}
        axis = self.axis_of(model)
        per_class, truth, got = [], [], {}
        for case in val_cases:
            p = self.slice_predictions(model, torch.from_numpy(case.image)[None], device)
            pred = to_labels(p["probs"])[0]
            per_class.append(foreground_dice(pred, case.label, self.cfg.data.num_classes))
            truth.append(self.case_classes(case, axis))
            for key in ("class", "probability", "seg_class", "seg_probability"):
                if key in p:
                    got.setdefault(key, []).append(p[key])
        mean = np.mean(per_class, axis=0)
        rec["val_dice_per_class"] = [float(v) for v in mean]
        rec["val_dice"] = float(mean.mean())
        t = np.concatenate(truth)
        cat = {key: np.concatenate(v) for key, v in got.items()}
        seg = class_scores(cat["seg_class"], cat["seg_probability"], t)
        rec["val_accuracy_seg"], rec["val_auc_seg"] = seg["accuracy"], seg["auc"]
        if "class" in cat:
            net = class_scores(cat["class"], cat["probability"], t)
            rec["val_accuracy"], rec["val_auc"], rec["val_confusion"] = net["accuracy"], net["auc"], net["confusion"]
            rec["val_score"] = (rec["val_dice"] + rec["val_accuracy"]) / 2
        else:  # a network without class scores: the segmentation's classes
            rec["val_score"] = (rec["val_dice"] + rec["val_accuracy_seg"]) / 2
        return rec

    def case_classes(self, case: Case, axis: int | None) -> np.ndarray:
        """True per-slice classes of a whole case: from its class map (CSV) or by the rule."""
        if "class_map" in case.maps:
            m = torch.from_numpy(case.maps["class_map"])[None]
            return (to_slices(m, axis).flatten(1).amax(1) > 0.5).numpy().astype(np.int64)
        return slice_classes(case.label, axis)

    def patch_loss(self, model: nn.Module, loss_fn: nn.Module, patches: list[dict],
                   device: torch.device) -> dict[str, Any]:
        """Mean loss (and per-head terms) on the fixed validation patches, given their classes."""
        axis = self.axis_of(model)
        return patch_loss_record(self, model, loss_fn, patches, self.cfg.data.batch_size, device,
                                 lambda batch, start: self.with_classes(batch, axis))

    # -- inference --------------------------------------------------------------------------------
    def infer(
        self, model: nn.Module, image: torch.Tensor, device: torch.device, tta: bool | None = None
    ) -> torch.Tensor:
        """Class probabilities ``(1, K, *S)`` of the whole image (no sliding window, no TTA)."""
        preds = self.slice_predictions(model, image, device)
        self._last = (image, preds)  # write() of the same image reuses them
        return preds["probs"]

    def write(
        self, model: nn.Module, image: torch.Tensor, outputs: torch.Tensor, source: Path, meta: ImageMeta,
        out_dir: Path, norm: tuple[np.ndarray, np.ndarray], options: dict[str, Any],
    ) -> list[Path]:
        """The label map, and this image's rows of ``classes.csv``."""
        stem, suffix = split_name(source)
        written = [write_label_map(outputs, meta, out_dir / f"{stem}{suffix}")]
        last = getattr(self, "_last", None)
        p = last[1] if last is not None and last[0] is image else self.slice_predictions(
            model, image, options.get("device", torch.device("cpu")))
        self._last = None
        rows = []
        for k in range(len(p["seg_class"])):
            rows.append({
                "case": stem, "slice": k, "axis": "" if p["axis"] is None else p["axis"],
                "class": int(p["class"][k]) if "class" in p else "",
                "probability": f"{p['probability'][k]:.6f}" if "probability" in p else "",
                "seg_class": int(p["seg_class"][k]), "seg_probability": f"{p['seg_probability'][k]:.6f}",
            })
        written.append(update_class_csv(out_dir / "classes.csv", stem, rows))
        return written

    # -- evaluation -------------------------------------------------------------------------------
    @classmethod
    def evaluate_folders(cls, pred: Path, truth: Path, options: dict[str, Any]) -> dict[str, Any]:
        """Segmentation table; accuracy, AUC, confusion of the network's and the segmentation's classes."""
        from densemed.data.io import is_supported, read_label
        from densemed.metrics.evaluate import evaluate_folders

        labels = truth / "labels" if (truth / "labels").is_dir() else truth
        seg = evaluate_folders(pred, labels, num_classes=options.get("num_classes"),
                               label_map=options.get("label_map"), class_names=options.get("class_names"))
        pred_csv = pred / "classes.csv"
        if not pred_csv.is_file():
            raise DensemedError(f"{pred}: no classes.csv (written by densemed predict for task classify_seg)")
        with pred_csv.open(newline="") as fh:
            predicted = {(r["case"], int(r["slice"])): r for r in csv.DictReader(fh)}
        true_csv = truth / "classes.csv"
        if true_csv.is_file():
            table = read_class_csv(true_csv, "--truth")
        else:  # the rule on the true label maps, sliced as the predictions were
            axes = {c: r["axis"] for (c, _), r in predicted.items()}
            table = {}
            for f in sorted(labels.iterdir()):
                if not f.is_file() or f.name.startswith(".") or not is_supported(f):
                    continue
                stem = split_name(f)[0]
                if stem not in axes:
                    raise DensemedError(f"{pred_csv}: no prediction for case {stem!r}")
                lab, _ = read_label(f)
                for k, v in enumerate(slice_classes(lab, int(axes[stem]) if axes[stem] != "" else None)):
                    table[(stem, k)] = int(v)
        missing = [key for key in table if key not in predicted]
        if missing:
            raise DensemedError(f"{pred_csv}: no prediction for case {missing[0][0]!r} slice {missing[0][1]}")
        keys = sorted(table)
        t = np.array([table[key] for key in keys])
        res: dict[str, Any] = {"n": len(keys), "positives": int(t.sum())}
        seg_c = np.array([int(predicted[key]["seg_class"]) for key in keys])
        seg_p = np.array([float(predicted[key]["seg_probability"]) for key in keys])
        res["from_segmentation"] = class_scores(seg_c, seg_p, t)
        if all(predicted[key]["class"] != "" for key in keys):
            net_c = np.array([int(predicted[key]["class"]) for key in keys])
            net_p = np.array([float(predicted[key]["probability"]) for key in keys])
            res["network"] = class_scores(net_c, net_p, t)
        return {"segmentation": seg, "classification": res}

    @classmethod
    def format_result(cls, result: dict[str, Any]) -> str:
        """The per-class table, then the classification scores."""
        from densemed.metrics.evaluate import format_table

        c = result["classification"]
        lines = [format_table(result["segmentation"]), "",
                 f"classification: {c['n']} slices/images, {c['positives']} of class 1",
                 f"{'classes from':<16} {'accuracy':>9} {'auc':>7}  confusion [[TN, FP], [FN, TP]]"]
        for key, title in (("network", "network (a1>=a0)"), ("from_segmentation", "segmentation")):
            if key in c:
                s = c[key]
                a = "n/a" if s["auc"] is None else f"{s['auc']:.4f}"
                lines.append(f"{title:<16} {s['accuracy']:>9.4f} {a:>7}  {s['confusion']}")
        return "\n".join(lines)


def read_class_csv(path: Path, where: str) -> dict[tuple[str, int], int]:
    """``{(case, slice): class}`` from a CSV with columns ``case``, ``class`` and optionally ``slice``."""
    if not path.is_file():
        raise DensemedError(f"{where}: class CSV {path} not found")
    table: dict[tuple[str, int], int] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"case", "class"} <= cols:
            raise DensemedError(f"{path}: a class CSV needs the columns case and class (and slice for volumes), "
                                f"got {sorted(cols)}")
        for line, row in enumerate(reader, start=2):
            try:
                key = (row["case"], int(row["slice"]) if row.get("slice") not in (None, "") else 0)
                value = int(row["class"])
            except ValueError:
                raise DensemedError(f"{path}: line {line}: slice and class must be integers, got {row}") from None
            if value not in (0, 1):
                raise DensemedError(f"{path}: line {line}: class must be 0 or 1, got {value}")
            table[key] = value
    return table


def update_class_csv(path: Path, case: str, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as the rows of ``case`` in ``path`` (replacing that case's old rows), atomically."""
    kept = []
    if path.is_file():
        with path.open(newline="") as fh:
            kept = [r for r in csv.DictReader(fh) if r["case"] != case]
    allrows = sorted(kept + [{k: str(v) for k, v in r.items()} for r in rows],
                     key=lambda r: (r["case"], int(r["slice"])))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(allrows)
    os.replace(tmp, path)
    return path


class ClassifySegModule(SupervisedModule):
    """One network and the task's loss on batches given their ``class_label`` (:meth:`ClassifySeg.with_classes`)."""

    def __init__(self, task: ClassifySeg, model: nn.Module, loss_fn: nn.Module, t: Any, device: torch.device) -> None:
        super().__init__(task, model, loss_fn, t, device)
        self.classes = task  # typed: the task's class rule
        self.axis = task.axis_of(model)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Classes of this batch's samples (after augmentation), then the supervised step."""
        return super().train_step(self.classes.with_classes(batch, self.axis))
