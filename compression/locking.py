"""Exclusive folder locks: one process at a time works in a run or batch folder.

A lock is an ``fcntl`` lock on a ``.lock`` file that also holds the holder's PID, so the
refusal of a second process names it; the file is removed when the lock is released. The
operating system drops the lock when its holder dies, however it dies, so a lock left by
a killed process is taken over at once (its PID is simply overwritten). Within one
process the lock is re-entrant: a search holds its run folder while it runs its episodes
and finish, which take the same lock again.

>>> with hold(Path("runs/r1"), "search"):  # doctest: +SKIP
...     pass
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from autoshrink.compression.errors import AutoshrinkError

LOCK_FILE = ".lock"
_held: dict[Path, list[int]] = {}  # lock file -> [fd, depth]


class FolderLockedError(AutoshrinkError):
    """Another process works in the folder."""


@contextlib.contextmanager
def hold(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (creating the folder), or refuse at once.

    Args:
        folder: The run or batch folder.
        what: What the holder does there, for the message (``"search"``, ``"batch"``).

    Raises:
        FolderLockedError: If another live process holds the lock.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AutoshrinkError(f"cannot use {folder} as a folder: {exc.strerror or exc}") from exc
    path = (folder / LOCK_FILE).resolve()
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    fd = _acquire(path, folder, what)
    _held[path] = [fd, 1]
    try:
        yield
    finally:
        del _held[path]
        # Removed while still held, so that no one can lock this file once it is gone: a
        # process that opened it before sees, once it has the lock, that the name now
        # points elsewhere, and tries again (see _acquire).
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def check_free(folder: Path, what: str) -> None:
    """Refuse at once if ``folder`` is no folder, or another process holds its lock.

    Creates nothing, so a command can check its output folder before hours of work.

    Raises:
        AutoshrinkError: If ``folder`` exists and is not a directory.
        FolderLockedError: If another live process holds the lock.
    """
    if folder.exists() and not folder.is_dir():
        raise AutoshrinkError(f"{folder} exists and is not a folder")
    path = folder / LOCK_FILE
    if not path.is_file() or path.resolve() in _held:
        return
    try:
        os.close(_acquire(path, folder, what, create=False))
    except FileNotFoundError:  # released (and removed) since it was seen: free
        pass


def _acquire(path: Path, folder: Path, what: str, create: bool = True) -> int:
    import fcntl

    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:  # released (and removed) since it was seen
            if not create:
                raise
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FolderLockedError(
                f"{folder} is in use by process {holder} (another {what} there); wait for it "
                "to finish or choose another folder"
            ) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # locked a file its holder removed on release: lock the new one
    else:  # pragma: no cover (a hundred releases in a row)
        raise FolderLockedError(f"{folder} is busy: its lock changed hands too often")
    if create:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
