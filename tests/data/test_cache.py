"""The preprocessed-case cache: hit, miss, invalidation, bounded open arrays, workers, ``densemed preprocess``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from densemed import config
from densemed.cli import main
from densemed.data.cache import CachedCase, CaseStore, cache_root, write_case
from densemed.data.dataset import Case, PatchDataset, load_cases
from densemed.errors import DensemedError


def _folder(root, n=4, size=(20, 24), seed=0):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size).astype(np.uint8)).save(root / "images" / f"c{i}.png")
        ids = np.zeros(size, np.uint16)
        ids[2:8, 3:9], ids[10:15, 12:20] = 1, 2  # two objects, for instance targets
        Image.fromarray(ids).save(root / "labels" / f"c{i}.png")
    return root


def _cfg(root, cache, *extra):
    # instance ids as labels: the cached case also holds instances.npy
    return config.load(None, [f"data.root={root}", "data.patch_size=[16,16]", f"data.cache_dir={cache}",
                              "data.val_fraction=0", "task=instances", *extra])


def _store(cases):
    return cases[0].store


def test_first_load_builds_then_hits_with_the_arrays_of_an_uncached_load(tmp_path):
    root = _folder(tmp_path / "data")
    cfg = _cfg(root, tmp_path / "cache")
    first, _ = load_cases(cfg)
    assert all(isinstance(c, CachedCase) for c in first)
    assert (_store(first).built, _store(first).reused) == (4, 0)
    again, _ = load_cases(_cfg(root, tmp_path / "cache"))
    assert (_store(again).built, _store(again).reused) == (0, 4)
    plain, _ = load_cases(_cfg(root, "memory"))
    assert all(isinstance(c, Case) for c in plain)
    for c, p in zip(again, plain):
        assert c.name == p.name
        np.testing.assert_array_equal(c.image, p.image)
        np.testing.assert_array_equal(c.label, p.label)
        assert c.label.dtype == np.int64 and c.image.dtype == np.float32
        np.testing.assert_array_equal(c.maps["_fg_index"], np.flatnonzero(p.label > 0))


def test_changed_file_or_target_parameters_miss_sampling_keys_hit(tmp_path):
    root = _folder(tmp_path / "data")
    inst = ["task={name: instances, targets: {contour: {name: contour, thickness: 1}}}"]
    built = _store(load_cases(_cfg(root, tmp_path / "cache", *inst))[0]).built
    assert built == 4
    # sampling and loader keys do not shape a case: all hits
    store = _store(load_cases(_cfg(root, tmp_path / "cache", *inst, "data.batch_size=7", "data.num_workers=2",
                                   "data.samples_per_epoch=3", "data.patch_size=[8,8]"))[0])
    assert (store.built, store.reused) == (0, 4)
    # a target parameter changes every case
    thick = ["task={name: instances, targets: {contour: {name: contour, thickness: 2}}}"]
    cases = load_cases(_cfg(root, tmp_path / "cache", *thick))[0]
    assert _store(cases).built == 4
    thin = load_cases(_cfg(root, tmp_path / "cache", *inst))[0]
    assert cases[0].maps["contour"].sum() > thin[0].maps["contour"].sum()  # thicker contours
    # a normalisation parameter changes every case
    assert _store(load_cases(_cfg(root, tmp_path / "cache", *inst, "data.normalize=none"))[0]).built == 4
    # one rewritten file changes its case only, and the cache serves the new pixels
    img = np.full((20, 24), 7, np.uint8)
    img[0, 0] = 9
    Image.fromarray(img).save(root / "images" / "c2.png")
    os.utime(root / "images" / "c2.png", ns=(1, 1))  # another mtime even on a coarse clock
    cases = load_cases(_cfg(root, tmp_path / "cache", *inst, "data.normalize=none"))[0]
    assert (_store(cases).built, _store(cases).reused) == (1, 3)
    assert cases[2].image[0, 0, 0] == 9 and cases[2].image[0, 1, 1] == 7


def test_open_arrays_stay_within_cache_mb(tmp_path):
    root = _folder(tmp_path / "data", n=6)
    # one case: image float32 + label int64 + instance ids int32 (20 x 24 each) + foreground indices
    # (6 x 6 + 5 x 8 = 76 pixels) int64 = 1920 + 3840 + 1920 + 608 = 8288 bytes, in 4 arrays
    per_case = 20 * 24 * 4 + 20 * 24 * 8 + 20 * 24 * 4 + 76 * 8
    cases, _ = load_cases(_cfg(root, tmp_path / "cache", f"data.cache_mb={2.5 * per_case / 2**20}"))
    store = _store(cases)
    assert store.held_arrays() <= 2 * 4
    ds = PatchDataset(cases, [16, 16], 0.5, 60, seed=0)
    for i in range(len(ds)):
        ds[i]
        assert store.held_arrays() <= 2 * 4 and store.held_bytes() <= 2 * per_case
    assert store.held_bytes() == 2 * per_case
    assert store.opened > len(cases)  # cases were closed and mapped again


def test_a_case_larger_than_the_budget_is_held_alone(tmp_path):
    root = _folder(tmp_path / "data", n=2)
    cases, _ = load_cases(_cfg(root, tmp_path / "cache", "data.cache_mb=0.000001"))
    for c in cases + cases:
        assert c.image.shape == (1, 20, 24)
        assert _store(cases).held_arrays() == 4


def test_a_failed_write_leaves_no_case_folder(tmp_path, monkeypatch):
    case = Case("c", np.zeros((1, 4, 4), np.float32), np.zeros((4, 4), np.int64))
    monkeypatch.setattr("pickle.dumps", lambda obj: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_case(tmp_path / "cases" / "k", case, {"name": "c"})
    assert list((tmp_path / "cases").iterdir()) == []


def test_workers_draw_the_same_patches_as_the_main_process(tmp_path):
    root = _folder(tmp_path / "data", n=4)
    cases, _ = load_cases(_cfg(root, tmp_path / "cache", "data.cache_mb=0.01"))
    ds = PatchDataset(cases, [16, 16], 0.5, 12, seed=4)
    ds.set_epoch(3)
    main_proc = [b["image"] for b in DataLoader(ds, batch_size=4, num_workers=0)]
    workers = [b["image"] for b in DataLoader(ds, batch_size=4, num_workers=2)]
    for a, b in zip(main_proc, workers):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len({tuple(x.flatten()[:8].tolist()) for b in workers for x in b}) > 6  # no duplicated draws


def test_cache_root_default_env_and_off(tmp_path, monkeypatch):
    assert cache_root(config.DataConfig()) is None  # the disk cache is opt-in
    d = config.DataConfig(cache_dir=None)
    monkeypatch.setenv("DENSEMED_CACHE", str(tmp_path / "env"))
    assert cache_root(d) == tmp_path / "env"
    monkeypatch.delenv("DENSEMED_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(d) == tmp_path / "xdg" / "densemed"
    d.cache_dir = "memory"
    assert cache_root(d) is None
    with pytest.raises(DensemedError, match="data.cache_mb"):
        CaseStore(0)


def test_preprocess_command_fills_the_cache_once(tmp_path, capsys):
    root = _folder(tmp_path / "data", n=3)
    recipe = tmp_path / "r.yaml"
    cache = tmp_path / "cache"
    recipe.write_text(f"task: instances\ndata: {{root: {root}, cache_dir: {cache}, patch_size: [16, 16]}}\n")
    assert main(["preprocess", str(recipe)]) == 0
    assert "3 cases" in capsys.readouterr().out
    assert main(["preprocess", str(recipe)]) == 0
    assert "0 preprocessed, 3 already cached" in capsys.readouterr().out
    assert main(["preprocess", str(recipe), "--set", "data.cache_dir=memory"]) == 2
