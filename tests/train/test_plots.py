import json

import numpy as np
import pytest
from PIL import Image

from densemed.errors import DensemedError
from densemed.train.plots import DPI, FIGSIZE, plot_curves, read_history


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_plot_curves_writes_png_of_expected_pixel_size(tmp_path):
    recs = []
    for e in range(5):
        r = {"epoch": e, "train_loss": 1.0 / (e + 1), "lr": 1e-3, "seconds": 1.0}
        if e % 2 == 1 or e == 4:  # validation every other epoch, as with train.val_every = 2
            r.update(val_loss=1.2 / (e + 1), val_dice=0.2 * e, val_dice_per_class=[0.2 * e, 0.1 * e])
        recs.append(r)
    _write(tmp_path / "metrics.jsonl", recs)
    out = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "sub" / "curves.png")
    with Image.open(out) as im:
        assert im.size == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI)) == (1000, 400)
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 10  # something was drawn, not a blank canvas
    assert not list(tmp_path.glob("sub/.curves*"))  # the temporary file was renamed away


def test_plot_curves_psnr_runs_and_empty_history(tmp_path):
    _write(tmp_path / "m.jsonl", [{"epoch": 0, "train_loss": 0.5, "val_loss": 0.4, "val_psnr": 28.0}])
    with Image.open(plot_curves(tmp_path / "m.jsonl", tmp_path / "c.png")) as im:
        assert im.size == (1000, 400)
    (tmp_path / "empty.jsonl").write_text("")
    with Image.open(plot_curves(tmp_path / "empty.jsonl", tmp_path / "e.png")) as im:
        assert im.size == (1000, 400)


def test_bad_metrics_file_names_the_file(tmp_path):
    with pytest.raises(DensemedError, match="metrics file not found"):
        read_history(tmp_path / "nope.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"epoch": 0}\n{not json\n')
    with pytest.raises(DensemedError, match=r"bad\.jsonl: line 2 is not JSON"):
        plot_curves(tmp_path / "bad.jsonl", tmp_path / "c.png")
