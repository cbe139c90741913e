"""Checked reading of an ``imagefolder:PATH`` dataset (one sub-folder per class).

torchvision's ``ImageFolder`` follows symlinks without noticing a loop (a folder linked
into itself is read again at every depth the OS allows, each copy a duplicate sample), and
it opens images only when a batch needs them, so a zero-byte or garbage file, or a
decompression bomb, ends a run halfway with a traceback. Here the folder is walked first:
a folder reached twice (a symlink loop or a duplicate) is refused, and every image's header
is opened (cheap: no pixels are decoded) under PIL's pixel limit, with its
``DecompressionBombWarning`` made an error. Images are then loaded by :func:`load_rgb`,
which turns any failure into the same one-line
:class:`~autoshrink.compression.errors.DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autoshrink.compression.errors import DataError

logger = logging.getLogger(__name__)


def _image_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turn whatever reading the image at ``path`` raises into one :class:`DataError`."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombWarning as exc:
        raise DataError(f"image {path} is too large to read ({_reason(exc)})") from None
    except _image_errors() as exc:
        raise DataError(f"cannot read image {path}: {_reason(exc)}") from None


def load_rgb(path: str) -> Any:
    """Open one image as RGB, as torchvision's default loader does, but failing cleanly.

    Raises:
        DataError: If the file is not a readable image or is over PIL's pixel limit.
    """
    from PIL import Image

    with _reading(path), Image.open(path) as img:
        return img.convert("RGB")


def check_image_folder(root: Path) -> int:
    """Walk ``root`` as ``ImageFolder`` will, refusing loops and unreadable images.

    Returns:
        The number of images found.

    Raises:
        DataError: On a folder reached twice through symlinks, a folder that cannot be
            listed, or an image whose header does not open.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    seen: dict[tuple[int, int], str] = {}
    count = 0
    for top in sorted((e for e in os.scandir(root) if _is_dir(e)), key=lambda e: e.name):
        for folder, _, files in os.walk(top.path, followlinks=True, onerror=_walk_error):
            stat = os.stat(folder)
            key = (stat.st_dev, stat.st_ino)
            if key in seen:
                raise DataError(
                    f"image folder {root}: {folder} is {seen[key]} again (a symlink loop or "
                    "a duplicate folder)"[:300]
                )
            seen[key] = folder
            for name in sorted(files):
                if name.lower().endswith(IMG_EXTENSIONS):
                    _check_header(os.path.join(folder, name))
                    count += 1
    logger.info("checked %d images in %s", count, root)
    return count


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError as exc:  # a symlink loop at the top level
        raise DataError(f"cannot read image folder {entry.path}: {_reason(exc)}") from None


def _walk_error(exc: OSError) -> None:
    raise DataError(f"cannot read image folder {exc.filename}: {_reason(exc)}")


def _check_header(path: str) -> None:
    from PIL import Image

    with _reading(path), Image.open(path):
        pass
