"""Writing the tool's JSON documents: plain values, the versioned envelope, atomically.

Every JSON file autoshrink writes is a ``{"type", "version", "data"}`` document
(:func:`~autoshrink.compression.versioned.wrap`), written whole or not at all
(:func:`~autoshrink.compression.atomic.write_atomic`). :func:`write_document` does both;
:func:`to_jsonable` turns numpy and torch scalars and arrays into plain Python first.

>>> to_jsonable({"a": __import__("numpy").float32(0.5)})
{'a': 0.5}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.versioned import wrap


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy and torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy/torch scalars and arrays turned into plain Python."""
    return json.loads(json.dumps(value, default=_plain))


def dumps(value: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """``json.dumps`` that also takes numpy/torch values and objects with ``to_dict``."""
    return json.dumps(value, indent=indent, sort_keys=sort_keys, default=_plain)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write an already wrapped ``document`` as indented JSON, atomically."""
    text = dumps(document, indent=2) + "\n"
    write_atomic(Path(path), lambda p: p.write_text(text))


def write_document(path: Path, type_name: str, version: int, data: dict[str, Any]) -> None:
    """Wrap ``data`` in the versioned envelope and write it atomically to ``path``."""
    write_json(path, wrap(type_name, version, data))
