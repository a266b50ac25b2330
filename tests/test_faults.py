"""Faults survived: bad data, kill -9 (checkpoint writes, training, prediction), a full disk, two runs on one folder.

Process faults use real subprocesses killed with SIGKILL at random moments (seeded, so a failure
can be replayed); a full disk is simulated three ways: a patched writer, the kernel's file-size
limit (``RLIMIT_FSIZE``: a real failing ``write``, no root needed) and, when this user may mount
one, a real tiny tmpfs (``ENOSPC``).
"""

import contextlib
import errno
import gc
import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from densemed import cli, config
from densemed.checkpoint import load, network_state, save_atomic
from densemed.data.io import read_image, read_label, remove_stale_temporaries, write_label
from densemed.data.normalize import normalize
from densemed.errors import DensemedError
from densemed.infer.predict import completed
from densemed.train import Trainer, lock, train

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
TINY = [
    "data.synthetic={n: 6, size: 32, seed: 3}",
    "data.patch_size=[32,32]",
    "data.batch_size=2",
    "data.samples_per_epoch=16",
    "model.name=unet",
    "model.base_width=2",
    "model.depth=2",
    "train.threads=1",
    "train.progress=false",
    "augment={flip: {p: 0.5}}",
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Preprocessed cases go to this test's folder, not ~/.cache."""
    monkeypatch.setenv("DENSEMED_CACHE", str(tmp_path / "cache"))


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _folder(root: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """A dataset folder: images/ and labels/ with the given arrays (suffix in the key: 'a.png', 'b.tif')."""
    for sub, arrays in (("images", images), ("labels", labels)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name, arr in arrays.items():
            if name.endswith(".tif"):
                tifffile.imwrite(root / sub / name, arr)
            else:
                Image.fromarray(arr).save(root / sub / name)
    return root


def _disc(size=32, r=8):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - size // 2) ** 2 + (xx - size // 2) ** 2 < r * r).astype(np.uint8) * 255


def _check(root, tmp_path, *extra):
    return _cli("train", "--check", "--set", f"data.root={root}", "data.patch_size=[32,32]", "model.name=unet",
                "model.base_width=2", "model.depth=2", "train.threads=1", f"train.out={tmp_path / 'run'}", *extra)


# -- data faults ----------------------------------------------------------------------------------
def test_an_rgb_image_among_grey_ones_is_one_line_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    grey = {f"g{i}.png": rng.integers(0, 255, (32, 32), dtype=np.uint8) for i in range(3)}
    rgb = {"g3.png": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)}
    root = _folder(tmp_path / "d", {**grey, **rgb}, {f"g{i}.png": _disc() for i in range(4)})
    code, _, err = _check(root, tmp_path, "data.val_fraction=0")
    assert code == 2 and err.count("\n") == 1
    assert "g3.png: image has 3 channels, g0.png has 1; all images of a dataset need the same channels" in err


def test_nan_or_inf_intensities_are_one_line_naming_the_file(tmp_path):
    img = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    bad = img.copy()
    bad[3, 4], bad[5, 6] = np.nan, np.inf
    root = _folder(tmp_path / "d", {"a.tif": img, "b.tif": bad}, {"a.png": _disc(), "b.png": _disc()})
    code, _, err = _check(root, tmp_path)
    assert code == 2 and err.count("\n") == 1
    assert err.strip().endswith("b.tif: 1 NaN and 1 infinite intensities")


def test_a_constant_image_normalises_to_zeros_and_trains_finitely(tmp_path):
    """Documented: z-score of a zero-variance image is all zeros (std floored at 1e-8), not NaN; percentile too."""
    const = np.full((1, 16, 16), 1000.3, np.float32)
    assert np.array_equal(normalize(const, "zscore"), np.zeros_like(const))
    assert np.array_equal(normalize(const, "percentile"), np.zeros_like(const))
    rng = np.random.default_rng(2)
    images = {"a.png": rng.integers(0, 255, (32, 32), dtype=np.uint8), "b.png": np.full((32, 32), 77, np.uint8),
              "c.png": np.full((32, 32), 77, np.uint8)}
    root = _folder(tmp_path / "d", images, {k: _disc() for k in images})
    # the constant images are the only training images: the step's loss must still be a number
    code, out, err = _check(root, tmp_path, "data.train_files=[b, c]", "data.val_files=[a]")
    assert code == 0, err
    loss = float(out.split("loss ")[1].split(" ")[0])
    assert np.isfinite(loss)


def test_labels_of_different_dtypes_per_file_read_the_same_classes(tmp_path):
    """Documented: label values count, not the file's dtype; float files must hold whole numbers."""
    disc = _disc()
    files = {"u8.png": disc, "u16.png": disc.astype(np.uint16), "f32.tif": disc.astype(np.float32),
             "i32.tif": disc.astype(np.int32)}
    for name, arr in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        if name.endswith(".tif"):
            tifffile.imwrite(tmp_path / name, arr)
        else:
            Image.fromarray(arr).save(tmp_path / name)
        label, _ = read_label(tmp_path / name, 2)
        assert label.dtype == np.int64 and np.array_equal(label, disc.astype(np.int64)), name
    half = disc.astype(np.float32) / 2 + 0.25  # 0.25 and 127.75: not class ids
    tifffile.imwrite(tmp_path / "half.tif", half)
    with pytest.raises(DensemedError, match=r"half.tif: label map holds non-integer values \(dtype float32\)"):
        read_label(tmp_path / "half.tif", 2)


def test_8_bit_16_bit_and_float_images_of_one_picture_normalise_alike(tmp_path):
    """Documented: intensities are read as they are (no dtype scaling); the per-image z-score removes the scale."""
    pic = np.random.default_rng(3).integers(0, 256, (24, 24)).astype(np.uint8)
    Image.fromarray(pic).save(tmp_path / "u8.png")
    Image.fromarray(pic.astype(np.uint16) * 257).save(tmp_path / "u16.png")
    tifffile.imwrite(tmp_path / "f32.tif", pic.astype(np.float32) / 255)
    ref = (pic - pic.astype(np.float64).mean()) / pic.astype(np.float64).std()  # numpy by hand
    raw16, _ = read_image(tmp_path / "u16.png")
    assert raw16.max() == 257 * int(pic.max())  # 16 bits kept, not cut to 8
    for name in ("u8.png", "u16.png", "f32.tif"):
        image, _ = read_image(tmp_path / name)
        np.testing.assert_allclose(normalize(image, "zscore")[0], ref, rtol=0, atol=2e-5, err_msg=name)


def test_files_changed_during_training_are_not_seen_until_the_next_run(tmp_path):
    """Documented: every case is read once when training starts; a file rewritten mid-run changes nothing."""
    rng = np.random.default_rng(4)
    images = {f"c{i}.png": rng.integers(0, 255, (32, 32), dtype=np.uint8) for i in range(3)}
    root = _folder(tmp_path / "d", images, {k: _disc() for k in images})
    args = [f"data.root={root}", "data.patch_size=[32,32]", "data.samples_per_epoch=4", "data.batch_size=2",
            "model.name=unet", "model.base_width=2", "model.depth=2", "train.threads=1", "train.progress=false",
            "train.epochs=2"]
    train(config.load(None, [*args, f"train.out={tmp_path / 'a'}"]), log=lambda s: None)
    tr = Trainer(config.load(None, [*args, f"train.out={tmp_path / 'b'}"]), log=lambda s: None)
    for name in images:  # rewritten after the run has read them
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / "images" / name)
    tr.fit()
    a, b = network_state(load(tmp_path / "a" / "last.pt")), network_state(load(tmp_path / "b" / "last.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- kill -9 during checkpoint writes -------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys, torch
    from densemed.checkpoint import save_atomic
    path, i = sys.argv[1], int(sys.argv[2])
    while True:
        save_atomic({"i": i, "w": torch.full((2_000_000,), float(i))}, path)  # 8 MB: a write takes a while
        print(i, flush=True)
        i += 1
""")


def test_kill_9_during_checkpoint_writes_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.pt"
    rng = random.Random(18)
    start = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)], stdout=subprocess.PIPE,
                                env=ENV, text=True)
        first = proc.stdout.readline()  # one checkpoint completed
        assert first.strip() == str(start)
        tmp = path.with_name(f".{path.name}.tmp{proc.pid}")
        deadline = time.monotonic() + 60
        while not tmp.exists() and time.monotonic() < deadline:  # the next write has begun
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.02))  # a random moment inside the write (or just after it)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        ckpt = torch.load(path, weights_only=False)  # loadable, and one whole checkpoint, not a mix
        assert ckpt["i"] >= start and torch.equal(ckpt["w"], torch.full((2_000_000,), float(ckpt["i"])))
        remove_stale_temporaries(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the killed writer's temporary file is gone
        start = ckpt["i"] + 1


# -- kill -9 of training, resumed three times -----------------------------------------------------
def _epochs_done(run: Path) -> int:
    """Epochs whose checkpoint is written (last.pt is replaced atomically, so reading it is safe)."""
    if not (run / "last.pt").exists():
        return 0
    ckpt = torch.load(run / "last.pt", weights_only=False)
    return ckpt["epoch"] + (0 if ckpt["epoch_step"] else 1)


@pytest.mark.slow
def test_training_killed_three_times_and_resumed_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    epochs = 5
    recipe = [*TINY, f"train.epochs={epochs}"]
    train(config.load(None, [*recipe, f"train.out={tmp_path / 'ref'}"]), log=lambda s: None)
    run = tmp_path / "killed"
    rng = random.Random(18)
    kills, notes = 0, []
    for round_ in range(3):
        argv = [sys.executable, "-m", "densemed", "train"]
        argv += ["--resume", str(run)] if round_ else ["--set", *recipe, f"train.out={run}"]
        before = _epochs_done(run) if round_ else 0
        proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while _epochs_done(run) < before + 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # at least one more epoch completed (and checkpointed) in this session
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        time.sleep(rng.uniform(0, 0.9) * last["seconds"])  # a random moment inside the next epoch
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.kill()
        proc.wait()
        notes.append(proc.stdout.read())
        proc.stdout.close()
        kills += 1
        assert load(run / "last.pt")["epoch"] < epochs - 1
    code = subprocess.run([sys.executable, "-m", "densemed", "train", "--resume", str(run)], env=ENV,
                          capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    assert "took over the stale lock of pid" in code.stdout  # the killed run's lock, detected by its pid
    ref, got = load(tmp_path / "ref" / "last.pt"), load(run / "last.pt")
    assert kills == 3 and got["epoch"] == ref["epoch"] == epochs - 1 and got["step"] == ref["step"]
    for k, v in network_state(ref).items():
        assert torch.equal(v, network_state(got)[k]), k
    def losses(folder):
        return [json.loads(x)["train_loss"] for x in (folder / "metrics.jsonl").read_text().splitlines()]

    assert losses(run) == losses(tmp_path / "ref")


# -- two runs on one folder -----------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from densemed.train import lock
    lock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(600)
""")


def test_a_second_train_on_the_same_folder_is_refused_and_a_dead_owner_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, env=ENV, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = _cli("train", "--set", *TINY, "train.epochs=1", f"train.out={run}")
        assert code == 2 and err.count("\n") == 1
        assert err.startswith(f"densemed: error: {run}: another densemed train (pid {holder.pid} on ")
        assert "wait for it to end or choose another train.out" in err
        assert not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    info = json.loads((run / lock.LOCK_NAME).read_text())
    assert info["pid"] == holder.pid  # the dead owner's lock file is still there: stale
    lines = []
    train(config.load(None, [*TINY, "train.epochs=1", f"train.out={run}"]), log=lines.append)
    assert any(f"took over the stale lock of pid {holder.pid}" in line for line in lines)
    gc.collect()
    assert not (run / lock.LOCK_NAME).exists()  # released with the trainer


def test_without_flock_the_pid_decides_and_another_hosts_lock_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "fcntl", None)
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / lock.LOCK_NAME
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = __import__("socket").gethostname()
    path.write_text(json.dumps({"pid": os.getppid(), "host": host, "proc_start": lock._proc_start(os.getppid())}))
    with pytest.raises(DensemedError, match=rf"another densemed train \(pid {os.getppid()} on {host}"):
        lock.acquire(folder)
    path.write_text(json.dumps({"pid": os.getppid(), "host": host, "proc_start": "1"}))  # pid reused since
    assert lock.alive(json.loads(path.read_text())) is (lock._proc_start(os.getppid()) is None)
    path.write_text(json.dumps({"pid": dead.pid, "host": host}))
    notes = []
    lock.acquire(folder, log=notes.append)
    assert json.loads(path.read_text())["pid"] == os.getpid() and f"stale lock of pid {dead.pid}" in notes[0]
    lock.release(folder)
    assert not path.exists()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(DensemedError, match=rf"if that run is gone, delete {path}"):
        lock.acquire(folder)


def test_the_lock_is_reentrant_in_one_process_and_released_with_its_last_owner(tmp_path):
    class Owner:
        pass

    a, b = Owner(), Owner()
    lock.acquire(tmp_path, owner=a)
    lock.acquire(tmp_path, owner=b)
    assert lock.held(tmp_path) and (tmp_path / lock.LOCK_NAME).exists()
    del a
    assert lock.held(tmp_path)
    del b
    assert not lock.held(tmp_path) and not (tmp_path / lock.LOCK_NAME).exists()


# -- prediction killed half-way, continued with --skip-existing ------------------------------------
SLOW_PREDICT = textwrap.dedent("""
    import os, sys, time
    import densemed.data.io as dio
    from densemed import cli

    class SlowOs:  # each output's rename waits: the kill lands between writing and renaming, or between inputs
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            time.sleep(0.4)
            os.replace(src, dst)

    dio.os = SlowOs()
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_prediction_killed_half_way_continues_with_skip_existing_to_the_same_outputs(tmp_path):
    train(config.load(None, [*TINY, "train.epochs=1", f"train.out={tmp_path / 'run'}"]), log=lambda s: None)
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "in" / f"x{i}.png")
    predict = ["predict", "--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path / "in"), "--device", "cpu"]
    assert _cli(*predict, "--output", str(tmp_path / "ref"))[0] == 0
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREDICT, *predict, "--output", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(out.glob("x*.png"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(random.Random(18).uniform(0, 0.4))
    assert proc.poll() is None, "prediction ended before it could be killed"
    proc.kill()
    proc.wait()
    done = sorted(p.name for p in out.glob("x*.png"))
    recorded = completed(out)  # inputs whose files were all in place (a kill may fall just before the record)
    assert 2 <= len(done) < 6 and len(done) - 1 <= len(recorded) <= len(done)
    for name in done:  # every output present is whole: the reference prediction exactly
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(tmp_path / "ref" / name)))
    code, logged, err = _cli(*predict, "--output", str(out), "--skip-existing")
    assert code == 0, err
    assert logged.count(", skipped\n") == len(recorded) and f"wrote {6 - len(recorded)} prediction(s)" in logged
    for i in range(6):
        assert np.array_equal(np.asarray(Image.open(out / f"x{i}.png")),
                              np.asarray(Image.open(tmp_path / "ref" / f"x{i}.png")))
    # the killed run's temporary file removed, the manifest too once every input is done: predictions only
    assert sorted(p.name for p in out.iterdir()) == [f"x{i}.png" for i in range(6)]


def test_skip_existing_redoes_inputs_whose_outputs_are_gone_or_were_written_with_other_options(tmp_path):
    train(config.load(None, [*TINY, "train.epochs=1", f"train.out={tmp_path / 'run'}"]), log=lambda s: None)
    (tmp_path / "in").mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32), 40 * i, np.uint8)).save(tmp_path / "in" / f"x{i}.png")
    (tmp_path / "in" / "x2.png").write_bytes(b"not a png")  # fails every time: the run never completes
    out = tmp_path / "out"
    predict = ["predict", "--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path / "in"), "--output",
               str(out), "--device", "cpu"]
    code, _, err = _cli(*predict)
    assert code == 2 and "1 of 3 inputs could not be predicted (x2.png" in err
    assert len(completed(out)) == 2  # the record of the unfinished run is kept
    (out / "x0.png").unlink()
    code, logged, _ = _cli(*predict, "--skip-existing")
    assert code == 2 and logged.count(", skipped\n") == 1 and "x1.png: already predicted" in logged
    assert "x0.png -> " in logged  # its output was gone: predicted again
    code, logged, _ = _cli(*predict, "--skip-existing", "--probabilities")  # other options: both again
    assert code == 2 and ", skipped\n" not in logged and "x0.png -> " in logged and "x1.png -> " in logged


# -- a full disk ----------------------------------------------------------------------------------
@contextlib.contextmanager
def file_size_limit(nbytes):
    """The kernel refuses to grow any file of this process past ``nbytes`` (EFBIG), like a disk that is full."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_checkpoint_write_that_hits_the_file_size_limit_is_one_line_and_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"w": torch.ones(100_000)}, path)
    before = path.read_bytes()
    with file_size_limit(200_000), pytest.raises(DensemedError) as info:
        save_atomic({"w": torch.zeros(500_000)}, path)  # 2 MB
    assert str(info.value).startswith(f"{path}: cannot write (the file could not be written completely; ")
    assert str(info.value).endswith("the previous last.pt is unchanged")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_an_output_write_that_hits_the_file_size_limit_is_one_line_and_leaves_no_partial_file(tmp_path):
    noise = np.random.default_rng(6).integers(0, 255, (1000, 1000)).astype(np.uint8)  # ~1 MB as PNG
    with file_size_limit(100_000), pytest.raises(DensemedError) as info:
        write_label(tmp_path / "x.png", noise)
    assert str(info.value).startswith(f"{tmp_path / 'x.png'}: cannot write (File too large; ")
    assert str(info.value).endswith("no partial file was left") and list(tmp_path.iterdir()) == []


def test_a_full_disk_while_training_stops_with_one_line_naming_last_pt_and_resume_continues(tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def full_disk_save(obj, f, *args, **kwargs):  # the second epoch's checkpoint finds the disk full
        calls.append(1)
        if len(calls) > 2:  # last.pt and best.pt of epoch 1 fit
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", full_disk_save)
    code, _, err = _cli("train", "--set", *TINY, "train.epochs=3", f"train.out={run}")
    monkeypatch.setattr(torch, "save", real_save)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"densemed: error: {run / 'last.pt'}: cannot write (No space left on device; ")
    assert err.strip().endswith("the previous last.pt is unchanged")
    assert load(run / "last.pt")["epoch"] == 0 and not [p for p in run.iterdir() if ".tmp" in p.name]
    code, _, err = _cli("train", "--resume", str(run))
    assert code == 0, err
    assert load(run / "last.pt")["epoch"] == 2


def _tiny_tmpfs(where: Path, size: str):
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if res.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")


def test_a_really_full_disk_enospc_is_one_line_for_checkpoints_and_outputs(tmp_path):
    disk = tmp_path / "disk"
    _tiny_tmpfs(disk, "256k")
    try:
        save_atomic({"w": torch.ones(1000)}, disk / "last.pt")
        before = (disk / "last.pt").read_bytes()
        (disk / "filler").write_bytes(b"\0" * 150_000)
        with pytest.raises(DensemedError, match=r"last.pt: cannot write \(the file could not be written completely; "
                                                r"0\.\d MiB free on that disk\); the previous last.pt is unchanged"):
            save_atomic({"w": torch.zeros(100_000)}, disk / "last.pt")
        assert (disk / "last.pt").read_bytes() == before
        noise = np.random.default_rng(7).integers(0, 255, (400, 400)).astype(np.uint8)
        with pytest.raises(DensemedError, match=r"x.png: cannot write \(No space left on device; .*no partial file"):
            write_label(disk / "x.png", noise)
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "last.pt"]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# -- run files on a full disk or a read-only folder (config.yaml, metrics.jsonl, curves.png) ---------------------
def _failing_write_text(monkeypatch, name, err, after=0):
    """``Path.write_text`` fails for the temporary file of ``name`` (after ``after`` good writes), half-written."""
    import pathlib

    real, calls = pathlib.Path.write_text, []

    def write_text(self, data, *args, **kwargs):
        if self.name.startswith(f".{name}.tmp"):
            calls.append(1)
            if len(calls) > after:
                real(self, data[: len(data) // 2], *args, **kwargs)  # what got out before the disk filled
                raise OSError(err, os.strerror(err))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


def test_a_full_disk_writing_metrics_jsonl_is_one_line_naming_it_and_keeps_the_previous_one(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _failing_write_text(monkeypatch, "metrics.jsonl", errno.ENOSPC, after=1)  # epoch 1's record fits
    code, _, err = _cli("train", "--set", *TINY, "train.epochs=3", f"train.out={run}")
    monkeypatch.undo()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"densemed: error: {run / 'metrics.jsonl'}: cannot write (No space left on device; ")
    assert err.strip().endswith("the previous metrics.jsonl is unchanged")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0]
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_a_failing_config_yaml_write_is_one_line_naming_it(tmp_path, monkeypatch, err):
    run = tmp_path / "run"
    _failing_write_text(monkeypatch, "config.yaml", err)
    code, _, text = _cli("train", "--set", *TINY, "train.epochs=1", f"train.out={run}")
    monkeypatch.undo()
    assert code == 2 and text.count("\n") == 1 and "Traceback" not in text
    assert text.startswith(f"densemed: error: {run / 'config.yaml'}: cannot write ({os.strerror(err)}; ")
    assert text.strip().endswith("no partial file was left")
    assert not (run / "config.yaml").exists() and not [p for p in run.iterdir() if ".tmp" in p.name]


def test_a_failing_curves_png_write_is_one_line_naming_it(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full)
    run = tmp_path / "run"
    code, _, err = _cli("train", "--set", *TINY, "train.epochs=1", f"train.out={run}")
    monkeypatch.undo()
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"densemed: error: {run / 'curves.png'}: cannot write (No space left on device; ")


# -- non-finite inputs and outputs of predict ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One epoch of the tiny U-Net on generated images: a checkpoint to predict with."""
    tmp = tmp_path_factory.mktemp("finite")
    run = tmp / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DENSEMED_CACHE", str(tmp / "cache"))
        code, _, err = _cli("train", "--set", *TINY, "train.epochs=1", f"train.out={run}")
    assert code == 0, err
    return run


def test_predict_reports_an_input_with_nan_or_inf_in_one_line_naming_it(tiny_run, tmp_path):
    img = np.random.default_rng(2).random((32, 32)).astype(np.float32)
    bad = img.copy()
    bad[1, 2], bad[3, 4], bad[5, 6] = np.nan, np.inf, -np.inf
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", img)
    tifffile.imwrite(tmp_path / "in" / "b.tif", bad)
    argv = ["predict", "--checkpoint", str(tiny_run / "best.pt"), "--input", str(tmp_path / "in"), "--device", "cpu"]
    code, _, err = _cli(*argv, "--output", str(tmp_path / "strict"), "--strict")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.strip() == f"densemed: error: {tmp_path / 'in' / 'b.tif'}: 1 NaN and 2 infinite intensities"
    code, out, err = _cli(*argv, "--output", str(tmp_path / "p"))  # default: the others are written
    assert code == 2 and err.count("\n") == 1
    assert "first: " + str(tmp_path / "in" / "b.tif") + ": 1 NaN and 2 infinite intensities" in err
    assert [p.name for p in (tmp_path / "p").iterdir() if not p.name.startswith(".")] == ["a.tif"]  # a.tif only


def test_predict_refuses_non_finite_outputs_of_a_checkpoint_with_nan_weights(tiny_run, tmp_path):
    ckpt = load(tiny_run / "best.pt")
    state = network_state(ckpt)
    first = next(k for k, v in state.items() if k.endswith("weight") and v.dim() == 4)
    state[first] = torch.full_like(state[first], float("nan"))  # a diverged run
    save_atomic(ckpt, tmp_path / "nan.pt")
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", np.random.default_rng(3).random((32, 32)).astype(np.float32))
    code, _, err = _cli("predict", "--checkpoint", str(tmp_path / "nan.pt"), "--input", str(tmp_path / "in" / "a.tif"),
                        "--output", str(tmp_path / "p"), "--device", "cpu", "--strict")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"densemed: error: {tmp_path / 'in' / 'a.tif'}: the network's outputs hold ")
    assert "NaN" in err and "diverged run" in err
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())
