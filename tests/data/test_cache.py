"""The preprocessed-case cache: hit, miss, invalidation, bounded open arrays, workers, ``densemed preprocess``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from densemed import config
from densemed.cli import main
from densemed.data.cache import CachedCase, CaseStore, cache_root, open_case, write_case
from densemed.data.dataset import Case, PatchDataset, fixed_patches, load_cases
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
    d = config.DataConfig()
    assert d.cache_dir is None  # the disk cache is on by default
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


# -- several processes at once, killed writers, open files -------------------------------------------------------
def _fork():
    """The fork context (children inherit the test's imports and monkeypatches); skips where there is none."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("needs the fork start method")
    return mp.get_context("fork")


def _load_in_child(root, cache, barrier, queue, pid=None, save_delay=0.0):
    """Child: load every case of ``root`` through ``cache``; puts (image sums, label sums, built) or the error."""
    try:
        import time

        if pid is not None:  # the same pid in every child's cache code, as in two containers sharing a cache
            import types

            import densemed.data.cache as cache_module

            cache_module.os = types.SimpleNamespace(**{**vars(os), "getpid": lambda: pid})
        if save_delay:  # slow writes: the writers overlap for certain
            save = np.save
            np.save = lambda *a, **k: (time.sleep(save_delay), save(*a, **k))[1]
        cfg = _cfg(root, cache)
        barrier.wait(timeout=60)
        cases, _ = load_cases(cfg)
        queue.put(([float(np.asarray(c.image, np.float64).sum()) for c in cases],
                   [int(np.asarray(c.label).sum()) for c in cases], _store(cases).built))
    except BaseException as exc:  # reported to the test, which fails with it
        queue.put(f"{type(exc).__name__}: {exc}")


def _run_children(ctx, n, target, args):
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args[:2], barrier, queue, *args[2:])) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return results


@pytest.mark.parametrize("same_pid", [False, True], ids=["pids", "same-pid"])
def test_two_processes_filling_one_cache_at_once_read_identical_arrays(tmp_path, same_pid):
    ctx = _fork()
    root = _folder(tmp_path / "data", n=5)
    cache = tmp_path / "cache"
    results = _run_children(ctx, 2, _load_in_child, (root, cache, 4242 if same_pid else None, 0.01))
    assert all(not isinstance(r, str) for r in results), results
    # the arrays each process reads are those of a load without the cache
    plain, _ = load_cases(_cfg(root, "memory"))
    want = ([float(c.image.astype(np.float64).sum()) for c in plain], [int(c.label.sum()) for c in plain])
    assert [int(c.label.sum()) for c in plain] == [6 * 6 + 5 * 8] * 5  # foreground of the two objects of _folder
    for images, labels, _ in results:
        np.testing.assert_allclose(images, want[0], rtol=1e-6)
        assert labels == want[1]
    assert sum(r[2] for r in results) >= 5  # every case built at least once, by one process or both
    # five complete case folders, no temporary folder left behind
    entries = sorted(p.name for p in (cache / "cases").iterdir())
    assert len(entries) == 5 and not any(e.startswith(".") for e in entries)
    again, _ = load_cases(_cfg(root, cache))
    assert (_store(again).built, _store(again).reused) == (0, 5)


def test_a_finished_rename_onto_an_existing_case_keeps_the_existing_one(tmp_path):
    folder = tmp_path / "cases" / "k"
    first = Case("c", np.full((1, 4, 4), 3.0, np.float32), np.ones((4, 4), np.int64))
    second = Case("c", np.full((1, 4, 4), 5.0, np.float32), np.ones((4, 4), np.int64))
    write_case(folder, first, {"name": "c"})
    info = write_case(folder, second, {"name": "c"})  # another process finished first: no error
    assert info["files"]["image.npy"] == 128 + 16 * 4  # the .npy header and 16 float32 of the first write
    case = open_case(folder, CaseStore(1))
    assert float(case.image.sum()) == 16 * 3.0
    assert sorted(p.name for p in folder.parent.iterdir()) == ["k"]


def test_stale_temporary_folders_of_killed_writers_do_not_block(tmp_path):
    ctx = _fork()
    root = _folder(tmp_path / "data", n=3)
    cache = tmp_path / "cache"

    def killed_writer():
        import signal

        save = np.save

        def save_then_die(path, arr, *a, **k):  # the first file written, then SIGKILL mid-case
            save(path, arr, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)

        np.save = save_then_die
        load_cases(_cfg(root, cache))

    p = ctx.Process(target=killed_writer)
    p.start()
    p.join(60)
    assert p.exitcode == -9
    left = [e for e in (cache / "cases").iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".") and [f.name for f in left[0].iterdir()] == ["image.npy"]
    old = cache / "cases" / ".0123.tmp77.abc"  # an older killed writer's folder, two hours old
    old.mkdir()
    (old / "image.npy").write_bytes(b"\x93NUMPY")
    os.utime(old, (1, 1))
    cases, _ = load_cases(_cfg(root, cache))
    assert (_store(cases).built, _store(cases).reused) == (3, 0)
    plain, _ = load_cases(_cfg(root, "memory"))
    for c, q in zip(cases, plain):
        np.testing.assert_array_equal(c.image, q.image)
    assert not old.exists()  # reclaimed; the fresh one may belong to a live writer and stays
    assert left[0].exists()


