"""On-disk cache of preprocessed cases, opened as memory maps under a bounded in-memory budget.

Reading a case (decoding the file, resampling, normalising) and computing its targets (border
weights, contours, distance maps) is done **once**: the task's :meth:`~densemed.tasks.Task.load_case`
result is written as ``.npy`` files into the cache folder and training then reads patches from
them through memory maps, so a dataset larger than memory trains with only the touched pages of
the cases held open. ``densemed preprocess RECIPE`` fills the cache ahead of time; otherwise the
first run does it, case by case (only one decoded case is in memory at a time).

Default: **on**. ``data.cache_dir: null`` (the default) caches into ``$DENSEMED_CACHE``, else
``$XDG_CACHE_HOME/densemed``, else ``~/.cache/densemed``; a folder caches there; ``memory`` turns
the cache off (every case read into memory, as before the cache existed). The cache was opt-in
while two problems stood, both fixed and tested (``tests/data/test_cache.py``): several processes
filling one cache at once could break each other's writes (the temporary folder was named by the
pid alone, so two writers with the same pid, in two containers or two threads, deleted and mixed
each other's files), and datasets of thousands of small cases ran out of file descriptors (each
memory map holds one; only MiB were bounded). Measured with the default switched, the data,
training-loop and CLI tests ran as fast as with ``memory`` (within the noise of this machine).
An unwritable default folder falls back to memory with a warning; an unwritable folder that was
chosen (``data.cache_dir``, ``$DENSEMED_CACHE``) is an error naming it. Old entries are never
deleted automatically: ``rm -r <cache folder>`` reclaims the space.

Layout: ``<cache_dir>/cases/<key>/`` holds ``image.npy`` ``(C, *S)`` float32, ``label.npy`` ``(*S)``
int64, ``fg.npy`` (flat indices of the foreground, for foreground-centred patches),
``instances.npy`` (when the task keeps instance ids), ``map_<i>.npy`` (the derived targets, in the
order of ``info.json``), ``fields.pkl`` (the case's other attributes: name, the reader's
:class:`~densemed.data.io.ImageMeta`, ...) and ``info.json`` (written last; it lists every file
with its size, so a truncated copy is seen as incomplete and rebuilt).

Concurrency: any number of processes (ranks, runs, test sessions) may fill and read one cache at
once. A case is written into a fresh temporary folder (:func:`tempfile.mkdtemp`, never shared)
and renamed onto ``<key>/`` when complete; when the rename finds ``<key>/`` already complete,
another process finished the same case first and its copy is used (the arrays are identical). A
killed writer leaves only its temporary folder, which blocks nothing and is removed by a later
load once an hour old (:data:`STALE_SECONDS`).

Key: SHA-256 of the source files (absolute path, size, modification time in nanoseconds), the
``data`` section without the keys that only affect sampling (:data:`SAMPLING_KEYS`), the ``task``
section (its targets), the task name, :data:`FORMAT` and the densemed version. Changing a file or a
parameter that shapes the arrays (normalisation, spacing, label map, a target's parameters) gives
a new key, so a stale case is never read; old folders stay until deleted (``rm -r <cache_dir>``).
A data key added later invalidates by default (it is not in :data:`SAMPLING_KEYS`).

Memory and open files: :class:`CaseStore` keeps the arrays of at most ``data.cache_mb`` MiB of
cases open, and at most :func:`default_max_files` memory-mapped files (a quarter of ``ulimit -n``:
every map holds a file descriptor), closing the least recently used case when opening another
would exceed either bound (a case larger than the bound is held alone). Arrays under
:data:`MAP_MIN_BYTES` are read rather than mapped and hold no descriptor. Resident memory from
the cache is at most those bytes: pages of closed maps leave the process. The bounds are per
process: each DataLoader worker and each rank has its own store. Generated data
(``data.synthetic``) is not cached: it is made in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densemed.errors import DensemedError

if TYPE_CHECKING:
    import argparse

    import numpy as np

    from densemed.config import Config, DataConfig
    from densemed.data.dataset import Case
    from densemed.tasks.base import Task

#: bump when the files of a cached case change meaning (2: info.json lists the files and their sizes;
#: 3: resampling to data.target_spacing matches pixel centres, and applies to images without a spacing)
FORMAT = 3
#: arrays smaller than this (bytes) are read into memory rather than mapped: they hold no file descriptor
MAP_MIN_BYTES = 64 * 1024
#: a temporary case folder older than this (seconds) is a killed writer's: the next load removes it
STALE_SECONDS = 3600.0
#: ``data`` keys that do not change a preprocessed case (sampling, split, loading, the cache itself)
SAMPLING_KEYS = frozenset({
    "patch_size", "foreground_fraction", "val_fraction", "split_seed", "train_files", "val_files", "batch_size",
    "samples_per_epoch", "val_patches_per_image", "num_workers", "cache_dir", "cache_mb", "class_names",
})
#: attributes of a case stored as arrays; every other attribute is pickled as it is
ARRAY_FIELDS = ("image", "label", "maps", "instances")
#: values of ``data.cache_dir`` that turn the disk cache off: every case is read into memory, as before the cache
OFF = ("memory", "off", "none")


def cache_root(d: DataConfig) -> Path | None:
    """The cache folder of a recipe: ``data.cache_dir``, else ``$DENSEMED_CACHE``, else ``~/.cache/densemed``.

    None when the cache is off (``data.cache_dir: memory``).
    """
    value = d.cache_dir
    if value is False or (isinstance(value, str) and value.strip().lower() in OFF):
        return None
    if value:
        return Path(str(value)).expanduser()
    env = os.environ.get("DENSEMED_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "densemed"


def _file_id(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def case_key(cfg: Config, task_name: str, name: str, image: Path | Sequence[Path], label: Path | None) -> str:
    """The cache key of one case: its source files and every parameter that shapes its arrays."""
    from densemed import __version__

    images = [Path(image)] if isinstance(image, (str, Path)) else [Path(p) for p in image]
    data = {k: v for k, v in cfg.to_dict()["data"].items() if k not in SAMPLING_KEYS}
    payload = {
        "format": FORMAT, "version": __version__, "task": task_name, "task_options": cfg.task, "data": data,
        "name": name, "images": [_file_id(p) for p in images], "label": _file_id(Path(label)) if label else None,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def default_max_files() -> int:
    """The default bound of memory-mapped files per :class:`CaseStore`: a quarter of the open-file limit.

    Every memory map holds a file descriptor (CPython's :class:`mmap.mmap` keeps a duplicate of the
    file's descriptor while the map lives), so the store bounds them below ``ulimit -n`` (soft
    ``RLIMIT_NOFILE``), leaving three quarters to the rest of the process (DataLoader pipes, logs,
    checkpoints); between 16 and 4096 (a map is also one of the kernel's ``vm.max_map_count``
    areas, 65530 by default).
    """
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        return 128
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 4096
    return max(16, min(int(soft) // 4, 4096))


class CaseStore:
    """Least-recently-used arrays of cached cases, bounded in bytes and in open files.

    Arrays of at least :data:`MAP_MIN_BYTES` are memory maps (one file descriptor each); smaller
    ones are read into memory (no descriptor: a dataset of thousands of tiny images holds no file
    open at all). The least recently used case is closed when opening another would exceed
    ``budget_mb`` MiB of arrays or ``max_files`` mapped files.

    Args:
        budget_mb: the most MiB of arrays held (``data.cache_mb``).
        max_files: the most memory-mapped files held; None: :func:`default_max_files`.
        map_min_bytes: arrays smaller than this are read into memory instead of mapped.

    Example:
        >>> store = CaseStore(64, max_files=32)
        >>> print(store.held_arrays(), store.held_bytes(), store.held_files())
        0 0 0
    """

    def __init__(self, budget_mb: float, max_files: int | None = None, map_min_bytes: int | None = None) -> None:
        try:
            mb = float(budget_mb)
        except (TypeError, ValueError):
            mb = 0.0
        if isinstance(budget_mb, bool) or not mb > 0:
            raise DensemedError(f"data.cache_mb: must be a positive number of MiB, got {budget_mb!r}")
        self.budget = int(mb * 2**20)
        self.max_files = default_max_files() if max_files is None else int(max_files)
        if self.max_files < 1:
            raise DensemedError(f"CaseStore: max_files must be at least 1, got {max_files!r}")
        self.map_min_bytes = MAP_MIN_BYTES if map_min_bytes is None else int(map_min_bytes)
        self._open: OrderedDict[Path, dict[str, np.ndarray]] = OrderedDict()
        self._sizes: dict[Path, int] = {}
        self._files: dict[Path, int] = {}
        self.built = 0  # cases preprocessed by this process
        self.reused = 0  # cases found in the cache
        self.opened = 0  # times a case's files were opened (a miss of the in-memory cache)

    def __getstate__(self) -> dict[str, Any]:
        # a worker started by spawn gets an empty store, never another process' maps
        state = dict(self.__dict__)
        state["_open"], state["_sizes"], state["_files"] = OrderedDict(), {}, {}
        return state

    def held_arrays(self) -> int:
        """Number of arrays currently held (mapped or read)."""
        return sum(len(a) for a in self._open.values())

    def held_bytes(self) -> int:
        """Bytes of the arrays currently held."""
        return sum(self._sizes.values())

    def held_files(self) -> int:
        """Number of arrays currently memory-mapped (each holds one file descriptor)."""
        return sum(self._files.values())

    def arrays(self, folder: Path) -> dict[str, np.ndarray]:
        """The arrays of the cached case in ``folder`` (``{file stem: array}``), most recent first to stay."""
        if folder in self._open:
            self._open.move_to_end(folder)
            return self._open[folder]
        import numpy as np

        paths = sorted(folder.glob("*.npy"))
        sizes = {p: p.stat().st_size for p in paths}
        mapped = {p for p in paths if sizes[p] >= self.map_min_bytes}
        size = sum(sizes.values())  # file sizes: the arrays and their small .npy headers
        while self._open and (self.held_bytes() + size > self.budget
                              or self.held_files() + len(mapped) > self.max_files):
            self._close_oldest()
        # copy-on-write maps: writable for torch.from_numpy, never written back to the cache
        arrays = {p.stem: np.load(p, mmap_mode="c" if p in mapped else None)
                  for p in paths}
        self._open[folder] = arrays
        self._sizes[folder] = sum(int(a.nbytes) for a in arrays.values())
        self._files[folder] = len(mapped)
        self.opened += 1
        return arrays

    def _close_oldest(self) -> None:
        old, _ = self._open.popitem(last=False)  # a map closes (its descriptor too) when its last view goes
        self._sizes.pop(old, None)
        self._files.pop(old, None)


class CachedCase:
    """A case whose arrays live in the cache: the attributes of :class:`~densemed.data.dataset.Case`, mapped on use.

    ``image``, ``label``, ``instances`` and ``maps`` (the targets in their recipe order, and
    ``_fg_index``, the precomputed foreground indices) are memory maps of the store; the case's
    other attributes (``name``, ``meta``, ...) are plain attributes restored from ``fields.pkl``.
    """

    def __init__(self, folder: Path, store: CaseStore, fields: dict[str, Any], map_keys: Sequence[str]) -> None:
        self.__dict__.update(fields)
        self.folder, self.store, self.map_keys = folder, store, list(map_keys)

    def _arrays(self) -> dict[str, np.ndarray]:
        return self.store.arrays(self.folder)

    @property
    def image(self) -> np.ndarray:
        """``(C, *S)`` float32, normalised."""
        return self._arrays()["image"]

    @property
    def label(self) -> np.ndarray | None:
        """``(*S)`` int64 class indices, or None."""
        return self._arrays().get("label")

    @property
    def instances(self) -> np.ndarray | None:
        """``(*S)`` int32 object ids, or None."""
        return self._arrays().get("instances")

    @property
    def maps(self) -> dict[str, np.ndarray]:
        """Derived targets ``{batch key: (C, *S)}`` and the foreground index."""
        arrays = self._arrays()
        out = {key: arrays[f"map_{i}"] for i, key in enumerate(self.map_keys)}
        if "fg" in arrays:
            out["_fg_index"] = arrays["fg"]
        return out

    def __repr__(self) -> str:
        return f"CachedCase({getattr(self, 'name', '?')!r}, {self.folder})"


def read_info(folder: Path) -> dict[str, Any] | None:
    """``info.json`` of the case in ``folder`` when the case is complete, else None.

    Complete: ``info.json`` (written last) parses and every file it lists is there with its
    recorded size. A missing folder, a folder of an older format or a truncated file is None.
    """
    try:
        info = json.loads((folder / "info.json").read_text())
        files = info["files"]
        if not isinstance(files, dict) or not files:
            return None
        for name, size in files.items():
            if (folder / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def _temp_name(folder: Path) -> Path:
    """A fresh temporary folder next to ``folder``, unique across processes, hosts and threads."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp{os.getpid()}.", dir=folder.parent))


