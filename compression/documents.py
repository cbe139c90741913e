"""The one checked reader for every JSON and TOML document autoshrink reads.

Whether a file is the user's (a policy, a batch spec) or the tool's own (an artifact
header, a run folder's ``state.json``), it passes through :func:`read_document` or
:func:`parse_document`, which refuse with one line, as an :class:`AutoshrinkError`
subclass naming the file:

- a file larger than ``max_bytes`` (checked with ``stat`` before anything is read);
- bytes that are not UTF-8 (a binary file given as a policy);
- syntax errors (with the position);
- nesting deeper than ``max_depth`` (scanned before parsing, so no ``RecursionError``);
- integers longer than ``max_int_digits`` digits (Python refuses past 4300 with a
  ``ValueError``; such numbers are never meaningful here);
- ``NaN`` and ``Infinity`` (and floats that overflow to them) unless the caller allows them.

:func:`field` then reads one typed field, so a value of the wrong JSON type is one line
naming the file and the field.

>>> doc = parse_document('{"episodes": 12}', "spec.json")
>>> field(doc, "episodes", int, where="spec.json")
12
>>> field(doc, "seed", int, where="spec.json", default=0)
0
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from autoshrink.compression.errors import AutoshrinkError, DocumentError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "field",
    "mapping",
    "parse_document",
    "read_document",
    "sequence",
]

#: Default size cap: far above any policy, spec or run-folder file autoshrink writes.
MAX_BYTES = 16 * 1024 * 1024
#: Default nesting cap: our own documents nest at most about 6 levels.
MAX_DEPTH = 64
#: Default integer cap, in decimal digits (an int64 has 19).
MAX_INT_DIGITS = 100

Kind = Literal["json", "toml"]
_T = TypeVar("_T")
_MISSING: Any = object()
# A JSON string literal (escapes included); what remains after removing these is structure.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def read_document(
    path: str | Path,
    what: str,
    *,
    kind: Kind = "json",
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
    allow_nonfinite: bool = False,
    error: type[AutoshrinkError] = DocumentError,
) -> object:
    """Read and parse one JSON or TOML file, checked as the module docstring lists.

    Args:
        path: The file.
        what: How messages name the document, e.g. ``"policy"``.
        kind: ``"json"`` or ``"toml"``.
        max_bytes: Largest file size accepted.
        max_depth: Deepest nesting of lists and objects accepted.
        max_int_digits: Most decimal digits of an integer.
        allow_nonfinite: Accept ``NaN``, ``Infinity`` and overflowing floats.
        error: The :class:`AutoshrinkError` subclass raised.

    Returns:
        The parsed document (for TOML always a dict).

    Raises:
        AutoshrinkError: (as ``error``) in one line that starts with the path.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise error(f"{path}: {what} is not a file")
        if size > max_bytes:
            raise error(f"{path}: {what} is {size:,} bytes, more than the {max_bytes:,} allowed")
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)  # the file may grow between stat and read
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    return parse_document(
        raw,
        f"{path}: {what}",
        kind=kind,
        max_bytes=max_bytes,
        max_depth=max_depth,
        max_int_digits=max_int_digits,
        allow_nonfinite=allow_nonfinite,
        error=error,
    )


def parse_document(
    data: str | bytes,
    what: str,
    *,
    kind: Kind = "json",
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
    allow_nonfinite: bool = False,
    error: type[AutoshrinkError] = DocumentError,
) -> object:
    """Parse JSON or TOML text with the checks of :func:`read_document`.

    Args:
        data: The document's bytes (checked to be UTF-8) or text.
        what: How messages name it; put the file name in it (e.g. ``"run/state.json"``).
        kind: ``"json"`` or ``"toml"``.
        max_bytes: Largest size accepted, in bytes of UTF-8.
        max_depth: Deepest nesting of lists and objects accepted.
        max_int_digits: Most decimal digits of an integer.
        allow_nonfinite: Accept ``NaN``, ``Infinity`` and overflowing floats.
        error: The :class:`AutoshrinkError` subclass raised.

    Returns:
        The parsed document.

    Raises:
        AutoshrinkError: (as ``error``) in one line that starts with ``what``.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise error(f"{what} is {size:,} bytes, more than the {max_bytes:,} allowed")
    text = _decode(data, what, error) if isinstance(data, bytes) else data
    if "\x00" in text:
        raise error(f"{what} is a binary file, not {kind.upper()} text")
    if kind == "json":
        _check_json_depth(text, what, max_depth, error)
    try:
        obj = _parse(text, kind, what, max_int_digits, error)
    except RecursionError:
        raise error(f"{what} is nested more than {max_depth} levels deep") from None
    _check_tree(obj, what, max_depth, max_int_digits, allow_nonfinite, error)
    return obj


def _decode(data: bytes, what: str, error: type[AutoshrinkError]) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text (bad byte at offset {exc.start})") from None


def _check_json_depth(text: str, what: str, max_depth: int, error: type[AutoshrinkError]) -> None:
    """Refuse nesting deeper than ``max_depth`` without parsing (no recursion)."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # the common case, decided without the slower scan
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = 0
    for char in brackets:
        depth += 1 if char in "[{" else -1
        if depth > max_depth:
            raise error(f"{what} is nested more than {max_depth} levels deep")


