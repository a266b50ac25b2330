"""The report of ``densemed compare``: figures (PNG) and two documents, ``report.md`` and ``report.html``.

``report.html`` is self-contained: every figure is embedded as a ``data:image/png;base64`` URI
and the page loads no script, font or stylesheet from anywhere, so it opens from a mail
attachment or a copied folder with no server and no network. ``report.md`` shows the same
tables and links the same figures, written beside it as PNG files.

Figures:

* **curves** (:func:`curves_figure`): every run's validation score (left) and validation loss
  (right) from its ``metrics.jsonl``, against training time (seconds, for time-budgeted
  comparisons) or epochs; 1000 x 400 pixels.
* **grid** (:func:`grid_figure`): one row per shown validation image, columns image, truth, then
  one prediction per network with its score on that image. Label predictions are blended over
  the image with the palette of :mod:`densemed.infer.overlay` (alpha 0.5); restored images
  (image tasks) are shown as they are. Volumes show the slice with the most true foreground
  (:func:`densemed.infer.overlay.pick_slice`; the middle slice when there is none), the same slice
  for every network. Each cell is scaled to fit ``CELL`` pixels: enlarged by an integer factor
  (nearest neighbour, labels stay crisp) or reduced by box filtering.
* **worst case** per network: the same row layout for the image on which that network scored
  lowest (highest for lower-is-better headline metrics).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Longest side of a grid cell in pixels.
CELL = 256
#: Caption strip above each cell, header row, gap between cells (pixels).
CAPTION = 20
GAP = 4
#: Metrics where lower is better (surface distances, shape-descriptor error).
LOWER_IS_BETTER = frozenset({"hd95", "asd", "object_hausdorff", "descriptor_error"})
#: Column titles of metric names.
METRIC_TITLES = {
    "dice": "Dice", "iou": "IoU", "precision": "precision", "recall": "recall", "hd95": "HD95", "asd": "ASD",
    "object_f1": "object F1", "object_dice": "object Dice", "object_hausdorff": "object Hausdorff",
    "descriptor_error": "descriptor error", "aji": "AJI", "pq": "PQ", "psnr": "PSNR (dB)", "ssim": "SSIM",
}


@dataclass
class RunSummary:
    """One compared recipe: its run, its scores and what the figures need.

    ``metrics`` are the task's means over the validation images (``None`` where undefined);
    ``per_image`` the headline metric per validation image (stem -> value); ``preds`` the
    predicted file per stem.
    """

    recipe: str
    run: Path
    network: str = ""
    options: str = ""
    loss: str = ""
    params: int | None = None
    epochs: int = 0
    steps: int | None = None
    scored_epoch: int | None = None
    train_s: float | None = None
    wall_s: float | None = None
    predict_s: float | None = None
    task: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)
    per_class: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: names of the classes of ``per_class`` (the recipe's ``data.class_names``); unnamed ones are absent
    class_names: dict[str, str] = field(default_factory=dict)
    headline: str = ""
    per_image: dict[str, float | None] = field(default_factory=dict)
    preds: dict[str, Path] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Shown:
    """One validation image of the grid: the image, the truth and each recipe's prediction, as displayed.

    ``image`` is a 2D grey ``(H, W)`` or colour ``(H, W, 3)`` slice; ``truth`` and ``preds`` are
    ``(H, W)`` label maps (``label`` mode) or grey images (``image`` mode).
    """

    name: str
    image: np.ndarray
    truth: np.ndarray
    preds: dict[str, np.ndarray]


# -- figures ------------------------------------------------------------------------------------------
def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def write_png(data: bytes, path: Path) -> Path:
    """Write PNG bytes atomically (a killed compare never leaves half a figure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _x_values(history: list[dict[str, Any]], by_time: bool) -> list[float]:
    """Per-record x: cumulative seconds (training + periodic validation) or the epoch counted from 1."""
    if not by_time:
        return [int(r.get("epoch", i)) + 1 for i, r in enumerate(history)]
    return list(np.cumsum([float(r.get("seconds", 0.0)) for r in history]))


def score_name(histories: Sequence[list[dict[str, Any]]]) -> tuple[str, str]:
    """``(key, axis label)`` of the validation score the runs log (Dice, PSNR, else the generic score)."""
    keys = {k for h in histories for r in h for k in r}
    if "val_dice" in keys:
        return "val_dice", "validation Dice"
    if "val_psnr" in keys:
        return "val_psnr", "validation PSNR (dB)"
    return "val_score", "validation score"


def curves_figure(runs: Sequence[RunSummary], by_time: bool) -> bytes:
    """Validation score and loss of every run against time or epochs, as PNG bytes (1000 x 400 pixels)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax_score, ax_loss = fig.subplots(1, 2)
    key, label = score_name([r.history for r in runs])
    xlabel = "training time (s, including periodic validation)" if by_time else "epoch"
    for i, run in enumerate(runs):
        xs = _x_values(run.history, by_time)
        for ax, k in ((ax_score, key), (ax_loss, "val_loss")):
            pts = [(x, float(r[k])) for x, r in zip(xs, run.history) if r.get(k) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=f"C{i}", markersize=3,
                        linewidth=1.5, label=run.recipe)
    ax_score.set(xlabel=xlabel, ylabel=label, title=label)
    if key == "val_dice":
        ax_score.set_ylim(0.0, 1.0)
    if not by_time:
        from matplotlib.ticker import MaxNLocator

        for ax in (ax_score, ax_loss):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set(xlabel=xlabel, ylabel="loss", title="validation loss (fixed patches)")
    for ax in (ax_score, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no validation records", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _font(size: int = 13) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _fit(rgb: np.ndarray, cell: int) -> np.ndarray:
    """Scale ``(H, W, 3)`` float to fit ``cell``: integer nearest enlargement, or box reduction."""
    from PIL import Image

    h, w = rgb.shape[:2]
    if max(h, w) <= cell:
        s = max(1, cell // max(h, w))
        return np.kron(rgb, np.ones((s, s, 1), dtype=rgb.dtype)) if s > 1 else rgb
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pil = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    return np.asarray(pil.resize(size, Image.Resampling.BOX), dtype=np.float32)


def render_cell(image: np.ndarray, overlay: np.ndarray | None, mode: str) -> np.ndarray:
    """One displayed cell ``(H, W, 3)`` float in [0, 255].

    ``label`` mode: ``overlay`` (a label map, or None for the bare image) blended over ``image``.
    ``image`` mode: ``overlay`` (an image, or None for ``image`` itself) shown in grey.
    """
    from densemed.infer.overlay import _blend, _grey

    if mode == "image":
        return _grey(image if overlay is None else overlay)
    base = _grey(image)
    return base if overlay is None else _blend(base, overlay)


def row_figure(cells: Sequence[np.ndarray], captions: Sequence[str], header: Sequence[str] | None = None,
               cell: int = CELL) -> np.ndarray:
    """Cells side by side, each with a caption above; optional header row above the captions.

    Every cell gets a column ``cell`` pixels wide (rows of a grid line up) and is scaled by
    :func:`_fit`; the row is as high as its tallest cell plus the caption strips.

    Shape:
        cells: ``(H_i, W_i, 3)`` floats in [0, 255]; returns ``(top + max_i h_i, n * cell + (n - 1) * GAP, 3)``
        uint8, with ``top`` one or two caption strips.

    Example:
        >>> row = row_figure([np.zeros((10, 12, 3))] * 2, ["a", "b"])
        >>> print(row.shape)  # 12 px enlarged 21x to 252 px; 10 px -> 210 px + a 20 px caption
        (230, 516, 3)
    """
    from PIL import Image, ImageDraw

    fitted = [_fit(c, cell) for c in cells]
    h = max(c.shape[0] for c in fitted)
    widths = [cell] * len(fitted)  # fixed columns, so that the rows of a grid line up
    top = (CAPTION if header else 0) + CAPTION
    canvas = np.full((top + h, sum(widths) + GAP * (len(fitted) - 1), 3), 255, dtype=np.uint8)
    x0s = np.concatenate([[0], np.cumsum([w + GAP for w in widths])])[:-1]
    for c, x0 in zip(fitted, x0s):
        canvas[top : top + c.shape[0], x0 : x0 + c.shape[1]] = np.clip(np.round(c), 0, 255).astype(np.uint8)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    font, bold = _font(13), _font(14)
    for i, x0 in enumerate(x0s):
        if header:
            draw.text((int(x0) + 3, 2), _clip_text(draw, header[i], widths[i] - 6, bold), fill=(0, 0, 0), font=bold)
        draw.text((int(x0) + 3, top - CAPTION + 3), _clip_text(draw, captions[i], widths[i] - 6, font),
                  fill=(40, 40, 40), font=font)
    return np.asarray(pil)


def _clip_text(draw: Any, text: str, width: int, font: Any) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of possibly different widths stacked with a gap, padded white on the right."""
    width = max(r.shape[1] for r in rows)
    parts = []
    for i, r in enumerate(rows):
        if i:
            parts.append(np.full((2 * GAP, width, 3), 255, np.uint8))
        parts.append(np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=0)


def fmt_value(metric: str, value: float | None) -> str:
    """A metric value for tables and captions (PSNR and distances with 2 decimals, scores with 4)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    digits = 2 if metric in LOWER_IS_BETTER or metric == "psnr" else 4
    return f"{value:.{digits}f}"


def grid_figure(shown: Sequence[Shown], runs: Sequence[RunSummary], mode: str) -> bytes:
    """The grid of validation images x networks as PNG bytes (see the module docstring)."""
    rows = []
    for k, s in enumerate(shown):
        cells = [render_cell(s.image, None, mode), render_cell(s.image, s.truth, mode)]
        captions = [s.name, "truth"]
        for run in runs:
            pred = s.preds.get(run.recipe)
            cells.append(render_cell(s.image, pred, mode) if pred is not None else np.full_like(cells[0], 230))
            value = run.per_image.get(s.name)
            captions.append(f"{METRIC_TITLES.get(run.headline, run.headline)} {fmt_value(run.headline, value)}")
        header = (["image", "truth"] + [r.recipe for r in runs]) if k == 0 else None
        rows.append(row_figure(cells, captions, header))
    return png_bytes(stack_rows(rows))


def worst_figure(s: Shown, run: RunSummary, mode: str) -> bytes:
    """Image | truth | prediction of one network's worst validation image, as PNG bytes."""
    pred = s.preds[run.recipe]
    value = fmt_value(run.headline, run.per_image.get(s.name))
    cells = [render_cell(s.image, None, mode), render_cell(s.image, s.truth, mode), render_cell(s.image, pred, mode)]
    captions = [s.name, "truth", f"{METRIC_TITLES.get(run.headline, run.headline)} {value}"]
    return png_bytes(row_figure(cells, captions, ["image", "truth", run.recipe]))


# -- tables -------------------------------------------------------------------------------------------
def metric_columns(runs: Sequence[RunSummary]) -> list[str]:
    """The union of the runs' metrics, in the order they first appear."""
    cols: list[str] = []
    for r in runs:
        cols += [m for m in r.metrics if m not in cols]
    return cols


def best_per_column(runs: Sequence[RunSummary], cols: Sequence[str]) -> dict[str, str]:
    """Recipe holding the best value of each metric column with two values or more (ties: the first)."""
    best = {}
    for m in cols:
        vals = [(r.metrics.get(m), r.recipe) for r in runs if r.metrics.get(m) is not None]
        if len(vals) > 1:  # nothing to single out in a column with one value
            pick = min if m in LOWER_IS_BETTER else max
            best[m] = pick(vals, key=lambda v: v[0])[1]
    return best


def _num(v: float | int | None, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,}" if isinstance(v, int) else f"{v:.{digits}f}"


def table_rows(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[str]], list[str]]:
    """``(header, rows, metric columns)`` of the main table as text cells."""
    cols = metric_columns(runs)
    head = ["recipe", "network", "options", "loss", "parameters", "epochs", "steps", "train s", "scored epoch",
            "predict s"]
    head += [METRIC_TITLES.get(m, m) for m in cols]
    rows = []
    for r in runs:
        if r.error:
            rows.append([r.recipe, r.network or "–", r.options or "–", r.loss or "–", _num(r.params), _num(r.epochs),
                         _num(r.steps), _num(r.train_s), "–", "–"] + ["–"] * len(cols))
            continue
        rows.append([r.recipe, r.network, r.options, r.loss, _num(r.params), _num(r.epochs), _num(r.steps),
                     _num(r.train_s), _num(r.scored_epoch), _num(r.predict_s)]
                    + [fmt_value(m, r.metrics.get(m)) for m in cols])
    return head, rows, cols


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(head))]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def class_heading(runs: Sequence[RunSummary], cls: str) -> str:
    """How a class is named in the per-class table: its name in the runs' recipes, else its index.

    Runs whose recipes name the class differently show every name (``a/b``); runs without a name
    for it do not count.
    """
    names = list(dict.fromkeys(r.class_names[cls] for r in runs if cls in r.class_names))
    return "/".join(names) if names else cls


