"""Checked reading of the IDX files that ``mnist`` and ``fashion-mnist`` come in.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions),
one big-endian u32 per dimension, then the values. Only what these datasets use is read:
unsigned bytes (type ``0x08``), images of 28x28 and labels below 10, raw or gzipped. The
header is checked before the data is read, the data is read in bounded chunks (a header
claiming a billion images reads no more than the file holds), and any mismatch (garbage,
a short or long file, images and labels of different counts) is one
:class:`~autoshrink.compression.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from autoshrink.compression.errors import DataError

#: The four files of a dataset, train then test, images then labels.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IMAGE_SIZE = 28
NUM_CLASSES = 10
#: Most images one file may claim: MNIST-style sets have 60,000 (EMNIST about 800,000).
MAX_ITEMS = 1_000_000
_UBYTE = 0x08
_CHUNK = 1 << 24


def idx_path(folder: Path, name: str) -> Path | None:
    """``folder/name``, else ``folder/name.gz``, else None."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` and labels ``(N,)`` as uint8, checked against each other.

    Raises:
        DataError: If either file is not such an IDX file or their counts differ.
    """
    images = read_idx(images_path, (IMAGE_SIZE, IMAGE_SIZE))
    labels = read_idx(labels_path, ())
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images):,} images but {labels_path} has {len(labels):,} labels"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{labels_path} has label {int(labels.max())}, not 0..{NUM_CLASSES - 1}")
    return images, labels


def read_idx(path: Path, item_shape: tuple[int, ...]) -> np.ndarray:
    """One IDX file of unsigned bytes whose items have ``item_shape``.

    Raises:
        DataError: On an unreadable file, a foreign header, or a size its header disagrees
            with.
    """
    try:
        with _open(path) as fh:
            dims = _header(path, fh, 1 + len(item_shape))
            if tuple(dims[1:]) != item_shape:
                raise DataError(
                    f"{path} holds items of shape {tuple(dims[1:])}, not {item_shape}"[:300]
                )
            if dims[0] > MAX_ITEMS:
                raise DataError(f"{path} claims {dims[0]:,} items, over the {MAX_ITEMS:,} allowed")
            want = int(np.prod(dims))
            data = _read_at_most(fh, want + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
    if len(data) != want:
        what = "is truncated" if len(data) < want else "has trailing bytes"
        raise DataError(f"{path} {what}: its header promises {want:,} data bytes")
    return np.frombuffer(data, np.uint8).reshape(dims)


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _header(path: Path, fh: BinaryIO, ndim: int) -> list[int]:
    magic = fh.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != _UBYTE or magic[3] != ndim:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes in {ndim} dimension(s) "
            f"(magic {magic.hex() or 'missing'})"
        )
    raw = fh.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise DataError(f"{path} is truncated: its IDX header is incomplete")
    return [int.from_bytes(raw[i : i + 4], "big") for i in range(0, 4 * ndim, 4)]


def _read_at_most(fh: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes, in chunks: memory follows what the file holds, not its claim."""
    parts, have = [], 0
    while have < limit:
        chunk = fh.read(min(_CHUNK, limit - have))
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)
