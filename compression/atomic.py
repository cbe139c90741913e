"""Atomic file writes: a reader, or a process killed mid-write, never sees a partial file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` and rename ``tmp`` onto ``path``, so ``path`` is never partial.

    The temporary name carries the process id, so processes writing the same file at once
    (two batch jobs caching one baseline) do not write into each other's temporary file.
    Readers see the old file or the whole new one (``os.replace`` is atomic).

    Args:
        path: The file to write.
        write: Writes the whole content to the path it is given.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
