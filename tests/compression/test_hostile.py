"""Hostile files: every one is refused with one AutoshrinkError line, and none runs code.

Classes covered (issue 17): truncated files, huge header lengths, an 8 GB file, deeply
nested JSON, 5000-digit integers, binary garbage, NaN, values of the wrong JSON type,
names the model does not have, and a header that names a Python file.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from autoshrink.compression.artifact import load_artifact, read_header, save_artifact
from autoshrink.compression.documents import field, mapping, parse_document, read_document
from autoshrink.compression.errors import AutoshrinkError, CheckpointError, PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy
from autoshrink.compression.prune import prune
from autoshrink.compression.quantize import calibrate_activations_
from autoshrink.compression.units import build_units
from tests.compression.artifact_files import edit_field, edit_meta, join, repack, split, unpacked

DEEP = 100_000
HUGE_INT = "7" * 5000
GIB = 1 << 30


def one_line(exc: pytest.ExceptionInfo[AutoshrinkError], *names: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text and len(text) < 600, text
    for name in names:
        assert name in text, text
    return text


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of ``size`` bytes that takes no disk space (only ``head`` is written)."""
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


# --- the reader ---------------------------------------------------------------------------
DOCUMENTS: dict[str, tuple[str | bytes, str]] = {
    "deep-arrays": ("[" * DEEP + "]" * DEEP, "nested more than"),
    "deep-objects": ('{"a":' * DEEP + "1" + "}" * DEEP, "nested more than"),
    "deep-mixed": ('[{"a":' * (DEEP // 2) + "1" + "}]" * (DEEP // 2), "nested more than"),
    "deep-unclosed": ("[" * DEEP, "nested more than"),
    "int-5000": (f'{{"n": {HUGE_INT}}}', "field n is an integer of 5,000 digits"),
    "negative-int-5000": (f'{{"n": [-{HUGE_INT}]}}', "field n.0 is an integer of 5,000"),
    "int-101": ('{"a": {"b": ' + "9" * 101 + "}}", "field a.b is an integer of 101"),
    "nan": ('{"keep": NaN}', "field keep is nan"),
    "infinity": ('{"keep": Infinity}', "field keep is inf"),
    "minus-infinity": ('{"x": [-Infinity]}', "field x.0 is -inf"),
    "float-overflow": ('{"x": 1e999}', "field x is inf"),
    "binary": (random.Random(0).randbytes(4096), "not UTF-8"),
    "utf16": ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
    "nul-bytes": (b'{"a": "\x00"}', "binary file"),
    "truncated": ('{"units": {"a": ', "malformed JSON"),
    "empty": ("", "malformed JSON"),
    "trailing": ('{"a": 1} {"b": 2}', "malformed JSON"),
}


@pytest.mark.parametrize("case", list(DOCUMENTS))
def test_reader_refuses_hostile_json_in_one_line(case: str) -> None:
    text, needle = DOCUMENTS[case]
    with pytest.raises(AutoshrinkError) as info:
        parse_document(text, "doc.json")
    one_line(info, "doc.json", needle)


TOML: dict[str, tuple[str | bytes, str]] = {
    "deep-arrays": ("a = " + "[" * DEEP + "]" * DEEP, "doc.toml"),
    "int-5000": (f"a = {HUGE_INT}", "integer"),
    "int-200": ("a = [1, " + "9" * 200 + "]", "field a.1 is an integer of 200"),
    "nan": ("keep = nan", "field keep is nan"),
    "inf": ("[job]\nkeep = -inf", "field job.keep is -inf"),
    "binary": (bytes(range(256)) * 4, "not UTF-8"),
    "truncated": ('[jobs]\nmodel = "resnet', "malformed TOML"),
}


@pytest.mark.parametrize("case", list(TOML))
def test_reader_refuses_hostile_toml_in_one_line(case: str) -> None:
    text, needle = TOML[case]
    with pytest.raises(AutoshrinkError) as info:
        parse_document(text, "doc.toml", kind="toml")
    one_line(info, "doc.toml", needle)


def test_reader_checks_the_size_before_reading(tmp_path: Path) -> None:
    big = sparse(tmp_path / "big.json", 8 * GIB, b"[")
    with pytest.raises(AutoshrinkError) as info:
        read_document(big, "policy")
    one_line(info, str(big), "8,589,934,592 bytes")
    with pytest.raises(AutoshrinkError) as info:
        read_document(tmp_path, "policy")
    one_line(info, "not a file")
    with pytest.raises(AutoshrinkError) as info:
        read_document(tmp_path / "missing.json", "policy")
    one_line(info, "cannot read policy")


FIELDS: dict[str, tuple[object, type | tuple[type, ...], str]] = {
    "str-for-int": ({"episodes": "ten"}, int, "must be an integer, got 'ten'"),
    "float-for-int": ({"episodes": 6.5}, int, "must be an integer, got 6.5"),
    "bool-for-int": ({"episodes": True}, int, "must be an integer, got True"),
    "list-for-dict": ({"episodes": []}, dict, "must be an object"),
    "null-for-str": ({"episodes": None}, str, "must be a string, got None"),
    "missing": ({}, int, "field 'episodes' is missing"),
    "not-an-object": ([1, 2], int, "expected an object"),
}


@pytest.mark.parametrize("case", list(FIELDS))
def test_typed_fields_name_the_file_and_the_field(case: str) -> None:
    obj, types, needle = FIELDS[case]
    with pytest.raises(AutoshrinkError) as info:
        field(obj, "episodes", types, where="spec.toml")
    one_line(info, "spec.toml", needle)


def test_toml_date_is_a_wrong_type_not_a_crash() -> None:
    doc = parse_document("episodes = 1979-05-27", "spec.toml", kind="toml")
    with pytest.raises(AutoshrinkError) as info:
        field(doc, "episodes", int, where="spec.toml")
    one_line(info, "spec.toml", "'episodes' must be an integer")
    with pytest.raises(AutoshrinkError):
        mapping({"a": "4"}, int, where="weight_bits")


# --- policies -----------------------------------------------------------------------------
def envelope(data: Any) -> str:
    return json.dumps({"type": "autoshrink.Policy", "version": 1, "data": data})


POLICIES: dict[str, tuple[str | bytes, str]] = {
    "deep": ('{"type": "autoshrink.Policy", "data": ' + "[" * DEEP + "]" * DEEP + "}", "nested"),
    "int-5000-bits": (
        envelope({"units": {}}).replace('"units": {}', f'"units": {{"a": {{"bits": {HUGE_INT}}}}}'),
        "field data.units.a.bits is an integer of 5,000 digits",
    ),
    "int-5000-version": (
        f'{{"type": "autoshrink.Policy", "version": {HUGE_INT}, "data": {{}}}}',
        "field version is an integer",
    ),
    "binary": (random.Random(1).randbytes(2000), "not UTF-8"),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(100), "not UTF-8"),
    "nul": (b"\x00" * 64, "binary file"),
    "nan-keep": (
        envelope({"units": {"a": {"keep": 0.5}}}).replace("0.5", "NaN"),
        "keep-ratio must lie in (0, 1], got nan for unit a",
    ),
    "budget-nan": (
        envelope({"units": {}, "meta": {"budgets": {"macs": 0.5}}}).replace("0.5", "NaN"),
        "'meta.budgets.macs' must be a finite number",
    ),
    "units-list": (envelope({"units": []}), "units"),
    "unit-str": (envelope({"units": {"a": "half"}}), "expected an object"),
    "keep-str": (envelope({"units": {"a": {"keep": "1"}}}), "number"),
    "bits-str": (envelope({"units": {"a": {"bits": "4"}}}), "2..8 or 32"),
    "bits-bool": (envelope({"units": {"a": {"bits": True}}}), "2..8 or 32"),
    "channels-float": (envelope({"units": {"a": {"channels": 1.5}}}), "channels"),
    "layers-list": (envelope({"units": {}, "layers": [4]}), "'layers' must map"),
    "round-to-bool": (envelope({"units": {}, "round_to": True}), "round_to"),
    "meta-list": (envelope({"units": {}, "meta": []}), "'meta' must be an object"),
    "budgets-list": (envelope({"units": {}, "meta": {"budgets": [1]}}), "meta.budgets"),
    "budget-str": (envelope({"units": {}, "meta": {"budgets": {"macs": "x"}}}), "macs"),
    "budget-bool": (envelope({"units": {}, "meta": {"budgets": {"macs": True}}}), "macs"),
    "not-envelope": ("[1, 2, 3]", "not an autoshrink policy"),
    "truncated": (envelope({"units": {"a": {"keep": 0.5}}})[:-7], "malformed JSON"),
    "empty": ("", "malformed JSON"),
}


@pytest.mark.parametrize("case", list(POLICIES))
def test_hostile_policy_file_is_one_line(tmp_path: Path, case: str) -> None:
    content, needle = POLICIES[case]
    path = tmp_path / "policy.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    one_line(info, str(path), needle)


def test_eight_gigabyte_policy_is_refused_by_its_size(tmp_path: Path) -> None:
    path = sparse(tmp_path / "policy.json", 8 * GIB, b'{"type": "autoshrink.Policy"')
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    one_line(info, str(path), "more than")


@pytest.mark.parametrize("kind", ["folder", "missing"])
def test_policy_path_that_is_no_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path if kind == "folder" else tmp_path / "none.json"
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    one_line(info, str(path))


def test_policy_save_is_atomic_and_loads_back(tmp_path: Path) -> None:
    policy = Policy(units={"a": UnitPolicy(keep=0.5, bits=4)}, meta={"budgets": {"macs": 1.0}})
    assert Policy.load(policy.save(tmp_path / "p.json")) == policy
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


# --- artifacts ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small resnet20 artifact with activation quantizers, as bytes."""
    spec, shape = ModelSpec("resnet20", 10, 1), (1, 1, 8, 8)
    torch.manual_seed(0)
    base = build_model(spec)
    graph = build_units(base, torch.zeros(shape))
    policy = Policy(units={u.name: UnitPolicy(keep=0.5, bits=4) for u in graph.units})
    model = prune(base, graph, policy.keep())
    calibrate_activations_(model, {"fc": 6}, [torch.randn(4, 1, 8, 8)], 1)
    path = tmp_path_factory.mktemp("pristine") / "m.safetensors"
    return save_artifact(path, model, spec, shape, policy).path.read_bytes()


@pytest.fixture
def art(tmp_path: Path, pristine: bytes) -> Path:
    path = tmp_path / "m.safetensors"
    path.write_bytes(pristine)
    return path


def refused(path: Path, *needles: str, loader: Callable[[Path], object] = load_artifact) -> str:
    with pytest.raises(CheckpointError) as info:
        loader(path)
    return one_line(info, str(path), *needles)


def test_the_pristine_artifact_loads(art: Path) -> None:
    assert isinstance(load_artifact(art), torch.nn.Module)


@pytest.mark.parametrize("keep", [0, 3, 7, 8, 100, -100, -1])
def test_truncated_artifact(art: Path, keep: int) -> None:
    art.write_bytes(art.read_bytes()[:keep])
    refused(art, "truncated")


@pytest.mark.parametrize("length", [2**64 - 1, 2**40, (16 << 20) + 1])
def test_huge_header_length_is_refused_before_reading(art: Path, length: int) -> None:
    art.write_bytes(length.to_bytes(8, "little") + b"{}")
    refused(art, "header length", "allowed")


def test_eight_gigabyte_artifact_is_not_read_to_check_its_header(
    tmp_path: Path, pristine: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    def never(*args: object) -> None:
        raise AssertionError("the payload was read before the header was checked")

    monkeypatch.setattr(safetensors.torch, "load", never)
    n = int.from_bytes(pristine[:8], "little")
    header = json.loads(pristine[8 : 8 + n])
    meta = unpacked(header)
    meta["kept"] = json.dumps([1, 2])  # wrong type
    repack(header, meta)
    header["big"] = {"dtype": "U8", "shape": [8 * GIB], "data_offsets": [0, 8 * GIB]}
    for name, entry in header.items():
        if name not in ("big", "__metadata__"):
            entry["data_offsets"] = [0, 0]
    text = json.dumps(header).encode()
    path = sparse(tmp_path / "big.safetensors", 8 + len(text) + 8 * GIB)
    with path.open("r+b") as fh:
        fh.write(len(text).to_bytes(8, "little") + text)
    refused(path, "'kept' must be an object")


RAW_HEADERS: dict[str, tuple[bytes, str]] = {
    "deep": (b"[" * DEEP + b"]" * DEEP, "not an autoshrink artifact"),
    "binary": (random.Random(2).randbytes(64), "not an autoshrink artifact"),
    "int-5000": (b'{"__metadata__": {"format": ' + HUGE_INT.encode() + b"}}", "not an autoshrink"),
    "list": (b"[1, 2, 3]", "not an autoshrink artifact (format None)"),
    "meta-list": (b'{"__metadata__": []}', "format None"),
    "meta-value-int": (
        b'{"__metadata__": {"format": "autoshrink.artifact", "spec": 5}}',
        "'spec' must be a string",
    ),
    "version-5000": (
        b'{"__metadata__": {"format": "autoshrink.artifact", "format_version": "'
        + HUGE_INT.encode()
        + b'"}}',
        "invalid format version",
    ),
    "table-entry-str": (
        b'{"__metadata__": {"format": "autoshrink.artifact", "format_version": "2"}, "w": "x"}',
        "expected an object",
    ),
    "offsets-backwards": (
        b'{"__metadata__": {"format": "autoshrink.artifact", "format_version": "2"},'
        b' "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}',
        "corrupt tensor table",
    ),
    "offsets-str": (
        b'{"__metadata__": {"format": "autoshrink.artifact", "format_version": "2"},'
        b' "w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}',
        "data_offsets[0] must be an integer",
    ),
}


@pytest.mark.parametrize("case", list(RAW_HEADERS))
def test_hostile_raw_header(art: Path, case: str) -> None:
    raw, needle = RAW_HEADERS[case]
    join(art, raw, b"")
    refused(art, needle)
    refused(art, needle, loader=read_header)


def test_binary_garbage_and_empty_and_folder(tmp_path: Path) -> None:
    garbage = tmp_path / "noise.safetensors"
    garbage.write_bytes(random.Random(3).randbytes(100_000))
    refused(garbage)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    refused(empty, "truncated")
    with pytest.raises(CheckpointError) as info:
        load_artifact(tmp_path)
    one_line(info, "not found")


# Each field is re-signed after the edit, as an attacker can: the checksum is no signature.
FIELD_CASES: dict[str, tuple[str, object, str]] = {
    "spec-list": ("spec", [1], "'spec': expected an object"),
    "spec-name-int": ("spec", {"name": 5}, "'name' must be a string"),
    "spec-classes-str": ("spec", {"name": "resnet20", "num_classes": "10"}, "num_classes"),
    "spec-classes-zero": ("spec", {"name": "resnet20", "num_classes": 0}, "must be positive"),
    "spec-deep": ("spec", "[" * DEEP + "]" * DEEP, "nested more than"),
    "spec-unknown-model": ("spec", {"name": "no_such_net", "in_channels": 1}, "cannot rebuild"),
    "shape-dict": ("input_shape", {"a": 1}, "input_shape"),
    "shape-str": ("input_shape", [1, "1", 8, 8], "input_shape"),
    "shape-huge": ("input_shape", [1, 1, 100_000_000, 100_000_000], "elements"),
    "shape-zero": ("input_shape", [0, 1, 8, 8], "positive"),
    "shape-int-5000": ("input_shape", f"[1, 1, {HUGE_INT}, 8]", "5,000 digits"),
    "kept-list": ("kept", [1], "'kept' must be an object"),
    "kept-str": ("kept", {"conv1": "8"}, "must be an integer"),
    "kept-zero": ("kept", {"conv1": 0}, "positive count"),
    "kept-unknown-unit": ("kept", {"no.such.unit": 4}, "unit 'no.such.unit'"),
    "kept-too-many": ("kept", {"conv1": 10_000}, "cannot be pruned"),
    "bits-str": ("weight_bits", {"conv1": "4"}, "must be an integer"),
    "bits-nine": ("weight_bits", {"conv1": 9}, "not 2..8 or 32"),
    "bits-bool": ("weight_bits", {"conv1": True}, "must be an integer"),
    "bits-unknown-layer": ("weight_bits", {"conv1": 4, "ghost": 4}, "weight_bits layer 'ghost'"),
    "act-list": ("act_quant", [[6, 0, 1]], "'act_quant' must be an object"),
    "act-entry-dict": ("act_quant", {"fc": {"bits": 6}}, "must be a list"),
    "act-entry-short": ("act_quant", {"fc": [6, 0.0]}, "[bits, lo, hi]"),
    "act-bits-nine": ("act_quant", {"fc": [9, 0.0, 1.0]}, "[bits, lo, hi]"),
    "act-lo-above-hi": ("act_quant", {"fc": [6, 2.0, 1.0]}, "above hi"),
    "act-nan": ("act_quant", '{"fc": [6, NaN, 1.0]}', "is nan"),
    "act-missing-layer": ("act_quant", {"layer9.conv": [6, 0.0, 1.0]}, "act_quant layer"),
    "policy-list": ("policy", [1], "not an autoshrink policy"),
    "policy-bad-bits": ("policy", {"layer_bits": {"conv1": 99}}, "not 2..8 or 32"),
    "policy-deep": ("policy", '{"a": ' * DEEP + "1" + "}" * DEEP, "nested more than"),
    "metadata-list": ("metadata", [1, 2], "'metadata' must be an object"),
    "metadata-str": ("metadata", "just text", "'metadata'"),
    "factory-list": ("factory", [1], "'factory': expected an object"),
    "factory-sha": ("factory", {"path": "x.py", "function": "f", "sha256": "0"}, "SHA-256"),
    "missing-field": ("kept", None, "'kept' is missing"),
}


@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_hostile_header_field_is_one_line(art: Path, case: str) -> None:
    name, value, needle = FIELD_CASES[case]
    if value is None:
        edit_meta(art, lambda meta: meta.pop(name))
    else:
        edit_field(art, name, value)
    refused(art, needle)


def test_unsigned_edit_fails_the_checksum(art: Path) -> None:
    edit_field(art, "metadata", {"run": 1}, resign=False)
    refused(art, "checksum")


def test_extra_tensor_is_refused(art: Path) -> None:
    header, payload = split(art)
    end = len(payload)
    header["ghost"] = {"dtype": "U8", "shape": [4], "data_offsets": [end, end + 4]}
    join(art, header, payload + b"\x00" * 4)
    edit_meta(art, lambda meta: None)  # re-sign over the new tensor
    refused(art, "tensor(s) missing or unexpected", "ghost")


# --- no input file runs code --------------------------------------------------------------
EVIL = "from pathlib import Path\nPath({marker!r}).write_text('ran')\ndef build(**kw): ...\n"


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("loader", ["load_artifact", "read_header"])
def test_header_naming_a_python_file_never_imports_it(
    art: Path, tmp_path: Path, version: str, loader: str
) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL.format(marker=str(marker)))

    def point_at_evil(meta: dict[str, str]) -> None:
        meta["spec"] = json.dumps({"name": f"{evil}:build", "num_classes": 10, "in_channels": 1})
        meta["format_version"] = version
        if version == "1":
            meta.pop("factory")

    edit_meta(art, point_at_evil)
    if loader == "read_header":
        assert read_header(art).spec.name == f"{evil}:build"  # readable, not imported
    else:
        refused(art, "holds a user model", "never imported")
    assert not marker.exists()
