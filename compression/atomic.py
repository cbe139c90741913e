"""Atomic file writes: a reader, or a process killed mid-write, never sees a partial file."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any


def temporary_path(path: Path) -> Path:
    """A temporary name next to ``path``, unique to this process and this call.

    It lies in the target's folder (so ``os.replace`` is a rename on one file system) and
    carries the process id and a random suffix, so two processes, or two threads, writing
    the same file never write into each other's temporary file.
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` and rename ``tmp`` onto ``path``, so ``path`` is never partial.

    The temporary file is flushed to disk before the rename, and removed if ``write``
    fails (the old ``path``, if any, is then unchanged). Readers see the old file or the
    whole new one (``os.replace`` is atomic).

    Args:
        path: The file to write.
        write: Writes the whole content to the path it is given.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
