"""``data.extra_roots``: extra training folders mixed into every epoch by a share of the patches."""

import numpy as np
import pytest
from PIL import Image

from densemed import config
from densemed.data.dataset import PatchDataset, load_cases
from densemed.errors import DensemedError


def _folder(root, stems, value):
    """Pairs whose images are constant ``value`` (so a patch tells which folder it came from)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for stem in stems:
        img = np.full((16, 16), value, np.uint8)
        img[0, 0] = value + 1  # not flat, so z-scoring keeps a sign: real patches < 0 elsewhere
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        lab = np.zeros((16, 16), np.uint8)
        lab[4:8, 4:8] = 255
        Image.fromarray(lab).save(root / "labels" / f"{stem}.png")


def _cfg(tmp_path, extra):
    return config.load(None, [f"data.root={tmp_path / 'real'}", "data.val_files=[r2]", "data.patch_size=[8,8]",
                              "data.normalize=none", f"data.extra_roots={extra}",
                              f"data.cache_dir={tmp_path / 'cache'}"])


def test_extra_folders_join_the_training_split_only_and_carry_their_share(tmp_path):
    _folder(tmp_path / "real", ["r0", "r1", "r2"], 10)
    _folder(tmp_path / "syn", ["s0", "s1", "s2", "s3"], 200)
    train, val = load_cases(_cfg(tmp_path, f"[{{root: {tmp_path / 'syn'}, share: 0.25}}]"))
    assert [c.name for c in val] == ["r2"]
    assert [c.name for c in train] == ["r0", "r1", "syn/s0", "syn/s1", "syn/s2", "syn/s3"]
    assert [c.pool for c in train] == [None, None] + [(str(tmp_path / "syn"), 0.25)] * 4


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_patches_come_from_an_extra_folder_at_its_share(tmp_path, share):
    _folder(tmp_path / "real", ["r0", "r1", "r2"], 10)
    _folder(tmp_path / "syn", ["s0", "s1", "s2", "s3"], 200)
    train, _ = load_cases(_cfg(tmp_path, f"[{{root: {tmp_path / 'syn'}, share: {share}}}]"))
    ds = PatchDataset(train, [8, 8], 0.0, 2000, seed=3)
    from_syn = np.mean([float(ds[i]["image"].max()) >= 200 for i in range(len(ds))])
    # 2000 Bernoulli(share) draws: standard deviation <= 0.011, so 0.04 is > 3.5 sigma
    assert from_syn == pytest.approx(share, abs=0.04)


def test_without_extra_roots_the_sampling_is_unchanged(tmp_path):
    _folder(tmp_path / "real", ["r0", "r1", "r2", "r3"], 10)
    cfg = config.load(None, [f"data.root={tmp_path / 'real'}", "data.val_fraction=0", "data.patch_size=[8,8]",
                             "data.cache_dir='off'"])
    train, _ = load_cases(cfg)
    for c, k in zip(train, range(4)):  # tell the cases apart
        c.image = c.image + 100 * k
    ds = PatchDataset(train, [8, 8], 0.0, 50, seed=5)
    for i in range(50):  # the documented draw: case index first from default_rng([seed, epoch, i])
        k = int(np.random.default_rng([5, 0, i]).integers(4))
        assert 100 * k - 50 < float(ds[i]["image"].mean()) < 100 * k + 50


@pytest.mark.parametrize("extra, message", [
    ("[{root: X, share: 0.7}, {root: X, share: 0.6}]", "add up to 1.3"),
    ("[{root: X, share: 0}]", r"extra_roots\[0\].share"),
    ("[{root: X}]", r"extra_roots\[0\]: must be a mapping"),
    ("[{root: X, share: 0.5, weight: 2}]", "unknown keys"),
    ("[{root: MISSING, share: 0.5}]", "folder not found"),
    ("{root: X, share: 0.5}", "list"),
])
def test_bad_extra_roots_name_the_key(tmp_path, extra, message):
    _folder(tmp_path / "real", ["r0", "r1", "r2"], 10)
    _folder(tmp_path / "syn", ["s0"], 200)
    extra = extra.replace("MISSING", str(tmp_path / "nope")).replace("X", str(tmp_path / "syn"))
    with pytest.raises(DensemedError, match=message):
        load_cases(_cfg(tmp_path, extra))