class _LongInt:
    """Stands in for an integer literal too long to convert (reported with its field)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse(
    text: str,
    kind: Kind,
    what: str,
    max_int_digits: int,
    error: type[AutoshrinkError],
) -> object:
    def parse_int(s: str) -> int | _LongInt:
        digits = len(s.lstrip("-+"))
        return _LongInt(digits) if digits > max_int_digits else int(s)

    if kind == "json":
        try:
            return json.loads(text, parse_int=parse_int)
        except json.JSONDecodeError as exc:
            raise error(f"{what} is malformed JSON: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} is malformed TOML: {exc}") from None
    except ValueError as exc:  # int() past Python's digit limit, inside tomllib
        raise error(f"{what} has an integer too long to read: {str(exc)[:80]}") from None


def _check_tree(
    obj: object,
    what: str,
    max_depth: int,
    max_int_digits: int,
    allow_nonfinite: bool,
    error: type[AutoshrinkError],
) -> None:
    """Walk the parsed value iteratively: depth, integer size and finiteness (TOML's too).

    Problems name the field by its path, e.g. ``data.units.conv1.keep``.
    """
    max_bits = int(max_int_digits * math.log2(10)) + 1
    stack: list[tuple[object, str, int]] = [(obj, "", 0)]
    while stack:
        value, at, depth = stack.pop()
        name = f"field {at}" if at else "the document"
        if isinstance(value, dict | list):
            if depth >= max_depth:
                raise error(f"{what} is nested more than {max_depth} levels deep")
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, f"{at}.{k}" if at else str(k), depth + 1) for k, v in pairs)
        elif isinstance(value, _LongInt) or (
            isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > max_bits
        ):
            digits = value.digits if isinstance(value, _LongInt) else len(str(abs(value)))
            raise error(
                f"{what}: {name} is an integer of {digits:,} digits (at most {max_int_digits})"
            )
        elif isinstance(value, float) and not allow_nonfinite and not math.isfinite(value):
            raise error(f"{what}: {name} is {value}, which is not allowed here")


def _type_name(types: type | tuple[type, ...]) -> str:
    options = types if isinstance(types, tuple) else (types,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in options)


def _is(value: object, types: type | tuple[type, ...]) -> bool:
    options = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):  # JSON true is not the integer 1
        return bool in options
    if isinstance(value, int) and float in options:
        return True
    return isinstance(value, options)


@overload
def field(
    obj: object,
    name: str,
    types: type[_T],
    *,
    where: str,
    default: _T = ...,
    check: Callable[[_T], str | None] | None = None,
    error: type[AutoshrinkError] = ...,
) -> _T: ...


@overload
def field(
    obj: object,
    name: str,
    types: tuple[type, ...],
    *,
    where: str,
    default: Any = ...,
    check: Callable[[Any], str | None] | None = None,
    error: type[AutoshrinkError] = ...,
) -> Any: ...


def field(
    obj: object,
    name: str,
    types: type | tuple[type, ...],
    *,
    where: str,
    default: Any = _MISSING,
    check: Callable[[Any], str | None] | None = None,
    error: type[AutoshrinkError] = DocumentError,
) -> Any:
    """Return ``obj[name]`` if it has the JSON type ``types``; else one line naming both.

    ``bool`` is never taken for ``int``; an ``int`` is taken for ``float`` (and returned as
    it is). ``check`` may return a problem (e.g. ``"must be positive"``) to refuse a value.

    Args:
        obj: The parsed object holding the field (refused unless a dict).
        name: The key.
        types: The accepted Python type(s): ``int``, ``float``, ``str``, ``bool``, ``list``,
            ``dict``, ``type(None)``.
        where: How messages name the document (and the object inside it).
        default: Returned when the key is missing; without one a missing key is an error.
        check: Further check of the value, returning a problem or None.
        error: The :class:`AutoshrinkError` subclass raised.

    Raises:
        AutoshrinkError: (as ``error``) on a missing field, a wrong type or a failed check.

    >>> field({"bits": 4}, "bits", int, where="policy.json")
    4
    """
    if not isinstance(obj, dict):
        raise error(f"{where}: expected an object, got {_type_name(type(obj))}")
    if name not in obj:
        if default is _MISSING:
            raise error(f"{where}: field {name!r} is missing")
        return default
    value = obj[name]
    if not _is(value, types):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise error(f"{where}: field {name!r} must be {_type_name(types)}, got {shown}")
    problem = check(value) if check is not None else None
    if problem:
        raise error(f"{where}: field {name!r} {problem}, got {value!r}")
    return value


def mapping(
    obj: object,
    values: type | tuple[type, ...],
    *,
    where: str,
    error: type[AutoshrinkError] = DocumentError,
) -> dict[str, Any]:
    """Return ``obj`` if it is an object whose every value has the type ``values``.

    >>> mapping({"conv1": 4}, int, where="weight_bits")
    {'conv1': 4}
    """
    if not isinstance(obj, dict):
        raise error(f"{where} must be an object, got {_type_name(type(obj))}")
    for key, value in obj.items():
        if not _is(value, values):
            raise error(f"{where}: {key!r} must be {_type_name(values)}, got {value!r}"[:200])
    return obj


def sequence(
    obj: object,
    items: type | tuple[type, ...],
    *,
    where: str,
    error: type[AutoshrinkError] = DocumentError,
) -> list[Any]:
    """Return ``obj`` if it is a list whose every item has the type ``items``.

    >>> sequence([1, 3, 8, 8], int, where="input_shape")
    [1, 3, 8, 8]
    """
    if not isinstance(obj, list):
        raise error(f"{where} must be a list, got {_type_name(type(obj))}")
    for i, value in enumerate(obj):
        if not _is(value, items):
            raise error(f"{where}[{i}] must be {_type_name(items)}, got {value!r}"[:200])
    return obj
