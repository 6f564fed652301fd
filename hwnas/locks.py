"""Advisory locks: one writer per table, run directory or output file, refused at once otherwise.

`hold(path, what)` takes an exclusive `flock` on a hidden sibling `.NAME.lock` (a sibling, not a
file inside: a run directory must stay empty until its run writes it). The lock file holds the
writer's PID, so a refused second writer is told who holds it. The kernel drops the lock when its
process dies (kill -9 included), so a crash never leaves a stale lock; the file is removed on
release. POSIX only (fcntl), like every machine hwnas targets.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .errors import HwnasError


class LockError(HwnasError):
    """Another process is writing the same table, run directory or file, or no lock can be made."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of `path`: `.NAME.lock` beside it; for a path in a folder not made yet, the
    lock of that folder's first missing component (nothing is created before the work starts)."""
    path = Path(path).absolute()
    while not path.parent.is_dir() and path.parent != path.parent.parent:
        path = path.parent
    return path.parent / f".{path.name}.lock"


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text(encoding="ascii").strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "another process"


def _open_locked(lock: Path, what: str, target: Path) -> int:
    """Open `lock` and hold its flock; the inode check catches a file unlinked by a releasing holder."""
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockError(f"cannot create the lock file {lock} for {what} {target} ({exc.strerror}); "
                            "choose an output in a folder you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockError(f"cannot lock {lock} ({exc.strerror}); choose an output on a local disk") from None
            raise LockError(
                f"{what} {target} is being written by {_holder(lock)} (lock {lock}); wait for it to finish or stop it, "
                "or write elsewhere"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed this file as we opened it: take the new one
    raise LockError(f"cannot lock {lock}: it keeps being replaced; retry")


@contextlib.contextmanager
def hold(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Exclusive advisory lock on `path` (a file or directory, existing or not) for the block."""
    with _hold_lock(lock_path(path), what, Path(path)) as lock:
        yield lock


@contextlib.contextmanager
def hold_all(paths, what: str = "output") -> Iterator[None]:
    """`hold` every path: each lock file once (two outputs in a folder not made yet share one), in
    a fixed order, so two writers of overlapping sets cannot deadlock."""
    locks = {}
    for path in paths:
        locks.setdefault(lock_path(path), Path(path))
    with contextlib.ExitStack() as stack:
        for lock in sorted(locks):
            stack.enter_context(_hold_lock(lock, what, locks[lock]))
        yield


@contextlib.contextmanager
def _hold_lock(lock: Path, what: str, target: Path) -> Iterator[Path]:
    fd = _open_locked(lock, what, target)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
