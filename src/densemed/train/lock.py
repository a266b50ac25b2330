"""One ``densemed train`` per run folder: a lock file in ``train.out``.

:func:`acquire` creates ``train.out/.densemed.lock`` holding the owner's pid, host, process start
time and command line, and takes an exclusive ``flock`` on it for as long as the run lives. A
second process pointed at the same folder is refused with one line naming the owner::

    runs/x: another densemed train (pid 4242 on node1, since 2026-01-02 10:00:00) is using this run
    folder; wait for it to end or choose another train.out

A lock left by a process that died (``kill -9``, a crash, a lost node) is **stale**: the kernel
has dropped its ``flock``, and its pid is no longer a live process of this host (or is one started
later: the recorded start time differs); the next run takes it over and says so. On file systems
without ``flock`` (some network mounts) the pid alone decides; a lock from another host is then
kept, and the message says which file to delete if that run is gone.

Taking a lock also removes the temporary files that writers of dead processes left in the folder
(``.last.pt.tmp<pid>`` of a run killed while saving a checkpoint).

Within one process the lock is re-entrant (a notebook or a test suite trains into the same
folder more than once); it is released — the file removed — when the last owner object is
garbage-collected, or at exit.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from densemed.errors import DensemedError

PathType = str | os.PathLike  # not densemed.typing: that imports torch, and the lock must stay light

try:
    import fcntl
except ImportError:  # Windows: the pid decides
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".densemed.lock"


@dataclass
class _Held:
    """A lock this process holds: the file, its descriptor (flock mode) and the number of owners."""

    path: Path
    fd: int | None
    owners: int = 0


_HELD: dict[str, _Held] = {}


def _proc_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name may contain spaces


def _me() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "proc_start": _proc_start(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def alive(info: dict[str, Any]) -> bool:
    """Whether the process recorded in a lock may still run (another host's: assumed so)."""
    if info.get("host") != socket.gethostname():
        return True
    pid = int(info["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    start = _proc_start(pid)
    return start is None or info.get("proc_start") in (None, start)


def _busy(folder: Path, path: Path, info: dict[str, Any] | None) -> DensemedError:
    if info is None:
        who = "another densemed train"
    else:
        who = f"another densemed train (pid {info['pid']} on {info.get('host')}, since {info.get('since')})"
    hint = ""
    if info is not None and info.get("host") != socket.gethostname():
        hint = f"; if that run is gone, delete {path}"
    return DensemedError(f"{folder}: {who} is using this run folder; wait for it to end or choose another "
                         f"train.out{hint}")


def _stale_note(path: Path, info: dict[str, Any] | None, log: Callable[[str], None] | None) -> None:
    if info is not None and info.get("pid") != os.getpid() and log is not None:
        log(f"{path}: took over the stale lock of pid {info['pid']} on {info.get('host')} (that process is gone)")


def _write(fd: int) -> None:
    data = (json.dumps(_me()) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _take(folder: Path, path: Path, log: Callable[[str], None] | None) -> _Held:
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is None:
                raise OSError("no flock")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(folder, path, _read(path)) from None
        except OSError:  # flock not supported here: the pid decides
            os.close(fd)
            return _take_by_pid(folder, path, log)
        try:  # the owner may have released (removed) the file between our open and our flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        _stale_note(path, _read(path), log)
        _write(fd)
        return _Held(path, fd)
    raise DensemedError(f"{path}: could not take the run lock (the file keeps being replaced)")


def _take_by_pid(folder: Path, path: Path, log: Callable[[str], None] | None) -> _Held:
    info = _read(path)
    if info is not None and info.get("pid") != os.getpid():
        if alive(info):
            raise _busy(folder, path, info)
        _stale_note(path, info, log)
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(_me()) + "\n")
    os.replace(tmp, path)
    return _Held(path, None)


def acquire(folder: PathType, owner: object | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Lock run folder ``folder`` (which must exist) for this process; returns the lock file.

    Args:
        folder: the run folder (``train.out``).
        owner: the object the lock lives with (the :class:`~densemed.train.Trainer`): the lock is
            released when it is garbage-collected. ``None``: call :func:`release` yourself.
        log: where the note about a stale lock taken over goes.

    Raises:
        DensemedError: another live process holds the folder (one line naming it).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> print(acquire(folder).name)
        .densemed.lock
        >>> release(folder)
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    key = str(path.resolve())
    held = _HELD.get(key)
    if held is None:
        held = _HELD[key] = _take(folder, path, log)
        from densemed.data.io import remove_stale_temporaries

        remove_stale_temporaries(folder)  # e.g. .last.pt.tmp<pid> of a run killed while saving
    held.owners += 1
    if owner is not None:
        weakref.finalize(owner, _drop, key)
    return path


def release(folder: PathType) -> None:
    """Give back one hold on ``folder``'s lock (taken with ``owner=None``)."""
    _drop(str((Path(folder) / LOCK_NAME).resolve()))


def _drop(key: str) -> None:
    held = _HELD.get(key)
    if held is None:
        return
    held.owners -= 1
    if held.owners > 0:
        return
    del _HELD[key]
    try:
        if held.fd is not None:
            held.path.unlink(missing_ok=True)  # while still locked: nobody can be between open and flock on it
        elif (_read(held.path) or {}).get("pid") == os.getpid():
            held.path.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        if held.fd is not None:
            os.close(held.fd)  # drops the flock


def held(folder: PathType) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return str((Path(folder) / LOCK_NAME).resolve()) in _HELD
