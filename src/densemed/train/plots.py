"""Training curves from a run's ``metrics.jsonl``: loss per epoch and validation score per epoch.

Multi-task runs also draw each head's loss term (``train_terms`` / ``val_terms``) as thin lines.

The figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, so it never
touches pyplot's global state or the user's backend (safe inside the training loop and in
threads), and written atomically (temporary file, then rename) because the loop rewrites it
after every epoch and a kill must not leave a broken PNG.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from densemed.errors import DensemedError
from densemed.typing import PathType

#: Figure size in inches and resolution: the PNG is 1000 x 400 pixels.
FIGSIZE = (10.0, 4.0)
DPI = 100


def read_history(metrics_jsonl_path: PathType) -> list[dict[str, Any]]:
    """The per-epoch records of a ``metrics.jsonl`` (one JSON object per line; blank lines skipped)."""
    path = Path(metrics_jsonl_path)
    if not path.is_file():
        raise DensemedError(f"{path}: metrics file not found")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DensemedError(f"{path}: line {n} is not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise DensemedError(f"{path}: line {n} is not a JSON object")
        records.append(rec)
    return records


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs counted from 1, values) of the records that hold ``key`` (validation may be sparse)."""
    pts = [(int(r.get("epoch", i)) + 1, float(r[key])) for i, r in enumerate(records) if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(metrics_jsonl_path: PathType, out_png: PathType) -> Path:
    """Draw train/val loss (left) and the validation score (right) per epoch into a PNG.

    The right panel shows ``val_dice`` (and ``val_dice_per_class`` as thin lines when there are
    several classes), or ``val_psnr`` for super-resolution runs. The PNG is
    ``FIGSIZE * DPI`` = 1000 x 400 pixels.

    Args:
        metrics_jsonl_path: the run's ``metrics.jsonl`` (``epoch``, ``train_loss``, ``val_loss``,
            ``val_dice``, ... per line, as written by :class:`densemed.train.Trainer`).
        out_png: where to write the figure.

    Returns:
        The written path.

    Raises:
        DensemedError: the metrics file is missing or holds a line that is not a JSON object.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a no-op if pyplot already picked one
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_history(metrics_jsonl_path)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax_loss, ax_score = fig.subplots(1, 2)

    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        x, y = _series(records, key)
        if x:
            ax_loss.plot(x, y, style, markersize=3, label=key.replace("_", " "))
    # per-head terms of multi-task losses (thin lines), so a user sees which head fails
    for group, style in (("train_terms", "--"), ("val_terms", ":")):
        names = sorted({k for r in records for k in (r.get(group) or {})})
        for name in names:
            pts = [(int(r.get("epoch", i)) + 1, float(r[group][name]))
                   for i, r in enumerate(records) if name in (r.get(group) or {})]
            ax_loss.plot([p[0] for p in pts], [p[1] for p in pts], style, linewidth=1,
                         label=f"{group.split('_')[0]} {name}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")

    score_key = "val_dice" if any("val_dice" in r for r in records) else "val_psnr"
    x, y = _series(records, score_key)
    if x:
        ax_score.plot(x, y, "-o", color="C2", markersize=3, linewidth=2, label=score_key.replace("_", " "))
    if score_key == "val_dice":
        per_class = [(int(r.get("epoch", i)) + 1, r["val_dice_per_class"])
                     for i, r in enumerate(records) if r.get("val_dice_per_class")]
        n_cls = len(per_class[-1][1]) if per_class else 0
        if n_cls > 1:
            for c in range(n_cls):
                pts = [(e, v[c]) for e, v in per_class if len(v) == n_cls]
                ax_score.plot([p[0] for p in pts], [p[1] for p in pts], "--", linewidth=1,
                              label=f"class {c + 1}")
        ax_score.set_ylim(0.0, 1.0)
    ax_score.set(xlabel="epoch", ylabel=score_key.replace("val_", ""), title=f"validation {score_key[4:]}")

    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, format="png")  # no bbox_inches="tight": the pixel size stays FIGSIZE * DPI
        os.replace(tmp, out)
    except OSError as exc:  # a full disk, a read-only folder: one line naming curves.png
        from densemed.data.io import write_error

        raise write_error(out, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