def per_class_table(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[str]]] | None:
    """Per-class Dice and HD95 when some run scores more than one class, else None.

    Columns are headed by the class names of the recipes (``data.class_names``) where they give
    them, else by the class indices.
    """
    multi = [r for r in runs if len(r.per_class) > 1]
    if not multi:
        return None
    classes = sorted({c for r in multi for c in r.per_class}, key=lambda c: int(c) if c.isdigit() else c)
    label = {c: class_heading(multi, c) for c in classes}
    head = ["recipe"] + [f"Dice {label[c]}" for c in classes] + [f"HD95 {label[c]}" for c in classes]
    rows = [[r.recipe] + [fmt_value("dice", r.per_class.get(c, {}).get("dice")) for c in classes]
            + [fmt_value("hd95", r.per_class.get(c, {}).get("hd95")) for c in classes] for r in multi]
    return head, rows


# -- documents ----------------------------------------------------------------------------------------
@dataclass
class Figure:
    """A figure of the report: title, PNG file name in the report folder, PNG bytes, caption."""

    title: str
    name: str
    data: bytes
    caption: str = ""


def write_markdown(path: Path, title: str, intro: Sequence[str], runs: Sequence[RunSummary],
                   figures: Sequence[Figure], notes: Sequence[str]) -> Path:
    """``report.md``: the settings, the tables, the figures (linked PNG files) and notes."""
    head, rows, _ = table_rows(runs)
    parts = [f"# {title}", "", *intro, "", "## Results", "", _md_table(head, rows, 4), ""]
    pc = per_class_table(runs)
    if pc:
        parts += ["Per class (mean over the validation images):", "", _md_table(pc[0], pc[1], 1), ""]
    for fig in figures:
        parts += [f"## {fig.title}" if fig.name in ("curves.png", "grid.png") else f"### {fig.title}", "",
                  f"![{fig.title}]({fig.name})", ""]
        if fig.caption:
            parts += [fig.caption, ""]
    if notes:
        parts += ["## Notes", "", *[f"* {n}" for n in notes], ""]
    path.write_text("\n".join(parts))
    return path


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f2f2f2; white-space: nowrap; }
div.wide { overflow-x: auto; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #eef7ee; }
tr.error td { color: #a00; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
ul.settings li, ul.notes li { margin: 0.15em 0; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _inline_md(text: str) -> str:
    """Escape HTML, then turn `code` spans into <code> (the only markup the intro lines use)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_html(path: Path, title: str, intro: Sequence[str], runs: Sequence[RunSummary],
               figures: Sequence[Figure], notes: Sequence[str]) -> Path:
    """``report.html``: the same content as the Markdown, self-contained (figures as data URIs)."""
    head, rows, cols = table_rows(runs)
    best = best_per_column(runs, cols)
    n_fixed = len(head) - len(cols)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", '<ul class="settings">']
    out += [f"<li>{_inline_md(line.removeprefix('* '))}</li>" for line in intro if line.strip()]
    out += ["</ul>", "<h2>Results</h2>", '<div class="wide"><table><thead><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out += ["</tr></thead><tbody>"]
    for run, row in zip(runs, rows):
        out.append('<tr class="error">' if run.error else "<tr>")
        for i, cell in enumerate(row):
            classes = ["num"] if i >= 4 else []
            if i >= n_fixed and best.get(cols[i - n_fixed]) == run.recipe:
                classes.append("best")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f"<td{cls}>{html.escape(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    pc = per_class_table(runs)
    if pc:
        out += ["<p>Per class (mean over the validation images):</p>", "<table><thead><tr>"]
        out += [f"<th>{html.escape(h)}</th>" for h in pc[0]] + ["</tr></thead><tbody>"]
        for row in pc[1]:
            out.append("<tr>" + "".join(f'<td{" class=num" if i else ""}>{html.escape(c)}</td>'
                                        for i, c in enumerate(row)) + "</tr>")
        out.append("</tbody></table>")
    for fig in figures:
        tag = "h2" if fig.name in ("curves.png", "grid.png") else "h3"
        out += [f"<{tag}>{html.escape(fig.title)}</{tag}>", "<figure>",
                f'<img src="{data_uri(fig.data)}" alt="{html.escape(fig.title)}">']
        if fig.caption:
            out.append(f"<figcaption>{_inline_md(fig.caption)}</figcaption>")
        out.append("</figure>")
    if notes:
        out += ["<h2>Notes</h2>", '<ul class="notes">'] + [f"<li>{_inline_md(n)}</li>" for n in notes] + ["</ul>"]
    out.append("</body></html>")
    path.write_text("\n".join(out))
    return path
