"""Reading an artifact's header: bounded, fully type-checked, before any payload byte.

A safetensors file starts with an 8-byte little-endian header length, then that many bytes
of JSON (the tensor table plus ``__metadata__``, a map of strings), then the payload. This
module reads only the first two: the length is checked against :data:`MAX_HEADER_BYTES`
and the file's size before the header is read, the header goes through the checked reader
(:mod:`autoshrink.compression.documents`), and every metadata field is decoded and
type-checked, so a truncated, oversized, foreign or hostile file fails with one
:class:`CheckpointError` line naming the file and the field, and an 8 GB file is never
read whole to find out.

Format versions: 1 had no record of a user factory's code; 2 adds ``factory``
(``{"path", "function", "sha256"}`` of the ``.py`` file, or null); 3 adds ``sparse``
(per layer stored sparse: ``[survivors, "mask" or "rel", index width]``) and ``coded``
(per entropy-coded tensor: ``[codec, raw length]``); 4 adds ``cuts`` and ``heads``, the
pruned architecture itself (:mod:`autoshrink.compression.artifact_arch`), so that loading
does not trace the model. All four are read.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from autoshrink.compression.artifact_arch import Cut, decode_cuts, decode_heads
from autoshrink.compression.attention import Heads
from autoshrink.compression.documents import MAX_BYTES, field, mapping, parse_document, sequence
from autoshrink.compression.errors import AutoshrinkError, CheckpointError
from autoshrink.compression.models import (
    FactorySource,
    ModelSpec,
    check_input_shape,
    factory_source,
    is_factory_ref,
)
from autoshrink.compression.policy import BIT_CHOICES, Policy

FORMAT_NAME = "autoshrink.artifact"
#: 2: the user factory's recorded source, the frozen units, and the fields packed into one
#: metadata entry (``PACKED_KEY``), so the same model is the same bytes.
#: 3: sparse layers (positions and survivors) and entropy-coded streams.
#: 4: the cuts and attention blocks of the pruned architecture (loading does not trace).
FORMAT_VERSION = 4
#: Largest raw length a coded stream may claim (a decompression-bomb guard).
MAX_CODED_BYTES = 1 << 31
PACKED_KEY = "autoshrink"
#: Largest JSON header read (about 100 bytes per tensor plus the policy: ResNet-50 needs
#: well under 1 MB).
MAX_HEADER_BYTES = MAX_BYTES
FIELDS = ("spec", "input_shape", "kept", "weight_bits", "act_quant", "policy", "metadata")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[0-9]{1,6}")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactHeader:
    """The decoded metadata of an artifact (see ``artifact.read_header``).

    ``factory`` is the recorded source of a user-factory base model (None for built-in
    models and for format-1 artifacts). ``cuts`` is None before format 4: the units must
    be found again to load.
    """

    spec: ModelSpec
    input_shape: tuple[int, ...]
    kept: dict[str, int]
    weight_bits: dict[str, int]
    act_quant: dict[str, tuple[int, float, float]]
    policy: Policy | dict[str, int]
    metadata: dict[str, Any]
    factory: FactorySource | None = None
    format_version: int = FORMAT_VERSION
    frozen: dict[str, str] = dataclass_field(default_factory=dict)
    sparse: dict[str, list[int | str]] = dataclass_field(default_factory=dict)
    coded: dict[str, list[int | str]] = dataclass_field(default_factory=dict)
    cuts: tuple[Cut, ...] | None = None
    heads: tuple[Heads, ...] = ()


@dataclass(frozen=True)
class RawHeader:
    """The undecoded header: metadata strings, tensor table, and where the payload lies."""

    meta: dict[str, str]
    tensors: dict[str, Any]
    header_bytes: int
    file_bytes: int


def read_raw_header(path: Path) -> RawHeader:
    """Read the length prefix and the JSON header only, checking sizes first.

    Raises:
        CheckpointError: On a missing, truncated, oversized, foreign or newer file.
    """
    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path} is truncated or not an artifact ({size} bytes)")
            n = int.from_bytes(prefix, "little")
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{path} is not an autoshrink artifact (header length {n:,} is over the "
                    f"{MAX_HEADER_BYTES:,} allowed)"
                )
            if 8 + n > size:
                raise CheckpointError(
                    f"{path} is truncated: header needs {n} bytes, has {size - 8}"
                )
            raw = fh.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"artifact not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"artifact not found: {path} is a folder") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read artifact {path}: {exc.strerror or exc}") from None
    try:
        header = parse_document(raw, f"{path} header", max_depth=8, error=CheckpointError)
    except CheckpointError:
        raise CheckpointError(f"{path} is not an autoshrink artifact (no JSON header)") from None
    meta = header.pop("__metadata__", None) if isinstance(header, dict) else None
    if isinstance(meta, dict) and set(meta) == {PACKED_KEY} and isinstance(meta[PACKED_KEY], str):
        meta = parse_document(
            meta[PACKED_KEY], f"{path} header", max_depth=2, error=CheckpointError
        )
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} is not an autoshrink artifact (format {found!r})"[:300])
    assert isinstance(header, dict)  # narrowed above: meta came out of it
    mapping(meta, str, where=f"{path} header metadata", error=CheckpointError)
    _check_version(path, meta.get("format_version", ""))
    _check_table(path, header, size - 8 - n)
    return RawHeader(meta, header, n, size)


def _check_version(path: Path, version: str) -> None:
    # ASCII digits only: str.isdigit() and int() also take "¹" and "١" (Arabic-Indic one).
    if not _VERSION.fullmatch(version) or int(version) < 1:
        raise CheckpointError(f"{path} has an invalid format version {version[:20]!r}")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {version}, newer than this autoshrink reads "
            f"({FORMAT_VERSION}); upgrade autoshrink"
        )


def _check_table(path: Path, table: dict[str, Any], have: int) -> None:
    """Each tensor entry has a dtype, a shape and offsets; the payload has the bytes."""
    end = 0
    for name, entry in table.items():
        where = f"{path} tensor {name!r}"[:200]
        field(entry, "dtype", str, where=where, error=CheckpointError)
        sequence(field(entry, "shape", list, where=where, error=CheckpointError), int,
                 where=f"{where} shape", error=CheckpointError)  # fmt: skip
        offsets = field(entry, "data_offsets", list, where=where, error=CheckpointError)
        sequence(offsets, int, where=f"{where} data_offsets", error=CheckpointError)
        if len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1]:
            raise CheckpointError(f"{path} has a corrupt tensor table at {name!r}"[:200])
        end = max(end, offsets[1])
    if have != end:
        what = "truncated" if have < end else "corrupt (trailing bytes)"
        raise CheckpointError(f"{path} is {what}: {have} data bytes, header says {end}")


def decode_header(path: Path, meta: dict[str, str]) -> ArtifactHeader:
    """Decode and type-check every metadata field (no model is built here).

    Raises:
        CheckpointError: One line naming the file and the first bad field.
    """
    version = int(meta["format_version"])
    names = (*FIELDS, "factory") if version >= 2 else FIELDS
    names = (*names, "sparse", "coded") if version >= 3 else names
    names = (*names, "cuts", "heads") if version >= 4 else names
    fields = {}
    for name in names:
        if name not in meta:
            raise CheckpointError(f"{path} has a malformed header: field {name!r} is missing")
        fields[name] = parse_document(
            meta[name], f"{path} header field {name!r}", error=CheckpointError
        )
    where = f"{path} header field"
    return ArtifactHeader(
        spec=_spec(fields["spec"], f"{where} 'spec'"),
        input_shape=_shape(path, fields["input_shape"]),
        kept=_counts(fields["kept"], f"{where} 'kept'"),
        weight_bits=_bits(fields["weight_bits"], f"{where} 'weight_bits'"),
        act_quant=_act_quant(fields["act_quant"], f"{where} 'act_quant'"),
        policy=_policy(fields["policy"], f"{where} 'policy'"),
        metadata=_metadata(fields["metadata"], f"{where} 'metadata'"),
        factory=_factory(fields.get("factory"), f"{where} 'factory'"),
        format_version=version,
        frozen=_frozen(meta.get("frozen"), f"{where} 'frozen'"),
        sparse=_sparse(fields.get("sparse", {}), f"{where} 'sparse'"),
        coded=_coded(fields.get("coded", {}), f"{where} 'coded'"),
        cuts=decode_cuts(fields["cuts"], f"{where} 'cuts'") if version >= 4 else None,
        heads=decode_heads(fields.get("heads", []), f"{where} 'heads'"),
    )


def _sparse(obj: object, where: str) -> dict[str, list[int | str]]:
    out: dict[str, list[int | str]] = {}
    for name, entry in mapping(obj, list, where=where, error=CheckpointError).items():
        ok = len(entry) == 3 and _count(entry[0]) and _count(entry[2]) and entry[2] <= 16
        if not ok or entry[1] not in ("mask", "rel") or (entry[1] == "rel") != (entry[2] > 0):
            raise CheckpointError(f"{where} entry {name!r} is not [n, mask|rel, width]"[:200])
        out[name] = list(entry)
    return out


def _coded(obj: object, where: str) -> dict[str, list[int | str]]:
    from autoshrink.compression.entropy import ARTIFACT_CODEC

    out: dict[str, list[int | str]] = {}
    for name, entry in mapping(obj, list, where=where, error=CheckpointError).items():
        # Only the codec artifacts are written with: the others are for benchmarks.
        ok = len(entry) == 2 and entry[0] == ARTIFACT_CODEC and _count(entry[1])
        if not ok or entry[1] > MAX_CODED_BYTES:
            raise CheckpointError(f"{where} entry {name!r} is not [codec, raw length]"[:200])
        out[name] = list(entry)
    return out


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _frozen(text: str | None, where: str) -> dict[str, str]:
    """The frozen units and their reasons (none when the field is absent, as in format 1)."""
    if text is None:
        return {}
    obj = parse_document(text, where, error=CheckpointError)
    return dict(mapping(obj, str, where=where, error=CheckpointError))


def _positive(value: int) -> str | None:
    return None if value >= 1 else "must be positive"


def _positive_or_none(value: int | None) -> str | None:
    return None if value is None else _positive(value)


def _spec(obj: object, where: str) -> ModelSpec:
    kw: dict[str, Any] = {"where": where, "error": CheckpointError}
    return ModelSpec(
        name=field(obj, "name", str, **kw),
        num_classes=field(obj, "num_classes", int, default=10, check=_positive, **kw),
        in_channels=field(obj, "in_channels", int, default=3, check=_positive, **kw),
        image_size=field(
            obj, "image_size", (int, type(None)), default=None, check=_positive_or_none, **kw
        ),
    )


def _shape(path: Path, obj: object) -> tuple[int, ...]:
    try:
        return check_input_shape(sequence(obj, int, where="input_shape"), "input_shape")
    except AutoshrinkError as exc:
        raise CheckpointError(f"{path} header field 'input_shape': {exc}") from None


def _counts(obj: object, where: str) -> dict[str, int]:
    counts = mapping(obj, int, where=where, error=CheckpointError)
    bad = [k for k, v in counts.items() if v < 1]
    if bad:
        raise CheckpointError(f"{where}: {bad[0]!r} must be a positive count"[:200])
    return dict(counts)


def _bits(obj: object, where: str) -> dict[str, int]:
    bits = mapping(obj, int, where=where, error=CheckpointError)
    bad = [k for k, v in bits.items() if v not in BIT_CHOICES]
    if bad:
        raise CheckpointError(f"{where}: {bad[0]!r} has {bits[bad[0]]} bits, not 2..8 or 32"[:200])
    return dict(bits)


def _act_quant(obj: object, where: str) -> dict[str, tuple[int, float, float]]:
    out = {}
    for name, entry in mapping(obj, list, where=where, error=CheckpointError).items():
        here = f"{where} entry {name!r}"[:200]
        sequence(entry, (int, float), where=here, error=CheckpointError)
        if len(entry) != 3 or not isinstance(entry[0], int) or entry[0] not in BIT_CHOICES:
            raise CheckpointError(f"{here} must be [bits, lo, hi] with bits 2..8 or 32")
        if not entry[1] <= entry[2]:
            raise CheckpointError(f"{here} has lo {entry[1]} above hi {entry[2]}")
        out[name] = (int(entry[0]), float(entry[1]), float(entry[2]))
    return out


def _policy(obj: object, where: str) -> Policy | dict[str, int]:
    if isinstance(obj, dict) and "layer_bits" in obj:
        return _bits(obj["layer_bits"], f"{where} 'layer_bits'")
    try:
        return Policy.from_dict(obj)
    except AutoshrinkError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def _metadata(obj: object, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where} must be an object, got {type(obj).__name__}")
    return obj


def _factory(obj: object, where: str) -> FactorySource | None:
    if obj is None:
        return None
    kw: dict[str, Any] = {"where": where, "error": CheckpointError}
    sha = field(obj, "sha256", str, **kw)
    if not _HEX64.fullmatch(sha):
        raise CheckpointError(f"{where}: field 'sha256' is not a SHA-256 hex digest")
    return FactorySource(field(obj, "path", str, **kw), field(obj, "function", str, **kw), sha)


def base_spec(
    path: Path, head: ArtifactHeader, factory: str | None, allow_changed: bool
) -> ModelSpec:
    """The spec to rebuild from: the header's, or the caller's factory after its checks."""
    name = head.spec.name
    if not is_factory_ref(name):
        if factory is not None and factory != name:
            raise CheckpointError(
                f"{path} holds the built-in model {name!r}; a factory ({factory!r}) is only "
                "for artifacts of user models"
            )
        return head.spec
    if factory is None:
        raise CheckpointError(
            f"{path} holds a user model ({name!r}); loading it runs that Python file, so it "
            "is never imported unless you name it: pass --model FILE.py:FUNCTION "
            "(load_artifact(..., factory=...))"
        )
    try:
        source = factory_source(factory)
    except AutoshrinkError as exc:
        raise CheckpointError(f"cannot use factory {factory!r} for {path}: {exc}") from None
    recorded = head.factory
    if recorded is None:
        logger.warning("%s records no hash of its factory's code; using %s as given", path, factory)
    elif (source.sha256, source.function) != (recorded.sha256, recorded.function):
        change = (
            f"{factory} is not the factory {path} was made with ({recorded.function} in "
            f"{recorded.path}, sha256 {recorded.sha256[:12]}; now {source.function}, "
            f"sha256 {source.sha256[:12]})"
        )
        if not allow_changed:
            raise CheckpointError(
                f"{change}; pass --allow-changed-model (allow_changed_factory=True) to load it"
            )
        logger.warning("%s; loading anyway as asked", change)
    return ModelSpec(factory, head.spec.num_classes, head.spec.in_channels)
