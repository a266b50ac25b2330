"""``densemed compare``: several recipes on the same data split with the same budget, one visual report.

``densemed compare RECIPE... [--data DIR] [--budget SECONDS | --epochs N] [--set KEY=VALUE ...]
[--out DIR] [--force]`` does, for each recipe in turn:

1. **train** it in its own process, ``python -m densemed train RECIPE --set ...`` (so one run's
   memory never weighs on the next), into ``OUT/<recipe stem>/``, with the overrides every
   recipe gets: ``data.root`` from ``--data``, ``train.time_budget_s`` from ``--budget`` (the loop
   checks it between optimiser steps; it counts training and periodic validation) or
   ``train.epochs`` from ``--epochs``, then ``--set``;
2. **predict** the validation images through the run's checkpoint (:func:`densemed.build.load_model`,
   the same sliding window as ``densemed predict``; instance maps where the task scores objects);
3. **score** them with the task's own folder evaluation (:meth:`densemed.tasks.Task.evaluate_folders`,
   the same as ``densemed evaluate``): Dice, IoU, precision, recall, HD95, ASD for segmentation;
   object F1, object Dice, object Hausdorff, AJI, PQ for instances; PSNR and SSIM for images.

Then ``OUT/report.md`` and a self-contained ``OUT/report.html`` (:mod:`densemed.report`) hold the
settings, the machine's load, one table (recipe, network, options, loss, parameters, epochs,
steps, training seconds, prediction seconds, every metric), one plot of all validation curves,
a grid of the same validation images with each network's prediction overlaid, and each
network's worst image. ``OUT/results.json`` has the same numbers for scripts.

**Same split.** Every recipe must read the same data folder (``--data`` sets it for all). Its
train/validation split (``data.val_fraction`` / ``data.split_seed``, or ``data.train_files`` /
``data.val_files``) is computed for each recipe; a recipe whose split differs from the first
recipe's gets the first one's as explicit file lists (said in the log and the report).
Without ``--budget`` or ``--epochs`` the recipes must agree on ``train.epochs`` and
``train.time_budget_s``.

**Resumable.** A run folder holds ``compare/state.json`` (the overrides it was trained with and
whether its training process ended). A finished run is reused (``--force`` retrains it); an
unfinished one (the compare was killed) continues with ``densemed train --resume``; a run
folder trained with other overrides is an error rather than silently mixed. Predictions and
scores are cached in ``compare/eval.json`` and redone when the checkpoint changes.

**Which weights.** ``best.pt`` by default: the weights a user would ship. It is chosen by the
validation score on these same images, so every network's score is optimistic alike;
``--checkpoint last`` scores the final weights instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densemed.errors import DensemedError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from densemed.config import Config
    from densemed.report import RunSummary, Shown
    from densemed.tasks.base import Task

#: Folder inside each run folder for compare's own files (state, training log, predictions, scores).
WORK = "compare"
#: ``train.epochs`` for time-budgeted runs: the budget, not the epochs, ends them.
BUDGET_EPOCHS = 100000
#: What ``densemed predict`` must be told so that it writes what the task's evaluation scores, for
#: tasks that do not say it themselves (method ``evaluation_predict_options``).
PREDICT_OPTIONS: dict[str, dict[str, Any]] = {"instances": {"instances": True}}


@dataclass
class Plan:
    """One recipe of a comparison: its resolved recipe, run folder, train overrides and split."""

    recipe: Path
    name: str
    cfg: Config
    task: Task
    run: Path
    sets: list[str]
    items: dict[str, tuple[Path, Path | None]]
    train: list[str]
    val: list[str]
    pinned: bool = False


# -- planning -----------------------------------------------------------------------------------------
def data_items(cfg: Config, task: Task, source: str) -> dict[str, tuple[Path, Path | None]]:
    """``stem -> (image, label or None)`` of a recipe's data folder, in the order training reads them."""
    from densemed.config import resolve_data_root
    from densemed.data.dataset import discover_images, discover_pairs

    d = cfg.data
    if d.synthetic is not None:
        raise DensemedError(f"{source}: data.synthetic: compare scores files; give a data folder with --data DIR")
    root = resolve_data_root(d.root)
    if not root.is_dir():
        raise DensemedError(f"{root}: data folder not found (data.root of {source}; or pass --data DIR)")
    if task.needs_labels():
        return {s: (i, lab) for s, i, lab in discover_pairs(root, d.image_dir, d.label_dir)}
    return {s: (i, None) for s, i in discover_images(root, d.image_dir)}


