"""The versioned JSON envelope shared by policies and configs: ``{"type", "version", "data"}``.

Loading checks the type against the one expected and refuses versions from the future, so a
file from another tool or a newer autoshrink fails with one clear line, whatever it holds.

>>> unwrap(wrap("autoshrink.Demo", 1, {"a": 1}), "autoshrink.Demo", 1, "autoshrink demo")
{'a': 1}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from autoshrink.compression.atomic import write_text_atomic
from autoshrink.compression.documents import parse_document, read_document
from autoshrink.compression.errors import AutoshrinkError


def wrap(type_name: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Put ``data`` in the envelope."""
    return {"type": type_name, "version": version, "data": data}


def unwrap(
    obj: object,
    type_name: str,
    version: int,
    what: str,
    error: type[AutoshrinkError] = AutoshrinkError,
) -> dict[str, Any]:
    """Check the envelope and return its data.

    Args:
        obj: The parsed JSON.
        type_name: The type it must declare.
        version: The newest format version this code reads.
        what: How messages name the thing, e.g. ``"policy"``.
        error: The error class to raise.

    Raises:
        AutoshrinkError: (as ``error``) on a foreign type, a bad or future version, or data
            that is not an object.
    """
    if not isinstance(obj, dict) or obj.get("type") != type_name:
        found = obj.get("type") if isinstance(obj, dict) else type(obj).__name__
        raise error(f"not an {what} (type {found!r}, want {type_name!r})")
    found_version = obj.get("version")
    if not isinstance(found_version, int) or isinstance(found_version, bool) or found_version < 1:
        raise error(f"{what} has an invalid format version {found_version!r}")
    if found_version > version:
        raise error(
            f"{what} format version {found_version} is newer than this autoshrink supports "
            f"({version}); upgrade autoshrink"
        )
    data = obj.get("data")
    if not isinstance(data, dict):
        raise error(f"{what} has no 'data' object")
    return data


def parse_json(text: str, what: str, error: type[AutoshrinkError] = AutoshrinkError) -> object:
    """Parse JSON through the checked reader; a failure is one line naming ``what``."""
    return parse_document(text, what, error=error)


def read_text(path: Path, what: str, error: type[AutoshrinkError] = AutoshrinkError) -> str:
    """Read a file whose failure (missing, unreadable, not UTF-8) is one line naming ``what``."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (bad byte at {exc.start})") from None


_T = TypeVar("_T", bound="JsonFile")


class JsonFile:
    """``to_json``/``save``/``from_json``/``load`` for a class with ``to_dict``/``from_dict``.

    Subclasses set ``json_what`` (how messages name them) and ``json_error``.
    """

    json_what: ClassVar[str] = "file"
    json_error: ClassVar[type[AutoshrinkError]] = AutoshrinkError
    #: Let NaN and Infinity through the reader, for a class whose ``from_dict`` checks
    #: every number itself (and so names the rule a NaN breaks).
    json_allow_nonfinite: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        """Return the versioned JSON-ready form (subclasses implement it)."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[_T], obj: object) -> _T:
        """Build an instance from :meth:`to_dict` output (subclasses implement it)."""
        raise NotImplementedError

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        """Write the JSON to ``path`` atomically and return the path.

        A reader (or a resumed run after a kill) sees the old file or the whole new one.
        """
        path = Path(path)
        write_text_atomic(path, self.to_json() + "\n")
        return path

    @classmethod
    def from_json(cls: type[_T], text: str) -> _T:
        """Parse a JSON string; malformed JSON raises ``json_error`` with its position."""
        obj = parse_document(
            text, cls.json_what, allow_nonfinite=cls.json_allow_nonfinite, error=cls.json_error
        )
        return cls.from_dict(obj)

    @classmethod
    def load(cls: type[_T], path: str | Path) -> _T:
        """Read a file written by :meth:`save` through the checked reader; errors name it.

        Size, nesting, integer size and UTF-8 are checked before any field is read (see
        :func:`autoshrink.compression.documents.read_document`); NaN and Infinity are
        refused unless ``json_allow_nonfinite``.
        """
        path = Path(path)
        obj = read_document(
            path, cls.json_what, allow_nonfinite=cls.json_allow_nonfinite, error=cls.json_error
        )
        try:
            return cls.from_dict(obj)
        except cls.json_error as exc:
            raise cls.json_error(f"{path}: {exc}") from exc
