"""On-disk cache of preprocessed cases, opened as memory maps under a bounded in-memory budget.

Reading a case (decoding the file, resampling, normalising) and computing its targets (border
weights, contours, distance maps) is done **once**: the task's :meth:`~densemed.tasks.Task.load_case`
result is written as ``.npy`` files into ``data.cache_dir`` and training then reads patches from
them through memory maps, so a dataset larger than memory trains with only the touched pages of
the cases held open. ``densemed preprocess RECIPE`` fills the cache ahead of time; otherwise the
first run does it, case by case (only one decoded case is in memory at a time).

Layout: ``<cache_dir>/cases/<key>/`` holds ``image.npy`` ``(C, *S)`` float32, ``label.npy`` ``(*S)``
int64, ``fg.npy`` (flat indices of the foreground, for foreground-centred patches),
``instances.npy`` (when the task keeps instance ids), ``map_<i>.npy`` (the derived targets, in the
order of ``info.json``), ``fields.pkl`` (the case's other attributes: name, the reader's
:class:`~densemed.data.io.ImageMeta`, ...) and ``info.json``. A case folder is written under a
temporary name and renamed when complete, so a killed preprocessing or several ranks
preprocessing at once never leave a half case.

Key: SHA-256 of the source files (absolute path, size, modification time in nanoseconds), the
``data`` section without the keys that only affect sampling (:data:`SAMPLING_KEYS`), the ``task``
section (its targets), the task name, :data:`FORMAT` and the densemed version. Changing a file or a
parameter that shapes the arrays (normalisation, spacing, label map, a target's parameters) gives
a new key, so a stale case is never read; old folders stay until deleted (``rm -r <cache_dir>``).
A data key added later invalidates by default (it is not in :data:`SAMPLING_KEYS`).

Memory: :class:`CaseStore` keeps the arrays of at most ``data.cache_mb`` MiB of cases open
(mapped bytes, counting each array whole) and closes the least recently used case when opening
another would exceed it (a case larger than the bound is held alone). Resident memory from the
cache is at most those mapped bytes: pages of closed maps leave the process. The bound is per
process: each DataLoader worker and each rank has its own store. Generated data
(``data.synthetic``) is not cached: it is made in memory. ``data.cache_dir: memory`` turns the
cache off: every case is then read into memory, as before the cache existed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    import numpy as np

    from densemed.config import Config, DataConfig
    from densemed.data.dataset import Case
    from densemed.tasks.base import Task

#: bump when the files of a cached case change meaning
FORMAT = 1
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


class CaseStore:
    """Least-recently-used memory maps of cached cases, bounded in bytes.

    Args:
        budget_mb: the most MiB of arrays held open (``data.cache_mb``).

    Example:
        >>> store = CaseStore(64)
        >>> print(store.held_arrays(), store.held_bytes())
        0 0
    """

    def __init__(self, budget_mb: float) -> None:
        if not budget_mb or float(budget_mb) <= 0:
            from densemed.errors import DensemedError

            raise DensemedError(f"data.cache_mb: must be a positive number of MiB, got {budget_mb!r}")
        self.budget = int(float(budget_mb) * 2**20)
        self._open: OrderedDict[Path, dict[str, np.ndarray]] = OrderedDict()
        self._sizes: dict[Path, int] = {}
        self.built = 0  # cases preprocessed by this process
        self.reused = 0  # cases found in the cache
        self.opened = 0  # times a case's files were mapped (a miss of the in-memory cache)

    def __getstate__(self) -> dict[str, Any]:
        # a worker started by spawn gets an empty store, never another process' maps
        state = dict(self.__dict__)
        state["_open"], state["_sizes"] = OrderedDict(), {}
        return state

    def held_arrays(self) -> int:
        """Number of arrays currently mapped."""
        return sum(len(a) for a in self._open.values())

    def held_bytes(self) -> int:
        """Bytes of the arrays currently mapped."""
        return sum(self._sizes.values())

    def arrays(self, folder: Path) -> dict[str, np.ndarray]:
        """The arrays of the cached case in ``folder`` (``{file stem: memory map}``), most recent first to stay."""
        if folder in self._open:
            self._open.move_to_end(folder)
            return self._open[folder]
        import numpy as np

        # copy-on-write maps: writable for torch.from_numpy, never written back to the cache
        arrays = {p.stem: np.load(p, mmap_mode="c") for p in sorted(folder.glob("*.npy"))}
        size = sum(int(a.nbytes) for a in arrays.values())
        while self._open and self.held_bytes() + size > self.budget:
            old, _ = self._open.popitem(last=False)  # the maps close when their last view goes
            self._sizes.pop(old, None)
        self._open[folder] = arrays
        self._sizes[folder] = size
        self.opened += 1
        return arrays


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


def write_case(folder: Path, case: Case, info: dict[str, Any]) -> None:
    """Write ``case`` into ``folder`` atomically (a temporary folder renamed when complete)."""
    import numpy as np

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
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
        (tmp / "info.json").write_text(json.dumps({**info, "maps": keys}, default=str))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process (rank) finished the same case first: keep its copy
            if not (folder / "info.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def open_case(folder: Path, store: CaseStore) -> CachedCase:
    """The cached case in ``folder``."""
    info = json.loads((folder / "info.json").read_text())
    fields = pickle.loads((folder / "fields.pkl").read_bytes())
    return CachedCase(folder, store, fields, info.get("maps", []))


def cached_loader(cfg: Config, task: Task) -> Callable[[str, Any, Any], Case | CachedCase]:
    """``load(name, image_path, label_path)`` through the cache (the task's ``load_case`` when it is off)."""
    root = cache_root(cfg.data)
    if root is None:
        return task.load_case
    store = CaseStore(cfg.data.cache_mb)

    def load(name: str, image: Any, label: Any) -> CachedCase:
        folder = root / "cases" / case_key(cfg, task.name, name, image, label)
        if (folder / "info.json").is_file():
            store.reused += 1
        else:
            case = task.load_case(name, image, label)
            sources = [str(p) for p in ([image] if isinstance(image, (str, Path)) else image)]
            write_case(folder, case, {"name": name, "images": sources, "label": str(label) if label else None})
            store.built += 1
            del case  # only the memory-mapped copy stays
        return open_case(folder, store)

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
    from densemed.errors import DensemedError

    cfg = config.load(args.config, args.set)
    if cfg.data.synthetic is not None:
        raise DensemedError("data.synthetic: generated data is made in memory and not cached; nothing to do")
    root = cache_root(cfg.data)
    if root is None:
        raise DensemedError("data.cache_dir: the cache is off (memory); set data.cache_dir to a folder or remove it")
    tic = time.perf_counter()
    train, val = load_cases(cfg, tasks.build(cfg))
    cases = [c for c in train + val if isinstance(c, CachedCase)]
    store = cases[0].store if cases else None
    size = sum(p.stat().st_size for c in cases for p in c.folder.iterdir()) / 2**20
    built, reused = (store.built, store.reused) if store else (0, 0)
    print(f"{len(cases)} cases in {root / 'cases'}: {built} preprocessed, {reused} already cached "
          f"({size:.1f} MiB, {time.perf_counter() - tic:.1f} s)")
    return 0
