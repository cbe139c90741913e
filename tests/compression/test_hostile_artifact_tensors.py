"""Re-signed artifacts with hostile tensors, and hostile format versions: one line each.

The SHA-256 is a checksum, not a signature: every case here edits a tensor (or a header
field) and recomputes it, as anyone can. The loader must then refuse what the header and
the rebuilt model do not promise, instead of loading it and scoring garbage.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from autoshrink.compression.apply import apply_policy
from autoshrink.compression.artifact import load_artifact, read_header, save_artifact
from autoshrink.compression.entropy import compress
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy
from autoshrink.compression.units import build_units
from tests.compression.artifact_files import edit_field, edit_meta, edit_tensors

Tensors = dict[str, torch.Tensor]


def make(tmp: Path, keep: float, sparsity: float) -> bytes:
    spec = ModelSpec("resnet20", 10, 1)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    units = {u.name: UnitPolicy(keep=keep, bits=3, sparsity=sparsity) for u in graph.units}
    policy = Policy(units=units, frozen=dict(graph.frozen))
    small = apply_policy(model, graph, policy)
    info = save_artifact(tmp / "a.safetensors", small, spec, (1, 1, 8, 8), policy)
    return info.path.read_bytes()


@pytest.fixture(scope="module")
def dense_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make(tmp_path_factory.mktemp("dense"), 0.75, 0.0)


@pytest.fixture(scope="module")
def deep_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make(tmp_path_factory.mktemp("deep"), 0.5, 0.9)


def copy_of(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "m.safetensors"
    path.write_bytes(content)
    return path


def refused(path: Path, *needles: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_artifact(path)
    text = str(info.value)
    assert "\n" not in text and len(text) < 600, text
    for needle in (str(path), *needles):
        assert needle in text, text
    return text


def first(tensors: Tensors, suffix: str) -> str:
    return next(k for k in sorted(tensors) if k.endswith(suffix))


def set_nan(t: Tensors) -> None:
    t[first(t, "#scale")][0] = float("nan")


def set_inf(t: Tensors) -> None:
    t[first(t, "#scale")][-1] = float("inf")


def negative_scale(t: Tensors) -> None:
    t[first(t, "#scale")][0] = -1.0


def short_scale(t: Tensors) -> None:
    key = first(t, "#scale")
    t[key] = t[key][:1].clone()  # broadcasts over every channel if unchecked


def double_scale(t: Tensors) -> None:
    key = first(t, "#scale")
    t[key] = t[key].double()


def int64_bias(t: Tensors) -> None:
    t["fc.bias"] = t["fc.bias"].round().long()


def nan_running_var(t: Tensors) -> None:
    t[first(t, "running_var")][0] = float("nan")


def packed_2d(t: Tensors) -> None:
    key = "conv1.weight"
    t[key] = t[key].reshape(1, -1).clone()


def packed_padding(t: Tensors) -> None:
    key = "conv1.weight"  # 12 x 1 x 3 x 3 weights at 3 bits: 324 bits, 4 padding bits
    assert t[key].numel() == 41
    t[key][-1] |= 0xF0


DENSE: dict[str, tuple[Callable[[Tensors], None], str]] = {
    "scale-nan": (set_nan, "NaN or infinite"),
    "scale-inf": (set_inf, "NaN or infinite"),
    "scale-negative": (negative_scale, "negative scale"),
    "scale-wrong-length": (short_scale, "#scale has shape (1,)"),
    "scale-float64": (double_scale, "torch.float64, not torch.float32"),
    "bias-int64": (int64_bias, "fc.bias is torch.int64"),
    "running-var-nan": (nan_running_var, "NaN or infinite"),
    "packed-2d": (packed_2d, "conv1.weight has shape (1,"),
    "packed-padding-bits": (packed_padding, "padding bits"),
}


@pytest.mark.parametrize("case", list(DENSE))
def test_a_resigned_hostile_tensor_is_refused(
    tmp_path: Path, dense_bytes: bytes, case: str
) -> None:
    change, needle = DENSE[case]
    path = copy_of(tmp_path, dense_bytes)
    assert isinstance(load_artifact(path), torch.nn.Module)  # the pristine file loads
    edit_tensors(path, change)
    refused(path, needle)


def coded_key(path: Path, suffix: str) -> str:
    return next(k for k in sorted(read_header(path).coded) if k.endswith(suffix))


def sparse_layer(path: Path, encoding: str) -> str:
    head = read_header(path)
    return next(
        layer
        for layer, (_, enc, _) in sorted(head.sparse.items())
        if enc == encoding and f"{layer}.weight#pos" in head.coded
    )


def test_a_coded_stream_stored_as_bf16_is_refused(tmp_path: Path, deep_bytes: bytes) -> None:
    path = copy_of(tmp_path, deep_bytes)
    key = coded_key(path, "#pos")

    def to_bf16(t: Tensors) -> None:
        t[key] = t[key].to(torch.bfloat16)

    edit_tensors(path, to_bf16)
    refused(path, key, "torch.bfloat16, not torch.uint8")


def test_a_coded_stream_of_two_dimensions_is_refused(tmp_path: Path, deep_bytes: bytes) -> None:
    path = copy_of(tmp_path, deep_bytes)
    key = coded_key(path, ".weight")

    def to_2d(t: Tensors) -> None:
        t[key] = t[key].reshape(1, -1).clone()

    edit_tensors(path, to_2d)
    refused(path, key, "not 1-D")


def recode(key: str, raw: Callable[[int], bytes], size: int) -> Callable[[Tensors], None]:
    """Replace a coded stream by a valid zstd frame of ``raw(size)``: it decodes fine."""

    def change(t: Tensors) -> None:
        t[key] = torch.frombuffer(bytearray(compress(raw(size), "zstd")), dtype=torch.uint8)

    return change


def test_random_relative_positions_are_refused(tmp_path: Path, deep_bytes: bytes) -> None:
    path = copy_of(tmp_path, deep_bytes)
    layer = sparse_layer(path, "rel")
    key = f"{layer}.weight#pos"
    size = int(read_header(path).coded[key][1])
    edit_tensors(path, recode(key, random.Random(0).randbytes, size))
    refused(path, "position stream")


def test_positions_with_data_after_the_last_survivor_are_refused(
    tmp_path: Path, deep_bytes: bytes
) -> None:
    from autoshrink.compression.entropy import decompress

    path = copy_of(tmp_path, deep_bytes)
    layer = sparse_layer(path, "rel")
    key = f"{layer}.weight#pos"
    size = int(read_header(path).coded[key][1])
    from safetensors.torch import load_file

    raw = bytearray(decompress(load_file(str(path))[key].numpy().tobytes(), "zstd", size))
    raw[-1] |= 0x01  # one stray bit in the zero padding fields

    edit_tensors(path, recode(key, lambda n: bytes(raw), size))
    refused(path, "position stream")


def test_a_random_coded_stream_is_refused(tmp_path: Path, deep_bytes: bytes) -> None:
    path = copy_of(tmp_path, deep_bytes)
    key = coded_key(path, "#pos")

    def noise(t: Tensors) -> None:
        t[key] = torch.frombuffer(bytearray(random.Random(1).randbytes(64)), dtype=torch.uint8)

    edit_tensors(path, noise)
    refused(path, "zstd")


def test_a_coded_stream_of_the_wrong_length_is_refused(tmp_path: Path, deep_bytes: bytes) -> None:
    path = copy_of(tmp_path, deep_bytes)
    key = coded_key(path, ".weight")
    size = int(read_header(path).coded[key][1])
    edit_tensors(path, recode(key, bytes, size - 1))
    refused(path, f"gives {size - 1} bytes, expected {size}")


def test_a_coded_stream_in_the_benchmark_codec_is_refused(
    tmp_path: Path, deep_bytes: bytes
) -> None:
    path = copy_of(tmp_path, deep_bytes)

    def to_ans(meta: dict[str, Any]) -> None:
        coded = json.loads(meta["coded"])
        for entry in coded.values():
            entry[0] = "ans"
        meta["coded"] = json.dumps(coded)

    edit_meta(path, to_ans)
    refused(path, "is not [codec, raw length]")


def test_the_pristine_deep_artifact_still_loads_and_matches(
    tmp_path: Path, deep_bytes: bytes
) -> None:
    path = copy_of(tmp_path, deep_bytes)
    model = load_artifact(path)
    assert read_header(path).coded and isinstance(model, torch.nn.Module)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("version", ["¹", "١", "٣", "²", "1.0", " 3", "3 ", "+3", "0x3", "٠"])
@pytest.mark.parametrize("loader", [load_artifact, read_header])
def test_a_format_version_of_non_ascii_digits_is_refused(
    tmp_path: Path, dense_bytes: bytes, version: str, loader: Callable[[Path], object]
) -> None:
    path = copy_of(tmp_path, dense_bytes)
    edit_field(path, "format_version", version)
    with pytest.raises(CheckpointError) as info:
        loader(path)
    text = str(info.value)
    assert "\n" not in text and "invalid format version" in text and str(path) in text, text