def _move_aside(folder: Path) -> None:
    """Remove the incomplete case folder ``folder`` (renamed first: readers keep their maps, no one sees half)."""
    import uuid

    trash = folder.with_name(f".{folder.name}.bad{uuid.uuid4().hex}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:  # another process moved it first
        return
    shutil.rmtree(trash, ignore_errors=True)


def write_case(folder: Path, case: Case, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``case`` into ``folder`` atomically; returns the ``info.json`` of the case now in ``folder``.

    The files go to a temporary folder of a unique name (:func:`tempfile.mkdtemp`: never shared with
    another writer, even one of the same pid in another container or a thread of this process),
    renamed to ``folder`` when complete. When ``folder`` already holds a complete case, another
    process finished the same case first: its copy is kept (the arrays are identical) and ours
    dropped. An incomplete ``folder`` (a truncated file) is moved aside and replaced.
    """
    import numpy as np

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(folder)
    try:
        np.save(tmp / "image.npy", np.ascontiguousarray(case.image, dtype=np.float32))
        if case.label is not None:
            label = np.ascontiguousarray(case.label, dtype=np.int64)
            np.save(tmp / "label.npy", label)
            np.save(tmp / "fg.npy", np.flatnonzero(label > 0).astype(np.int64))
        if case.instances is not None:
            np.save(tmp / "instances.npy", np.ascontiguousarray(case.instances, dtype=np.int32))
        keys = [k for k in case.maps if not k.startswith("_")]
        for i, key in enumerate(keys):
            np.save(tmp / f"map_{i}.npy", np.ascontiguousarray(case.maps[key]))
        fields = {k: v for k, v in vars(case).items() if k not in ARRAY_FIELDS}
        (tmp / "fields.pkl").write_bytes(pickle.dumps(fields))
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        full = {**info, "maps": keys, "files": files}
        (tmp / "info.json").write_text(json.dumps(full, default=str))
        for _ in range(3):
            try:
                os.rename(tmp, folder)
                return full
            except OSError:  # the folder exists (ENOTEMPTY/EEXIST): someone else's case, complete or not
                done = read_info(folder)
                if done is not None:  # another process (rank, run) finished the same case first: keep its copy
                    return done
                _move_aside(folder)  # a half case (killed copy, older writer): replace it
        raise OSError(f"{folder}: could not replace an incomplete cached case")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(cases_dir: Path, older_than: float = STALE_SECONDS) -> int:
    """Remove temporary case folders in ``cases_dir`` not modified for ``older_than`` seconds; their number.

    They are what a killed writer leaves (a live writer fills its folder within seconds, as the
    slow part, decoding and targets, happens before). They never block a load (every writer
    uses a fresh temporary name); this only reclaims their space.
    """
    import time

    now, removed = time.time(), 0
    try:
        entries = list(os.scandir(cases_dir))
    except OSError:
        return 0
    for e in entries:
        if e.name.startswith(".") and (".tmp" in e.name or ".bad" in e.name):
            try:
                if now - e.stat(follow_symlinks=False).st_mtime > older_than:
                    shutil.rmtree(e.path, ignore_errors=True)
                    removed += 1
            except OSError:  # removed meanwhile by another process
                continue
    return removed


def open_case(folder: Path, store: CaseStore, info: dict[str, Any] | None = None) -> CachedCase:
    """The cached case in ``folder`` (``info``: its ``info.json`` when already read)."""
    if info is None:
        info = json.loads((folder / "info.json").read_text())
    fields = pickle.loads((folder / "fields.pkl").read_bytes())
    return CachedCase(folder, store, fields, info.get("maps", []))


def explicit_root(d: DataConfig) -> bool:
    """Whether the cache folder was chosen (``data.cache_dir`` or ``$DENSEMED_CACHE``) rather than defaulted."""
    return bool(d.cache_dir) or bool(os.environ.get("DENSEMED_CACHE"))


def unwritable(root: Path) -> str | None:
    """Why cases cannot be cached under ``root`` (one line naming the folder), or None when they can."""
    cases = root / "cases"
    try:
        cases.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{root}: cannot create the case cache (data.cache_dir): {exc.strerror or exc}"
    if not os.access(cases, os.W_OK | os.X_OK):
        return f"{cases}: the case cache (data.cache_dir) is not writable"
    return None


def cached_loader(cfg: Config, task: Task) -> Callable[[str, Any, Any], Case | CachedCase]:
    """``load(name, image_path, label_path)`` through the cache (the task's ``load_case`` when it is off)."""
    root = cache_root(cfg.data)
    if root is None:
        return task.load_case
    problem = unwritable(root)
    if problem is not None:
        if explicit_root(cfg.data):
            raise DensemedError(problem)
        # the default folder (~/.cache/densemed) may be read-only (a container, HOME unset): as before the cache
        print(f"densemed: warning: {problem}; reading every case into memory", file=sys.stderr)
        return task.load_case
    store = CaseStore(cfg.data.cache_mb)
    remove_stale(root / "cases")

    def load(name: str, image: Any, label: Any) -> CachedCase:
        folder = root / "cases" / case_key(cfg, task.name, name, image, label)
        info = read_info(folder)
        if info is not None:
            store.reused += 1
        else:
            case = task.load_case(name, image, label)
            sources = [str(p) for p in ([image] if isinstance(image, (str, Path)) else image)]
            info = write_case(folder, case, {"name": name, "images": sources, "label": str(label) if label else None})
            store.built += 1
            del case  # only the cached copy stays
        return open_case(folder, store, info)

    return load


# -- `densemed preprocess RECIPE` ------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``densemed preprocess``."""
    p = subparsers.add_parser("preprocess", help="read every case of a recipe into the on-disk cache ahead of training")
    p.add_argument("config", help="recipe YAML")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe keys")
    p.set_defaults(fn=_cmd_preprocess)


def _cmd_preprocess(args: argparse.Namespace) -> int:
    import time

    from densemed import config, tasks
    from densemed.data.dataset import load_cases

    cfg = config.load(args.config, args.set)
    if cfg.data.synthetic is not None:
        raise DensemedError("data.synthetic: generated data is made in memory and not cached; nothing to do")
    root = cache_root(cfg.data)
    if root is None:
        raise DensemedError("data.cache_dir: the cache is off (memory); set data.cache_dir to a folder or remove it")
    problem = unwritable(root)
    if problem is not None:
        raise DensemedError(problem)
    tic = time.perf_counter()
    train, val = load_cases(cfg, tasks.build(cfg))
    cases = [c for c in train + val if isinstance(c, CachedCase)]
    store = cases[0].store if cases else None
    size = sum(p.stat().st_size for c in cases for p in c.folder.iterdir()) / 2**20
    built, reused = (store.built, store.reused) if store else (0, 0)
    print(f"{len(cases)} cases in {root / 'cases'}: {built} preprocessed, {reused} already cached "
          f"({size:.1f} MiB, {time.perf_counter() - tic:.1f} s)")
    return 0
