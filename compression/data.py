"""Datasets with fixed, seeded train/val/test splits.

Every dataset comes back as a :class:`DataSplits`. The rules:

* ``val`` is always carved out of the training data with ``seed``. A search scores
  policies on ``val``; ``test`` is only for final reports.
* Where a dataset has no test split of its own (``digits``, ``imagefolder:PATH``), 20 % is
  carved off first with a fixed seed, so the test set is the same for every ``seed``.
* Images are normalised with per-dataset mean and std. Small datasets live in memory as
  ``TensorDataset``; an image folder is read lazily.

>>> splits = load_dataset("digits")
>>> splits.example_input().shape
torch.Size([1, 1, 8, 8])
>>> len(splits.train) + len(splits.val) + len(splits.test)
1797
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
)

from autoshrink.compression.data_sources import (
    Arrays,
    check_data_dir,
    read_cifar,
    read_digits,
    read_fake,
    read_mnist_like,
)
from autoshrink.compression.device import pins_memory
from autoshrink.compression.errors import DataError
from autoshrink.compression.image_folder import check_image_folder, load_rgb
from autoshrink.compression.names import DATASETS

logger = logging.getLogger(__name__)

#: Accepted dataset names, for ``--help``.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Where no test split exists, this fraction is held out as test, always with this seed.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
#: Side length every ``imagefolder:PATH`` image is resized to.
IMAGEFOLDER_SIZE = 64
#: Per-channel (mean, std) of each dataset's training images in [0, 1].
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.3053,), (0.3760,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
}


@dataclass(frozen=True)
class DataSplits:
    """A dataset split three ways, with the shape facts a model needs.

    Args:
        name: The dataset name as given to :func:`load_dataset`.
        train: Training samples ``(image, label)``, val already removed.
        val: Held out from the training data with the seed; what a search scores on.
        test: For final reports only.
        num_classes: Number of labels.
        in_channels: Image channels.
        image_size: Image height and width.
        variant: The split settings that differ from the defaults (``""`` when none), e.g.
            ``"val0.2-sub10000"``; caches of things trained on these splits key on it.
        pin_memory: Whether every loader pins its batches (:meth:`for_device` sets it for
            CUDA); the batches and their order are the same either way.
    """

    name: str
    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any]
    num_classes: int
    in_channels: int
    image_size: int
    variant: str = ""
    pin_memory: bool = False

    def for_device(self, device: torch.device) -> DataSplits:
        """These splits, their loaders pinning batches when they feed a CUDA device."""
        return replace(self, pin_memory=pins_memory(device))

    def loader(
        self,
        split: str = "train",
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> DataLoader[Any]:
        """A single-process loader over one split; the same seed gives the same order.

        Args:
            split: ``train``, ``val`` or ``test``.
            batch_size: Samples per batch.
            shuffle: Reshuffle at every pass over the data.
            seed: Seeds the loader's own generator (the global RNG is not used).
            drop_last: Drop a last, incomplete batch.

        Returns:
            A ``DataLoader`` yielding ``(images, labels)`` batches.

        Raises:
            DataError: If ``split`` is not one of :data:`SPLITS`.
        """
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        dataset: Dataset[Any] = getattr(self, split)
        generator = torch.Generator().manual_seed(seed)
        if isinstance(dataset, TensorDataset):
            # Fetch whole batches with one index op instead of collating sample by sample.
            order = (
                RandomSampler(dataset, generator=generator)
                if shuffle
                else SequentialSampler(dataset)
            )
            batches = BatchSampler(order, batch_size, drop_last)
            return DataLoader(
                dataset, sampler=batches, batch_size=None, num_workers=0, pin_memory=self.pin_memory
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last,
            num_workers=0,
            pin_memory=self.pin_memory,
        )

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros shaped like a batch of inputs, e.g. for tracing or MAC counting."""
        return torch.zeros(batch, self.in_channels, self.image_size, self.image_size)


