"""Where each dataset's images come from: in memory, on disk, or downloaded.

* ``digits`` is scikit-learn's, offline; ``fake`` is a small learnable random set.
* ``fashion-mnist`` and ``mnist`` are read from bare IDX files (``--data-dir``, or Debian's
  ``/usr/share/datasets/fashion-mnist``), which are decompressed once into the cache in
  torchvision's layout, or from an earlier torchvision download, or downloaded.
* ``cifar10`` and ``cifar100`` are read or downloaded by torchvision.

A download runs under a socket timeout, and any failure ends in one
:class:`~autoshrink.compression.errors.DataError` that says where the files were looked
for. Splitting into train, val and test is :mod:`autoshrink.compression.data`'s job.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.cache import cache_dir
from autoshrink.compression.errors import DataError

logger = logging.getLogger(__name__)

#: Folders where system packages install datasets (Debian's ``dataset-fashion-mnist``).
SYSTEM_DIRS: dict[str, Path] = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_DOWNLOAD_TIMEOUT_S = 30.0


class Arrays(NamedTuple):
    """A dataset with a native train/test split, as images in [0, 1] (N, C, H, W)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None  # None: carve the test split off train
    test_y: torch.Tensor | None
    num_classes: int


def read_digits(_: Path | None) -> Arrays:
    """scikit-learn's 8x8 digits (1797 images, no test split of their own)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
    y = torch.from_numpy(digits.target).long()
    return Arrays(x, y, None, None, 10)


def read_fake(_: Path | None, n_train: int = 384, n_test: int = 96) -> Arrays:
    """A small, seeded, learnable random set of 32x32 RGB images in 10 classes."""
    # A class-dependent pattern under noise: learnable, so smoke tests can see progress.
    gen = torch.Generator().manual_seed(1234)
    prototypes = torch.randn(10, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n_train + n_test,), generator=gen)
    x = 0.5 * prototypes[y] + torch.randn(len(y), 3, 32, 32, generator=gen)
    return Arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


def _default_root() -> Path:
    return cache_dir() / "datasets"


@contextlib.contextmanager
def _network_timeout(seconds: float = _DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    # torchvision opens URLs without a timeout: a silent firewall would hang us forever.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if old is None else old)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _download(name: str, looked: Sequence[Path], fetch: Callable[[], Arrays]) -> Arrays:
    where = ", ".join(str(p) for p in looked)
    logger.info("%s not found in %s; downloading", name, where)
    try:
        with _network_timeout():
            return fetch()
    except Exception as exc:  # any network or integrity failure ends the same way
        reason = " ".join(str(exc).split())[:200]
        raise DataError(
            f"{name} not found in {where} and download failed ({type(exc).__name__}: "
            f"{reason}); put the files in --data-dir or retry with a network"
        ) from exc


def _has_idx_files(folder: Path) -> bool:
    return all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in _IDX_FILES)


def _stage_idx_files(src: Path, raw: Path) -> None:
    """Put (decompressed) IDX files where torchvision's MNIST readers expect them."""
    raw.mkdir(parents=True, exist_ok=True)
    for f in _IDX_FILES:
        source = src / f if (src / f).is_file() else src / f"{f}.gz"
        dst = raw / f
        if dst.is_file() and dst.stat().st_mtime >= source.stat().st_mtime:
            continue
        # Atomic: a concurrent reader never sees half a file.
        write_atomic(dst, lambda tmp, source=source: _copy(source, tmp))


def _copy(source: Path, dst: Path) -> None:
    """Copy ``source`` to ``dst``, decompressing a ``.gz``."""
    if source.suffix == ".gz":
        with gzip.open(source, "rb") as fin, dst.open("wb") as fout:
            shutil.copyfileobj(fin, fout)
    else:
        shutil.copyfile(source, dst)


def read_mnist_like(name: str, data_dir: Path | None) -> Arrays:
    """``fashion-mnist`` or ``mnist``: IDX files, an earlier download, or a download.

    Raises:
        DataError: If the files are nowhere and the download fails.
    """
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST

    def read(root: Path, download: bool = False) -> Arrays:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
        return Arrays(
            train.data.unsqueeze(1).float() / 255.0,
            train.targets.long(),
            test.data.unsqueeze(1).float() / 255.0,
            test.targets.long(),
            len(cls.classes),
        )

    download_root = data_dir or _default_root()
    looked = [p for p in (data_dir, SYSTEM_DIRS.get(name)) if p is not None]
    for folder in dict.fromkeys([*looked, download_root]):
        # torchvision's own layout (ROOT/FashionMNIST/raw/...), e.g. an earlier download.
        if (folder / cls.__name__ / "raw").is_dir():
            with contextlib.suppress(RuntimeError):
                return read(folder)
        if folder in looked and _has_idx_files(folder):  # bare IDX files, as Debian has them
            logger.info("reading %s from %s", name, folder)
            # Decompressed copies go to the cache, one folder per source folder.
            source_key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
            staged = _default_root() / "staged" / f"{name}-{source_key}"
            _stage_idx_files(folder, staged / cls.__name__ / "raw")
            return read(staged)
    return _download(name, looked or [download_root], lambda: read(download_root, True))


def _hwc_to_chw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def read_cifar(name: str, data_dir: Path | None) -> Arrays:
    """``cifar10`` or ``cifar100`` from ``data_dir`` (or the cache), else downloaded.

    Raises:
        DataError: If the files are not there and the download fails.
    """
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root = data_dir or _default_root()

    def read(download: bool = False) -> Arrays:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
        return Arrays(
            _hwc_to_chw(train.data),
            torch.tensor(train.targets),
            _hwc_to_chw(test.data),
            torch.tensor(test.targets),
            len(train.classes),
        )

    try:
        return read()
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        return _download(name, [root], lambda: read(download=True))
