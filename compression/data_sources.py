"""Where each dataset's images come from: in memory, on disk, or downloaded.

* ``digits`` is scikit-learn's, offline; ``fake`` is a small learnable random set.
* ``fashion-mnist`` and ``mnist`` are read from bare IDX files, raw or gzipped
  (``--data-dir``, or else Debian's ``/usr/share/datasets/fashion-mnist``), or from an
  earlier torchvision download, or downloaded; every file is checked as it is read
  (:mod:`autoshrink.compression.idx_files`).
* ``cifar10`` and ``cifar100`` are read or downloaded by torchvision.

A download runs under a socket timeout, and any failure ends in one
:class:`~autoshrink.compression.errors.DataError` that says where the files were looked
for. Splitting into train, val and test is :mod:`autoshrink.compression.data`'s job.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from autoshrink.compression.cache import cache_dir
from autoshrink.compression.errors import DataError
from autoshrink.compression.idx_files import IDX_FILES, NUM_CLASSES, idx_path, read_idx_pair

logger = logging.getLogger(__name__)

#: Folders where system packages install datasets (Debian's ``dataset-fashion-mnist``).
SYSTEM_DIRS: dict[str, Path] = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
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


def _idx_set(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder`` (raw or gzipped), or None if any is missing."""
    found = [idx_path(folder, f) for f in IDX_FILES]
    return None if any(p is None for p in found) else [p for p in found if p is not None]


def _read_idx_set(name: str, files: Sequence[Path]) -> Arrays:
    logger.info("reading %s from %s", name, files[0].parent)
    train_x, train_y = read_idx_pair(files[0], files[1])
    test_x, test_y = read_idx_pair(files[2], files[3])

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.copy()).unsqueeze(1).float() / 255.0

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return Arrays(images(train_x), labels(train_y), images(test_x), labels(test_y), NUM_CLASSES)


def check_data_dir(data_dir: Path | None) -> None:
    """A given data folder must be a folder (or not exist yet: a download creates it).

    Raises:
        DataError: If ``data_dir`` exists and is not a folder.
    """
    if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} is not a folder")


def read_mnist_like(name: str, data_dir: Path | None) -> Arrays:
    """``fashion-mnist`` or ``mnist``: IDX files, an earlier download, or a download.

    A given ``data_dir`` is the only place looked in (and downloaded to): a folder without
    the dataset's files never falls back to another copy. Without one, Debian's folder
    (``fashion-mnist`` only) and then the cache are looked in.

    Raises:
        DataError: If the files are unreadable, or nowhere and the download fails.
    """
    from torchvision import datasets

    cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
    check_data_dir(data_dir)
    download_root = data_dir or _default_root()
    system = SYSTEM_DIRS.get(name)
    looked = [data_dir] if data_dir is not None else [p for p in (system, download_root) if p]
    for folder in looked:
        # Bare IDX files (as Debian has them), or torchvision's layout (ROOT/MNIST/raw/...).
        for where in (folder, folder / cls.__name__ / "raw"):
            files = _idx_set(where)
            if files is not None:
                return _read_idx_set(name, files)

    def fetch() -> Arrays:
        cls(str(download_root), train=True, download=True)  # fetches all four files
        files = _idx_set(download_root / cls.__name__ / "raw")
        if files is None:
            raise RuntimeError("the download left no IDX files")
        return _read_idx_set(name, files)

    return _download(name, looked, fetch)


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