def load_dataset(
    name: str = "digits",
    data_dir: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    train_subset: int | None = None,
) -> DataSplits:
    """Load a dataset and split it into train, val and test.

    Args:
        name: One of :data:`DATASETS`. ``digits`` is scikit-learn's 8x8 digits (offline).
            ``fashion-mnist`` is read from ``data_dir``, then from Debian's
            ``/usr/share/datasets/fashion-mnist``, then downloaded. ``mnist``, ``cifar10``
            and ``cifar100`` are read from ``data_dir`` or downloaded by torchvision.
            ``imagefolder:PATH`` reads a torchvision ``ImageFolder`` (one folder per class),
            resized to ``IMAGEFOLDER_SIZE``. ``fake`` is a small, learnable random set.
        data_dir: Where the dataset files are, or are downloaded to. Default: the
            ``datasets`` folder of the autoshrink cache.
        seed: Seeds the val split and ``train_subset``.
        val_fraction: Fraction of the training data held out as val.
        train_subset: Keep only this many (seeded, class-stratified) training samples,
            e.g. for CPU-bound benchmarks. Val and test are unaffected.

    Returns:
        The three splits and the shape facts.

    Raises:
        DataError: On an unknown name, bad fractions, or data that can neither be found
            nor downloaded.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if train_subset is not None and train_subset < 1:
        raise DataError(f"train_subset must be a positive count, got {train_subset}")
    root = Path(data_dir).expanduser() if data_dir is not None else None
    check_data_dir(root)
    key = name.strip().lower()
    variant = split_variant(val_fraction, train_subset)
    if key.startswith("imagefolder:"):
        splits = _imagefolder(name, name.split(":", 1)[1], seed, val_fraction, train_subset)
        return replace(splits, variant=variant)
    readers: dict[str, Callable[[Path | None], Arrays]] = {
        "digits": read_digits,
        "fake": read_fake,
        "fashion-mnist": lambda d: read_mnist_like("fashion-mnist", d),
        "mnist": lambda d: read_mnist_like("mnist", d),
        "cifar10": lambda d: read_cifar("cifar10", d),
        "cifar100": lambda d: read_cifar("cifar100", d),
    }
    if key not in readers:
        raise DataError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    arrays = readers[key](root)
    return replace(_tensor_splits(key, arrays, seed, val_fraction, train_subset), variant=variant)


def split_variant(val_fraction: float = 0.1, train_subset: int | None = None) -> str:
    """Name the split settings that differ from :func:`load_dataset`'s defaults."""
    parts = [] if val_fraction == 0.1 else [f"val{val_fraction:g}"]
    if train_subset is not None:
        parts.append(f"sub{train_subset}")
    return "-".join(parts)


def _split(labels: np.ndarray, size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, class-stratified split of ``range(len(labels))`` into (rest, picked).

    ``size`` is the fraction or the count of samples picked.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        rest, picked = train_test_split(index, test_size=size, random_state=seed, stratify=labels)
    except ValueError:  # a class too small to stratify: fall back to a plain seeded split
        rest, picked = train_test_split(index, test_size=size, random_state=seed)
    return np.sort(rest), np.sort(picked)


def _train_val(
    labels: np.ndarray, seed: int, val_fraction: float, train_subset: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``labels``) of the train and val parts of a training pool."""
    train, val = _split(labels, val_fraction, seed)
    if train_subset is not None and train_subset < len(train):
        _, picked = _split(labels[train], train_subset, seed)
        train = train[picked]
    return train, val


def _tensor_splits(
    name: str, arrays: Arrays, seed: int, val_fraction: float, train_subset: int | None
) -> DataSplits:
    x, y = arrays.train_x, arrays.train_y
    if arrays.test_x is None or arrays.test_y is None:
        pool, test = _split(y.numpy(), TEST_FRACTION, TEST_SPLIT_SEED)
        test_x, test_y = x[test], y[test]
        x, y = x[pool], y[pool]
    else:
        test_x, test_y = arrays.test_x, arrays.test_y
    train, val = _train_val(y.numpy(), seed, val_fraction, train_subset)
    norm = _normalizer(name)
    train_t, val_t = torch.from_numpy(train), torch.from_numpy(val)
    return DataSplits(
        name=name,
        train=TensorDataset(norm(x[train_t]), y[train_t]),
        val=TensorDataset(norm(x[val_t]), y[val_t]),
        test=TensorDataset(norm(test_x), test_y),
        num_classes=arrays.num_classes,
        in_channels=int(x.shape[1]),
        image_size=int(x.shape[-1]),
    )


def _normalizer(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in STATS:  # e.g. ``fake``: already zero-mean, unit-variance
        return lambda x: x.float().contiguous()
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in STATS[name])
    return lambda x: ((x.float() - mean) / std).contiguous()


def _imagefolder(
    name: str, path_str: str, seed: int, val_fraction: float, train_subset: int | None
) -> DataSplits:
    from torchvision import datasets, transforms

    path = Path(path_str).expanduser()
    if not path.is_dir():
        raise DataError(f"image folder not found: {path}")
    check_image_folder(path)
    mean, std = STATS["imagefolder"]
    transform = transforms.Compose(
        [
            transforms.Resize((IMAGEFOLDER_SIZE, IMAGEFOLDER_SIZE)),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    try:
        # The default loader converts every image to RGB, so there are always 3 channels.
        folder = datasets.ImageFolder(str(path), transform=transform, loader=load_rgb)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"cannot read image folder {path}: {exc}") from exc
    labels = np.asarray(folder.targets)
    pool, test = _split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
    train, val = _train_val(labels[pool], seed, val_fraction, train_subset)
    return DataSplits(
        name=name,
        train=Subset(folder, pool[train].tolist()),
        val=Subset(folder, pool[val].tolist()),
        test=Subset(folder, test.tolist()),
        num_classes=len(folder.classes),
        in_channels=3,
        image_size=IMAGEFOLDER_SIZE,
    )