def test_a_truncated_case_is_rebuilt(tmp_path):
    root = _folder(tmp_path / "data", n=2)
    cache = tmp_path / "cache"
    load_cases(_cfg(root, cache))
    image = sorted((cache / "cases").glob("*/image.npy"))[0]
    image.write_bytes(image.read_bytes()[:100])  # a copy cut short (full disk, interrupted rsync)
    cases, _ = load_cases(_cfg(root, cache))
    assert (_store(cases).built, _store(cases).reused) == (1, 1)
    plain, _ = load_cases(_cfg(root, "memory"))
    for c, q in zip(cases, plain):
        np.testing.assert_array_equal(c.image, q.image)
    assert image.stat().st_size == 128 + 20 * 24 * 4


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def _tiny_cases(folder, n):
    """``n`` cached 8 x 8 cases written straight into ``folder`` (case ``i`` is filled with ``i``)."""
    out = []
    for i in range(n):
        lab = np.zeros((8, 8), np.int64)
        lab[:2, :3] = 1
        write_case(folder / f"k{i}", Case(f"c{i}", np.full((1, 8, 8), i, np.float32), lab), {"name": f"c{i}"})
        out.append(folder / f"k{i}")
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_mapped_files_stay_within_max_files(tmp_path):
    folders = _tiny_cases(tmp_path, 40)
    store = CaseStore(1024, max_files=7, map_min_bytes=0)  # every array mapped: 3 per case (image, label, fg)
    cases = [open_case(f, store) for f in folders]
    before = _open_fds()
    for k, c in enumerate(cases + cases):
        assert float(c.image.sum()) == 64.0 * (k % 40)
        assert int(c.label.sum()) == 6
        assert store.held_files() <= 6 and _open_fds() - before <= 6  # two cases of three maps
    assert store.opened == 80  # each use of a case beyond the two held reopens it
    small = CaseStore(1024, max_files=7)  # tiny arrays are read, not mapped: no descriptor at all
    before = _open_fds()
    for f in folders:
        assert float(open_case(f, small).image[0, 0, 0]) == float(f.name[1:])
    assert small.held_files() == 0 and small.held_arrays() == 40 * 3 and _open_fds() - before <= 0


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_whole_image_patches_do_not_keep_closed_maps_open(tmp_path):
    folders = _tiny_cases(tmp_path, 30)
    store = CaseStore(1024, max_files=3, map_min_bytes=0)
    cases = [open_case(f, store) for f in folders]
    before = _open_fds()
    patches = fixed_patches(cases, [8, 8], 1)  # the patch is the whole image: a view unless copied
    assert [float(p["image"].sum()) for p in patches] == [64.0 * i for i in range(30)]
    del cases
    assert _open_fds() - before <= 3


def _many_tiny_cases_child(root, cache, limit, queue):
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        cases, _ = load_cases(_cfg(root, cache, "data.patch_size=[8,8]"))
        ds = PatchDataset(cases, [8, 8], 0.5, 2 * len(cases), seed=0)
        drawn = [ds[i] for i in range(len(ds))]
        queue.put((len(cases), [float(np.asarray(c.image, np.float64).sum()) for c in cases],
                   [int(c.label.sum()) for c in cases], len(drawn)))
    except BaseException as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


def test_many_tiny_cases_under_a_low_open_file_limit(tmp_path):
    pytest.importorskip("resource")
    ctx = _fork()
    n = 400
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lab = np.zeros((8, 8), np.uint8)
    lab[2:4, 2:5] = 1
    for i in range(n):
        Image.fromarray(np.full((8, 8), i % 256, np.uint8)).save(root / "images" / f"c{i:03d}.png")
        Image.fromarray(lab).save(root / "labels" / f"c{i:03d}.png")
    plain, _ = load_cases(_cfg(root, "memory", "data.patch_size=[8,8]"))
    want = [float(c.image.astype(np.float64).sum()) for c in plain]
    queue = ctx.Queue()
    for cache in (tmp_path / "cache", tmp_path / "cache"):  # building, then reading the built cache
        p = ctx.Process(target=_many_tiny_cases_child, args=(root, cache, 128, queue))
        p.start()
        result = queue.get(timeout=300)
        p.join(30)
        assert not isinstance(result, str), result  # was "OSError: [Errno 24] Too many open files"
        count, images, labels, drawn = result
        assert count == n and drawn == 2 * n
        assert labels == [6] * n  # the 2 x 3 object of every label
        np.testing.assert_allclose(images, want, rtol=1e-6)


def test_an_unwritable_cache_folder_is_one_line_or_memory_when_defaulted(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path / "data", n=2)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # a folder under a file can be created by no one, root included
    recipe = tmp_path / "r.yaml"
    cache = blocker / "cache"
    recipe.write_text(f"task: instances\ndata: {{root: {root}, cache_dir: {cache}, patch_size: [16, 16]}}\n")
    assert main(["preprocess", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{blocker / 'cache'}: cannot create the case cache" in err
    # chosen by $DENSEMED_CACHE: the same error
    monkeypatch.setenv("DENSEMED_CACHE", str(blocker / "cache"))
    with pytest.raises(DensemedError, match="cannot create the case cache"):
        load_cases(_cfg(root, "null"))
    # the default folder (~/.cache/densemed) unwritable: a warning, and the cases are read into memory
    monkeypatch.delenv("DENSEMED_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    cases, _ = load_cases(_cfg(root, "null"))
    assert all(isinstance(c, Case) for c in cases) and len(cases) == 2
    assert "reading every case into memory" in capsys.readouterr().err
