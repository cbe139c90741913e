from __future__ import annotations

import gzip
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from autoshrink.compression.data import (
    DATASETS,
    TEST_FRACTION,
    DataSplits,
    load_dataset,
)
from autoshrink.compression.data_sources import SYSTEM_DIRS
from autoshrink.compression.errors import DataError


def _rows(dataset: TensorDataset) -> list[bytes]:
    return [row.numpy().tobytes() for row in dataset.tensors[0]]


def _unique_rows(splits: DataSplits) -> dict[str, set[bytes]]:
    """Rows of each split, without images that occur twice in the whole dataset."""
    rows = {name: _rows(getattr(splits, name)) for name in ("train", "val", "test")}
    everything = [r for part in rows.values() for r in part]
    values, counts = np.unique(np.array(everything, dtype=object), return_counts=True)
    duplicated = set(values[counts > 1])
    return {name: set(part) - duplicated for name, part in rows.items()}


def test_digits_shapes_and_sizes() -> None:
    splits = load_dataset("digits")
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 8)
    n_train, n_val, n_test = len(splits.train), len(splits.val), len(splits.test)
    assert n_train + n_val + n_test == 1797
    assert n_test == pytest.approx(TEST_FRACTION * 1797, abs=1)
    assert n_val == pytest.approx(0.1 * (n_train + n_val), abs=1)
    x, y = next(iter(splits.loader("train", batch_size=32)))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.long
    assert splits.example_input(4).shape == (4, 1, 8, 8)
    assert not splits.example_input().any()
    # normalised with the dataset's statistics
    train_x = splits.train.tensors[0]
    assert abs(float(train_x.mean())) < 0.1 and abs(float(train_x.std()) - 1) < 0.1
    assert set(splits.train.tensors[1].tolist()) == set(range(10))


def test_splits_are_disjoint() -> None:
    rows = _unique_rows(load_dataset("digits", seed=3))
    assert rows["train"] and rows["val"] and rows["test"]
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


def test_splits_are_deterministic_and_test_is_fixed() -> None:
    a, b = load_dataset("digits", seed=1), load_dataset("digits", seed=1)
    for name in ("train", "val", "test"):
        for ta, tb in zip(getattr(a, name).tensors, getattr(b, name).tensors, strict=True):
            assert torch.equal(ta, tb)
    c = load_dataset("digits", seed=2)
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    assert torch.equal(a.test.tensors[0], c.test.tensors[0])  # test never depends on seed


def test_train_subset_is_a_seeded_subset_of_train() -> None:
    full = load_dataset("digits", seed=0)
    sub = load_dataset("digits", seed=0, train_subset=200)
    assert len(sub.train) == 200
    assert len(sub.val) == len(full.val) and len(sub.test) == len(full.test)
    assert set(_rows(sub.train)) <= set(_rows(full.train))
    assert set(sub.train.tensors[1].tolist()) == set(range(10))  # stratified
    again = load_dataset("digits", seed=0, train_subset=200)
    assert torch.equal(sub.train.tensors[0], again.train.tensors[0])
    assert len(load_dataset("digits", train_subset=10**6).train) == len(full.train)


def test_loader_order_is_seeded_and_covers_each_sample_once() -> None:
    splits = load_dataset("fake")

    def labels(seed: int) -> list[int]:
        loader = splits.loader("train", batch_size=50, shuffle=True, seed=seed)
        return [int(v) for _, y in loader for v in y]

    assert labels(0) == labels(0)
    assert labels(0) != labels(1)
    assert sorted(labels(0)) == sorted(splits.train.tensors[1].tolist())
    unshuffled = [int(v) for _, y in splits.loader("train", batch_size=50) for v in y]
    assert unshuffled == splits.train.tensors[1].tolist()
    assert all(len(y) == 50 for _, y in splits.loader("train", batch_size=50, drop_last=True))


def test_fake_is_small_and_cifar_shaped() -> None:
    splits = load_dataset("fake")
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 32)
    assert 100 < len(splits.train) + len(splits.val) + len(splits.test) < 1000
    assert splits.train.tensors[0].shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("name", ["nope", "cifar-10", "imagefolder"])
def test_unknown_dataset_lists_valid_names(name: str) -> None:
    with pytest.raises(DataError, match="unknown dataset") as info:
        load_dataset(name)
    for valid in DATASETS:
        assert valid in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": 0.0}, {"val_fraction": 1.0}, {"train_subset": 0}]
)
def test_bad_fractions_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(DataError):
        load_dataset("digits", **kwargs)


def test_unknown_split_raises() -> None:
    with pytest.raises(DataError, match="split"):
        load_dataset("fake").loader("training")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX (ubyte) file, gzipped, as the Fashion-MNIST distribution has them."""
    magic = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(magic + dims + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_gzipped_idx_files_from_data_dir(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 30)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    splits = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 28)
    assert len(splits.train) + len(splits.val) == 120
    assert len(splits.test) == 30
    assert splits.test.tensors[1].tolist() == [i % 10 for i in range(30)]


@pytest.mark.skipif(
    not (SYSTEM_DIRS["fashion-mnist"] / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_from_debian_path() -> None:
    splits = load_dataset("fashion-mnist")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54_000, 6_000, 10_000)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 28)
    assert set(splits.test.tensors[1].tolist()) == set(range(10))


def test_cifar10_without_files_or_network_raises_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    calls: list[str] = []

    def no_network(self: object) -> None:
        calls.append("download")
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "empty")
    assert time.perf_counter() - start < 10
    assert calls == ["download"]
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "empty") in message and "download failed" in message


def test_imagefolder_splits_and_resizes(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    splits = load_dataset(f"imagefolder:{tmp_path}", val_fraction=0.25)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (2, 3, 64)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20
    assert len(splits.test) == 4
    x, y = next(iter(splits.loader("train", batch_size=4)))
    assert x.shape == (4, 3, 64, 64) and y.shape == (4,)
    indices = [set(getattr(splits, s).indices) for s in ("train", "val", "test")]
    assert not (indices[0] & indices[1] or indices[0] & indices[2] or indices[1] & indices[2])


def test_imagefolder_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'absent'}")
