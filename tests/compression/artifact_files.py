"""Helpers that forge artifact files as an attacker would: edit the header, re-sign it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoshrink.compression.artifact import _digest
from autoshrink.compression.artifact_header import PACKED_KEY

TINY_NET = (
    "from torch import nn\n"
    "def build(num_classes=10, in_channels=3):\n"
    "    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),\n"
    "        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
)


def split(path: Path) -> tuple[dict[str, Any], bytes]:
    """The JSON header (tensor table and ``__metadata__``) and the payload bytes."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(path: Path, header: dict[str, Any] | bytes, payload: bytes) -> None:
    """Write a safetensors file from a header (JSON or raw bytes) and a payload."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + payload)


def unpacked(header: dict[str, Any]) -> dict[str, str]:
    """The metadata strings of a header (format 2 packs them into one entry)."""
    meta = header["__metadata__"]
    return json.loads(meta[PACKED_KEY]) if set(meta) == {PACKED_KEY} else meta


def repack(header: dict[str, Any], meta: dict[str, str]) -> None:
    """Put ``meta`` back into ``header`` as format 2 stores it."""
    header["__metadata__"] = {PACKED_KEY: json.dumps(meta)}


def edit_meta(path: Path, change: Callable[[dict[str, str]], None], resign: bool = True) -> Path:
    """Apply ``change`` to the metadata strings and (by default) recompute the checksum.

    Re-signing is what an attacker can do: the SHA-256 is a checksum, not a signature.
    """
    from safetensors.torch import load_file

    header, payload = split(path)
    packed = set(header["__metadata__"]) == {PACKED_KEY}
    meta = unpacked(header)
    change(meta)
    if resign:
        meta.pop("sha256", None)
        meta["sha256"] = _digest(load_file(str(path)), meta)
    if packed:
        repack(header, meta)
    join(path, header, payload)
    return path


def edit_field(path: Path, name: str, value: Any, resign: bool = True) -> Path:
    """Set one JSON metadata field (``value`` JSON-encoded unless it is a str already)."""

    def change(meta: dict[str, str]) -> None:
        meta[name] = value if isinstance(value, str) else json.dumps(value)

    return edit_meta(path, change, resign)


def edit_tensors(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Apply ``change`` to the payload tensors, keep the header's metadata, and re-sign."""
    from safetensors.torch import load_file, save_file

    header, _ = split(path)
    tensors = load_file(str(path))
    change(tensors)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=header["__metadata__"])
    return edit_meta(path, lambda meta: None)
