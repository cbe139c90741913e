"""Hostile datasets: every one is refused by ``load_dataset`` in one line naming the file.

Image folders (zero-byte and garbage images, symlink loops, decompression bombs) are
checked when the dataset loads, not halfway through a run; IDX files (garbage, a header
claiming 10⁹ images, images and labels of different counts) are checked as they are read;
a given data folder is the only place looked in.
"""

from __future__ import annotations

import gzip
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from autoshrink.compression import data_sources
from autoshrink.compression.data import load_dataset
from autoshrink.compression.errors import DataError

BILLION = 10**9


def one_line(exc: pytest.ExceptionInfo[DataError], *needles: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 600, text
    for needle in needles:
        assert needle in text, text
    return text


def refused(name: str, *needles: str, data_dir: Path | None = None) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(name, data_dir=data_dir)
    return one_line(info, *needles)


# --- image folders --------------------------------------------------------------------------
def image_folder(root: Path, n: int = 5) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def png_header(width: int, height: int) -> bytes:
    """A PNG that states its size and holds no pixels: all a decompression bomb needs."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def read_every_batch(name: str) -> None:
    splits = load_dataset(name)
    for split in ("train", "val", "test"):
        for _ in splits.loader(split, batch_size=4):
            pass


def test_a_clean_image_folder_still_loads(tmp_path: Path) -> None:
    read_every_batch(f"imagefolder:{image_folder(tmp_path / 'ok')}")


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "cannot read image"), (random.Random(0).randbytes(300), "cannot read image")],
    ids=["zero-byte", "garbage"],
)
def test_an_unreadable_image_is_refused_when_the_folder_loads(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    root = image_folder(tmp_path / "imgs")
    bad = root / "dog" / "bad.png"
    bad.write_bytes(content)
    refused(f"imagefolder:{root}", needle, str(bad))


def test_a_decompression_bomb_is_refused_unread(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs")
    bomb = root / "cat" / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))  # 10¹⁰ pixels, 45 bytes on disk
    refused(f"imagefolder:{root}", str(bomb), "DecompressionBomb")


def test_an_image_over_the_warning_limit_is_refused_not_warned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    root = image_folder(tmp_path / "imgs")
    big = root / "cat" / "big.png"
    Image.new("RGB", (40, 40)).save(big)
    # 1,600 pixels: above the limit (a warning in PIL), below twice it (PIL's error).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    refused(f"imagefolder:{root}", str(big), "too large")


def test_a_folder_linked_into_itself_is_refused(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs")
    os.symlink(root / "cat", root / "cat" / "again")
    refused(f"imagefolder:{root}", "symlink loop", str(root / "cat" / "again"))


def test_an_image_linked_to_itself_is_refused(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs")
    os.symlink(root / "cat" / "self.png", root / "cat" / "self.png")
    refused(f"imagefolder:{root}", "cannot read image", str(root / "cat" / "self.png"))


def test_a_class_folder_linked_to_itself_is_refused(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs")
    os.symlink(root / "loop", root / "loop")
    refused(f"imagefolder:{root}", "cannot read image folder", str(root / "loop"))


# --- IDX files ------------------------------------------------------------------------------
def idx(array: np.ndarray, dims: tuple[int, ...] | None = None) -> bytes:
    shape = array.shape if dims is None else dims
    head = bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    return head + array.astype(np.uint8).tobytes()


def idx_folder(root: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        files = {
            f"{prefix}-images-idx3-ubyte": idx(rng.integers(0, 256, (n, 28, 28))),
            f"{prefix}-labels-idx1-ubyte": idx(np.arange(n) % 10),
        }
        for name, content in files.items():
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (root / name).write_bytes(content)
    return root


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_clean_idx_files_still_load(tmp_path: Path, name: str, gz: bool) -> None:
    splits = load_dataset(name, data_dir=idx_folder(tmp_path / "d", gz=gz))
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (20, 10)
    assert splits.test.tensors[1].tolist() == [i % 10 for i in range(10)]


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_garbage_idx_files_are_refused(tmp_path: Path, name: str, gz: bool) -> None:
    root = idx_folder(tmp_path / "d", gz=gz)
    target = root / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    target.write_bytes(random.Random(1).randbytes(5000))
    refused(name, str(target), data_dir=root)


def test_a_garbage_gzip_stream_is_refused(tmp_path: Path) -> None:
    root = idx_folder(tmp_path / "d")
    target = root / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(b"x" * 100)[:20])  # a gzip header, then truncation
    refused("fashion-mnist", str(target), data_dir=root)


def test_a_header_claiming_a_billion_images_is_refused_unread(tmp_path: Path) -> None:
    root = idx_folder(tmp_path / "d", gz=False)
    target = root / "train-images-idx3-ubyte"
    target.write_bytes(idx(np.zeros((5, 28, 28)), dims=(BILLION, 28, 28)))
    refused("fashion-mnist", str(target), "1,000,000,000 items", data_dir=root)


def test_a_header_promising_more_bytes_than_the_file_has(tmp_path: Path) -> None:
    root = idx_folder(tmp_path / "d")
    target = root / "train-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(idx(np.zeros((5, 28, 28)), dims=(6, 28, 28))))
    refused("mnist", str(target), "truncated", data_dir=root)


def test_five_images_with_seven_labels_are_refused(tmp_path: Path) -> None:
    root = idx_folder(tmp_path / "d", n_train=5)
    labels = root / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx(np.arange(7))))
    refused("fashion-mnist", "5 images", "7 labels", str(labels), data_dir=root)


def test_images_of_another_size_or_labels_out_of_range_are_refused(tmp_path: Path) -> None:
    root = idx_folder(tmp_path / "d", gz=False)
    (root / "t10k-images-idx3-ubyte").write_bytes(idx(np.zeros((10, 32, 32))))
    refused("mnist", "(32, 32), not (28, 28)", data_dir=root)
    root = idx_folder(tmp_path / "e", gz=False)
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx(np.full(10, 200)))
    refused("mnist", "label 200", data_dir=root)


# --- the data folder ------------------------------------------------------------------------
@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import torchvision

    calls: list[str] = []

    def refuse(self: object) -> None:
        calls.append(type(self).__name__)
        raise OSError("no network in tests")

    for cls in (torchvision.datasets.FashionMNIST, torchvision.datasets.MNIST):
        monkeypatch.setattr(cls, "download", refuse)
    return calls


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "cifar10", "digits"])
def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path, name: str) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    refused(name, str(passwd), "is not a folder", data_dir=passwd)
    refused(name, "/etc/passwd", "is not a folder", data_dir=Path("/etc/passwd"))


def test_a_data_dir_without_the_files_never_falls_back_to_the_system_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_download: list[str]
) -> None:
    system = idx_folder(tmp_path / "system")
    monkeypatch.setitem(data_sources.SYSTEM_DIRS, "fashion-mnist", system)
    assert len(load_dataset("fashion-mnist").test) == 10  # no --data-dir: the system copy
    given = tmp_path / "given"
    given.mkdir()
    text = refused("fashion-mnist", str(given), "download failed", data_dir=given)
    assert str(system) not in text
    assert no_download == ["FashionMNIST"]