def _resolve(recipe: Path, sets: list[str]) -> tuple[Config, Task, dict[str, tuple[Path, Path | None]],
                                                     list[str], list[str]]:
    from densemed import config, tasks
    from densemed.data.dataset import split

    cfg = config.load(recipe, sets)
    task = tasks.build(cfg, str(recipe))
    items = data_items(cfg, task, str(recipe))
    train, val = split(list(items), cfg.data)
    if not val:
        raise DensemedError(f"{recipe}: the validation split is empty (data.val_fraction, data.val_files)")
    return cfg, task, items, train, val


def plan_runs(recipes: list[Path], out: Path, data: str | None = None, budget: float | None = None,
              epochs: int | None = None, sets: list[str] | None = None,
              log: Any = print) -> list[Plan]:
    """Resolve every recipe with the shared overrides; check data, budget and split agree (see the docstring)."""
    from densemed.config import resolve_data_root

    names = [Path(r).name.removesuffix(".yaml").removesuffix(".yml") for r in recipes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DensemedError(f"{dup[0]}: two recipes share this name; their run folders in --out would collide")
    common: list[str] = []
    if data is not None:
        common.append(f"data.root={resolve_data_root(data).resolve()}")
    if budget is not None:
        if budget <= 0:
            raise DensemedError(f"--budget: must be positive seconds, got {budget:g}")
        common += [f"train.time_budget_s={budget:g}", f"train.epochs={BUDGET_EPOCHS}"]
    elif epochs is not None:
        if epochs < 1:
            raise DensemedError(f"--epochs: must be at least 1, got {epochs}")
        common += [f"train.epochs={epochs}", "train.time_budget_s=null"]
    common += list(sets or [])
    plans = []
    for recipe, name in zip(recipes, names):
        recipe = Path(recipe)
        if not recipe.is_file():
            raise DensemedError(f"{recipe}: recipe not found")
        run = (out / name).resolve()
        tail = [f"train.out={run}", "train.progress=false"]
        cfg, task, items, train, val = _resolve(recipe, common + tail)
        plans.append(Plan(recipe.resolve(), name, cfg, task, run, common + tail, items, train, val))
    first = plans[0]
    root = _root(first)
    for p in plans[1:]:
        if _root(p) != root:
            raise DensemedError(
                f"{p.recipe}: reads {_root(p)}, {first.recipe.name} reads {root}; pass --data DIR to use one folder"
            )
    if budget is None and epochs is None:
        length = {(p.cfg.train.epochs, p.cfg.train.time_budget_s) for p in plans}
        if len(length) > 1:
            raise DensemedError("recipes: train.epochs / train.time_budget_s differ between the recipes; "
                                "pass --budget SECONDS or --epochs N so that they train alike")
    for p in plans[1:]:
        if (p.train, p.val) != (first.train, first.val):
            pin = [f"data.train_files={json.dumps(first.train)}", f"data.val_files={json.dumps(first.val)}"]
            p.sets = p.sets[: -2] + pin + p.sets[-2:]
            p.cfg, p.task, p.items, p.train, p.val = _resolve(p.recipe, p.sets)
            p.pinned = True
            log(f"[compare] {p.name}: its own split differs; using {first.name}'s "
                f"({len(first.train)} training / {len(first.val)} validation images)")
    return plans


def _root(p: Plan) -> Path:
    from densemed.config import resolve_data_root

    return resolve_data_root(p.cfg.data.root).resolve()


# -- training -----------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def finished(ckpt: dict[str, Any], train: Any) -> bool:
    """Whether the run of a checkpoint has done what ``train`` (the compare's ``TrainConfig``) asks.

    Its time budget is spent, or its last epoch is complete. (A budgeted run whose schedule
    ended a little before its budget counts as unfinished: resuming it trains for the rest.)
    """
    if train.time_budget_s is not None:
        return float(ckpt.get("elapsed", 0.0)) >= float(train.time_budget_s)
    return int(ckpt.get("epoch_step", 0)) == 0 and int(ckpt["epoch"]) + 1 >= int(train.epochs)


def _stream(cmd: list[str], log_file: Path) -> int:
    """Run ``cmd``, echo its output and keep it in ``log_file``; returns the exit code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_file, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write("    " + line)
                sys.stdout.flush()
                f.write(line)
                f.flush()  # the log is read while a long run goes on
        finally:
            rc = proc.wait()  # on Ctrl-C the child gets SIGINT too and ends with its checkpoints intact
    return rc


def train_run(plan: Plan, device: str | None = None, force: bool = False, log: Any = print) -> dict[str, Any]:
    """Train, resume or reuse the run of ``plan``; returns its ``compare/state.json`` record."""
    from densemed.checkpoint import load as load_checkpoint

    run, state_path = plan.run, plan.run / WORK / "state.json"
    if force and run.exists():
        shutil.rmtree(run)
    state = _read_json(state_path)
    last = run / "last.pt"
    if state is None and last.exists():
        raise DensemedError(f"{run}: holds a run that densemed compare did not start; "
                            "pass --force to replace it or choose another --out")
    if state is not None and state.get("sets") != plan.sets:
        old = [s for s in state.get("sets", []) if s not in plan.sets]
        new = [s for s in plan.sets if s not in state.get("sets", [])]
        raise DensemedError(f"{run}: trained by an earlier compare with other settings ({' '.join(old)[:200]} "
                            f"instead of {' '.join(new)[:200]}); pass --force to retrain or choose another --out")
    if state is not None and state.get("status") == "done" and last.exists():
        log(f"[compare] {plan.name}: reusing the finished run in {run} (--force retrains)")
        return state
    resume = last.exists()
    # the training process ended, but the compare was killed before noting it
    if resume and finished(load_checkpoint(last), plan.cfg.train):
        state = {**(state or {}), "status": "done"}
        _write_json(state, state_path)
        log(f"[compare] {plan.name}: reusing the finished run in {run} (--force retrains)")
        return state
    cmd = [sys.executable, "-m", "densemed", "train", str(plan.recipe)]
    cmd += ["--resume", str(run)] if resume else []
    cmd += ["--device", device] if device else []
    cmd += ["--set", *plan.sets]
    state = {"recipe": str(plan.recipe), "sets": plan.sets, "status": "training",
             "wall_s": float((state or {}).get("wall_s", 0.0)), "resumed": int((state or {}).get("resumed", 0))
             + int(resume)}
    _write_json(state, state_path)
    log(f"[compare] {plan.name}: {'resuming' if resume else 'training'} "
        f"(densemed train {plan.recipe.name}{' --resume' if resume else ''}; log in {run / WORK / 'train.log'})")
    tic = time.perf_counter()
    rc = _stream(cmd, run / WORK / "train.log")
    state["wall_s"] += time.perf_counter() - tic
    state["status"] = "done" if rc == 0 else "failed"
    state["returncode"] = rc
    _write_json(state, state_path)
    if rc != 0:
        log(f"[compare] {plan.name}: densemed train exited with {rc} (see {run / WORK / 'train.log'})")
    return state


# -- evaluation ---------------------------------------------------------------------------------------
def _link(src: Path, dst: Path) -> None:
    """A symbolic link (a copy where links are not allowed): the data are never duplicated needlessly."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copy2(src, dst)


def evaluation_inputs(task: Task, cases: list[tuple[str, Path, Path | None]], work: Path) -> tuple[list[Path], Path]:
    """``(input files for predict, truth folder)`` of the validation cases.

    A task may define ``evaluation_inputs(cases, work)`` itself. Otherwise: tasks trained on labels
    predict the images and are scored against the label files; tasks that learn from images
    alone restore a degraded copy of each image (written into ``work/inputs`` as ``densemed degrade``
    does) and are scored against the image.
    """
    hook = getattr(task, "evaluation_inputs", None)
    if hook is not None:
        return hook(cases, work)
    truth = work / "truth"
    if task.needs_labels():
        for _, _, label in cases:
            assert label is not None
            _link(label, truth / label.name)
        return [image for _, image, _ in cases], truth
    from densemed.data.io import read_image, split_name, write_float
    from densemed.data.sr import degrade

    inputs = []
    for _, image, _ in cases:
        _link(image, truth / image.name)
        arr, meta = read_image(image, task.cfg.data.dims)
        stem, suffix = split_name(image)
        inputs.append(write_float(work / "inputs" / f"{stem}{suffix}",
                                  degrade(arr[0], task.opts.factor, task.opts.axis), meta))
    return inputs, truth


def predict_options(task: Task) -> dict[str, Any]:
    """Options of :func:`densemed.infer.predict.predict_paths` so that it writes what the task scores."""
    hook = getattr(task, "evaluation_predict_options", None)
    return dict(hook()) if hook is not None else dict(PREDICT_OPTIONS.get(task.name, {}))


def _image_value(rec: dict[str, Any], metric: str) -> float | None:
    """One image's value of ``metric`` (flat, or in its ``mean`` over classes)."""
    value = rec[metric] if metric in rec else (rec.get("mean") or {}).get(metric)
    return None if value is None else float(value)


def evaluate_run(plan: Plan, device: torch.device, which: str = "best", log: Any = print) -> RunSummary:
    """Predict and score the validation images with the run's checkpoint; the report's record of the run."""
    from densemed import nets, tasks
    from densemed.build import load_model
    from densemed.infer.predict import predict_paths
    from densemed.report import RunSummary
    from densemed.train.plots import read_history

    run = plan.run
    summary = RunSummary(recipe=plan.name, run=run, task=plan.task.name)
    ckpt_path = run / f"{which}.pt"
    if not ckpt_path.exists():
        ckpt_path = run / "last.pt"
    if not ckpt_path.exists():
        summary.error = "no checkpoint (training failed before its first epoch)"
        return summary
    model, cfg, ckpt = load_model(ckpt_path, device)
    opts = {k: v for k, v in cfg.model.items() if k != "name"}
    summary.network, summary.loss = cfg.model["name"], cfg.loss["name"]
    summary.options = ", ".join(f"{k}={v}" for k, v in opts.items())
    summary.params = nets.count_parameters(model)
    if (run / "metrics.jsonl").exists():
        summary.history = read_history(run / "metrics.jsonl")
    summary.epochs = len(summary.history)
    summary.steps = int(summary.history[-1]["steps"]) if summary.history and "steps" in summary.history[-1] else None
    summary.scored_epoch = int(ckpt["epoch"]) + 1
    summary.train_s = sum(float(h.get("train_seconds", h.get("seconds", 0.0))) for h in summary.history)
    task = tasks.build(cfg, str(ckpt_path))

    work = run / WORK
    cache_path = work / "eval.json"
    stamp = {"checkpoint": ckpt_path.name, "mtime_ns": ckpt_path.stat().st_mtime_ns, "val": plan.val}
    cache = _read_json(cache_path)
    if cache is not None and all(cache.get(k) == v for k, v in stamp.items()):
        log(f"[compare] {plan.name}: scores of {ckpt_path.name} from {cache_path}")
        result, predict_s, preds = cache["result"], cache["predict_s"], cache["preds"]
    else:
        for sub in ("pred", "truth", "inputs"):
            shutil.rmtree(work / sub, ignore_errors=True)
        cases = [(s, *plan.items[s]) for s in plan.val]
        try:
            inputs, truth = evaluation_inputs(task, cases, work)
            log(f"[compare] {plan.name}: predicting {len(inputs)} validation images with {ckpt_path.name}")
            tic = time.perf_counter()
            written = predict_paths(model, cfg, inputs, work / "pred", device, None, predict_options(task),
                                    log=lambda s: None)
            predict_s = time.perf_counter() - tic
            options = {"num_classes": cfg.data.num_classes, "label_map": cfg.data.label_map,
                       "class_names": cfg.data.class_names}
            result = type(task).evaluate_folders(work / "pred", truth, options)
        except DensemedError as exc:  # one recipe that cannot be scored does not sink the others
            summary.error = f"not scored: {exc}"
            return summary
        preds = {s: str(p) for s, p in zip(plan.val, written)}
        _write_json({**stamp, "result": result, "predict_s": predict_s, "preds": preds,
                     "inputs": [str(p) for p in inputs], "truth": str(truth)}, cache_path)
    names = list(result.get("metrics") or result["mean"])
    summary.metrics = {m: result["mean"].get(m) for m in names}
    summary.per_class = dict(result.get("per_class") or {})
    summary.class_names = class_names_for(summary.per_class, cfg.data.class_names)
    summary.headline = names[0]
    summary.per_image = {im["name"]: _image_value(im, names[0]) for im in result["images"]}
    summary.preds = {s: Path(p) for s, p in preds.items()}
    summary.predict_s = predict_s
    summary.notes = _result_notes(plan.name, result)
    return summary


def class_names_for(per_class: dict[str, Any], names: dict[int, str] | None) -> dict[str, str]:
    """``{class key of per_class: name}`` for the classes the recipe's ``data.class_names`` names.

    Taken from the run's recipe rather than the cached scores, so a report of runs scored before
    the recipe named its classes shows the names too.
    """
    if not names:
        return {}
    return {c: str(names[int(c)]) for c in per_class if c.isdigit() and int(c) in names}


def _result_notes(name: str, result: dict[str, Any]) -> list[str]:
    """What the reader must know to read a result: left-out undefined values, distance units."""
    notes = []
    n = len(result["images"]) * max(len(result.get("classes") or [1]), 1)
    what = "(image, class) pairs" if result.get("classes") else "images"
    for key, why in (("nan_count", "the class is empty in the prediction or the truth"),
                     ("inf_count", "no predicted object")):
        undefined = [m for m, count in (result.get(key) or {}).items() if count]
        counts = {result[key][m] for m in undefined}
        if undefined:
            each = f"{counts.pop()} of {n}" if len(counts) == 1 else "some of the"
            notes.append(f"{name}: {', '.join(undefined)} undefined for {each} {what} ({why}); "
                         "left out of the means")
    units = {im.get("units") for im in result["images"]} - {None}
    if units == {"pixels"}:
        notes.append(f"{name}: distances (HD95, ASD, Hausdorff) in pixels")
    elif units == {"physical"}:
        notes.append(f"{name}: distances (HD95, ASD) in the units of the NIfTI header (usually mm)")
    return notes


# -- figures ------------------------------------------------------------------------------------------
def _display_image(arr: np.ndarray, k: int | None) -> np.ndarray:
    """``(C, *S)`` -> the 2D slice shown: grey ``(H, W)`` or colour ``(H, W, 3)``."""
    import numpy as np

    a = arr[:, k] if k is not None else arr
    return np.moveaxis(a[:3], 0, -1) if a.shape[0] >= 3 else a[0]


def _load_shown(stem: str, inp: Path, truth_file: Path, runs: list[RunSummary], mode: str,
                label_map: dict[int, int] | None, dims: int) -> Shown:
    """One validation image, its truth and every run's prediction as displayed (same slice for all)."""
    from densemed.data.io import read_image, read_label
    from densemed.infer.overlay import pick_slice
    from densemed.metrics.evaluate import _to_classes
    from densemed.report import Shown

    image, _ = read_image(inp, dims)

    def label(path: Path, lut: dict[int, int] | None) -> np.ndarray:
        return _to_classes(read_label(path, dims)[0], path, lut)

    def picture(path: Path) -> np.ndarray:
        return read_image(path, dims)[0][0]

    truth = label(truth_file, label_map) if mode == "label" else picture(truth_file)
    preds = {r.recipe: (label(r.preds[stem], None) if mode == "label" else picture(r.preds[stem]))
             for r in runs if stem in r.preds}
    k = None
    if dims == 3:
        k = pick_slice(truth, truth) if mode == "label" else truth.shape[0] // 2
        truth, preds = truth[k], {n: p[k] for n, p in preds.items()}
    return Shown(stem, _display_image(image, k), truth, preds)


def _worst(run: RunSummary) -> str | None:
    from densemed.report import LOWER_IS_BETTER

    scored = [(v, s) for s, v in run.per_image.items() if v is not None]
    if not scored:
        return None
    return (max if run.headline in LOWER_IS_BETTER else min)(scored)[1]


def report_figures(first: Plan, runs: list[RunSummary], mode: str, by_time: bool, show: int) -> list[Any]:
    """The report's figures: validation curves, the grid of the first ``show`` validation images, worst cases."""
    from densemed import report

    scored = [r for r in runs if not r.error]
    if not scored:
        return []
    figures = [report.Figure("Validation curves", "curves.png", report.curves_figure(scored, by_time),
                             "Each run's validation score (on whole validation images) and loss (on fixed "
                             "validation patches), as logged in its `metrics.jsonl`.")]
    cache = _read_json(first.run / WORK / "eval.json") or {}
    if not cache.get("inputs"):
        return figures
    inputs = dict(zip(first.val, (Path(p) for p in cache["inputs"])))
    truth_dir = Path(cache["truth"])

    def load(stem: str) -> Shown:
        truth = truth_dir / (first.items[stem][1] or first.items[stem][0]).name
        return _load_shown(stem, inputs[stem], truth, scored, mode, first.cfg.data.label_map, first.cfg.data.dims)

    shown = [load(s) for s in first.val[: max(show, 0)]]
    if shown:
        what = ("each network's prediction blended over the image (class colours as in `densemed predict` overlays)"
                if mode == "label" else "each network's restored image")
        slices = " Volumes: the slice with the most true foreground." if first.cfg.data.dims == 3 else ""
        figures.append(report.Figure(
            "Validation images", "grid.png", report.grid_figure(shown, scored, mode),
            f"The first {len(shown)} of the {len(first.val)} validation images; {what}; the caption is that "
            f"network's score on that image.{slices}"))
    for r in scored:
        stem = _worst(r)
        if stem is None or stem not in inputs:
            continue
        name = report.METRIC_TITLES.get(r.headline, r.headline)
        figures.append(report.Figure(
            f"Worst case: {r.recipe}", f"worst_{r.recipe}.png", report.worst_figure(load(stem), r, mode),
            f"`{stem}`: {name} {report.fmt_value(r.headline, r.per_image[stem])}, the worst of {r.recipe} on the "
            "validation images."))
    return figures


# -- the command --------------------------------------------------------------------------------------
def run_compare(recipes: list[Path], out: Path, data: str | None = None, budget: float | None = None,
                epochs: int | None = None, sets: list[str] | None = None, force: bool = False,
                device: str | None = None, which: str = "best", show: int = 4, log: Any = print) -> int:
    """Train, score and report (see the module docstring); returns 0, or 1 when a recipe failed."""
    import platform

    import torch

    from densemed import __version__, report
    from densemed.build import resolve_device

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = Path(out)
    plans = plan_runs(recipes, out, data, budget, epochs, sets, log)
    modes = {("label" if p.task.needs_labels() else "image") for p in plans}
    if len(modes) > 1:
        raise DensemedError("recipes: label-map tasks and image-restoration tasks cannot share one comparison")
    mode = modes.pop()
    out.mkdir(parents=True, exist_ok=True)
    states = {p.name: train_run(p, device, force, log) for p in plans}
    dev = resolve_device(device or plans[0].cfg.train.device)
    threads = plans[0].cfg.train.threads
    if threads:
        torch.set_num_threads(threads)
    runs = []
    for p in plans:
        summary = evaluate_run(p, dev, which, log)
        st = states[p.name]
        summary.wall_s = st.get("wall_s")
        if st.get("status") == "failed" and not summary.error:
            summary.notes.append(f"{p.name}: training ended with exit code {st.get('returncode')} "
                                 f"(see {p.run / WORK / 'train.log'}); scored with the last checkpoint written")
        runs.append(summary)

    first = plans[0]
    figures = report_figures(first, runs, mode, budget is not None, show)
    for fig in figures:
        report.write_png(fig.data, out / fig.name)

    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    intro = _intro(plans, budget, epochs, sets or [], data, which, dev, threads, load_start, load_end,
                   __version__, platform.processor() or platform.machine())
    notes = [n for r in runs for n in r.notes] + [f"{r.recipe}: {r.error}" for r in runs if r.error]
    notes += [f"{p.name}: its own split differed; trained on {first.name}'s split (data.train_files / "
              "data.val_files)" for p in plans if p.pinned]
    title = "densemed compare: " + ", ".join(p.name for p in plans)
    report.write_markdown(out / "report.md", title, intro, runs, figures, notes)
    report.write_html(out / "report.html", title, intro, runs, figures, notes)
    _write_json({"settings": {"recipes": [str(p.recipe) for p in plans], "sets": plans[0].sets[:-2],
                              "validation": first.val, "checkpoint": which},
                 "runs": [{**{k: v for k, v in asdict(r).items() if k not in ("history", "preds", "run")},
                           "run": str(r.run)} for r in runs]}, out / "results.json")
    head, rows, _ = report.table_rows(runs)
    width = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    keep = [i for i, h in enumerate(head) if h not in ("options", "loss")]
    log("\n" + "  ".join(head[i].ljust(width[i]) for i in keep))
    for row in rows:
        log("  ".join(row[i].ljust(width[i]) for i in keep))
    log(f"\nwrote {out / 'report.md'} and {out / 'report.html'}")
    return 1 if any(r.error or states[r.recipe].get("status") == "failed" for r in runs) else 0


def _intro(plans: list[Plan], budget: float | None, epochs: int | None, sets: list[str], data: str | None,
           which: str, dev: torch.device, threads: int | None, load_start: float | None, load_end: float | None,
           version: str, cpu: str) -> list[str]:
    """The settings lines at the top of the report."""
    first = plans[0]
    t = first.cfg.train
    if budget is not None:
        length = (f"{budget:g} s of training per recipe (`train.time_budget_s`: optimiser steps and periodic "
                  "validation, checked between steps; a final validation follows)")
    elif epochs is not None:
        length = f"{epochs} epochs per recipe (`train.epochs`)"
    else:
        length = f"the recipes' own: {t.epochs} epochs" + (
            f", {t.time_budget_s:g} s budget" if t.time_budget_s is not None else "")
    val = ", ".join(first.val[:12]) + (f", … ({len(first.val)} in all)" if len(first.val) > 12 else "")
    cores = os.cpu_count()
    loads = "" if load_start is None else (f"; load average (1 min) {load_start:.2f} at the start, "
                                           f"{load_end:.2f} at the end, on {cores} CPU cores")
    return [
        f"* Recipes: {', '.join(f'`{p.recipe.name}`' for p in plans)}",
        f"* Data: `{_root(first)}`: {len(first.train)} training / {len(first.val)} validation images "
        f"(validation: {val}), the same split for every recipe",
        f"* Length: {length}",
        f"* Overrides for every recipe: `{' '.join(first.sets[:-2]) or '(none)'}`"
        + (f" (`--data {data}`)" if data else ""),
        f"* Scored: `{which}.pt` of each run"
        + (" (picked by the validation score on these same images: optimistic alike for every network)"
           if which == "best" else "")
        + ", whole images by the recipe's sliding window as `densemed predict`, scores as `densemed evaluate`",
        f"* Machine: {dev.type} ({cpu}), torch threads {threads or torch_threads()}{loads}; "
        f"densemed {version}, {time.strftime('%Y-%m-%d %H:%M')}",
    ]


def torch_threads() -> int:
    """Torch's intra-op thread count (what a run without ``train.threads`` uses)."""
    import torch

    return torch.get_num_threads()


def _cmd_compare(args: argparse.Namespace) -> int:
    return run_compare([Path(r) for r in args.recipes], Path(args.out), args.data, args.budget, args.epochs,
                       args.set, args.force, args.device, args.checkpoint, args.show)


def register(subparsers: Any) -> None:
    """Add ``densemed compare`` to the CLI's subcommands."""
    p = subparsers.add_parser(
        "compare", help="train several recipes on the same split and budget; report.md + report.html",
        description="Train each recipe (own process) on the same data split with the same budget, score the "
                    "validation images with the task's evaluation, write OUT/report.md and a self-contained "
                    "OUT/report.html (table, validation curves, prediction grid, worst cases). A killed compare "
                    "continues where it stopped.",
    )
    p.add_argument("recipes", nargs="+", help="recipe YAML files (configs/*.yaml)")
    p.add_argument("--data", help="data folder for every recipe (overrides data.root)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--budget", type=float, metavar="SECONDS",
                        help="training time per recipe (train.time_budget_s)")
    length.add_argument("--epochs", type=int, metavar="N", help="epochs per recipe (train.epochs)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for every recipe, e.g. train.threads=1 (put it after the recipes)")
    p.add_argument("--out", default="runs/compare", help="runs and the report go here (default runs/compare)")
    p.add_argument("--force", action="store_true", help="retrain recipes whose run folder already holds a run")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps, for training and prediction")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="weights scored (default best)")
    p.add_argument("--show", type=int, default=4, help="validation images in the grid (default 4)")
    p.set_defaults(fn=_cmd_compare)
