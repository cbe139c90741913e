"""An artifact's tensors: a model's stored state as named payload tensors, and back.

Each conv/linear weight with ``b < 32`` bits goes as ``b``-bit packed bytes plus one
float32 scale per output channel (key ``<weight>#scale``); every other floating-point
entry of the state dict in float32. A tensor that several names share (CoaT's position
encoders) is stored once, under its first name, as :func:`~.counting.count_bytes` counts
it; loading gives every name the same values. Non-persistent buffers are not in a state
dict, so they are not stored: the rebuilt model makes its own.

A layer the storage rule stores sparse (format 3, :mod:`autoshrink.compression.sparsity`)
goes as its packed survivors (key ``<weight>``), its scales and its position stream (key
``<weight>#pos``); those two byte streams are then entropy coded
(:mod:`autoshrink.compression.entropy`) wherever that makes them smaller, and the header
records each coded key's codec and raw length.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from autoshrink.compression.entropy import ARTIFACT_CODEC, decompress, smaller_or_none
from autoshrink.compression.packing import pack, unpack
from autoshrink.compression.quantize import dequantize_per_channel, quantize_per_channel
from autoshrink.compression.sparse_codec import SparseLayer, decode_sparse, encode_sparse
from autoshrink.compression.sparsity import position_bytes, stores_sparse, zeroed_count

SCALE_SUFFIX = "#scale"
POSITIONS_SUFFIX = "#pos"
#: Per sparse layer: ``[stored survivors, position encoding, index width]``.
SparseMeta = dict[str, list[int | str]]
#: Per entropy-coded key: ``[codec, raw length]``.
CodedMeta = dict[str, list[int | str]]


def _float_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict's float entries stored once each, and every other name's first name."""
    first: dict[int, str] = {}
    own: dict[str, torch.Tensor] = {}
    alias: dict[str, str] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if not value.is_floating_point():
            continue
        name = first.setdefault(id(value), key)
        if name == key:
            own[key] = value.detach()
        else:
            alias[key] = name
    return own, alias


def float_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict's floating-point entries that are stored, each once, by name."""
    return _float_state(model)[0]


def sparse_plan(
    model: nn.Module, bits: Mapping[str, int], sparsity: Mapping[str, float]
) -> dict[str, int]:
    """Stored survivors per layer that the storage rule stores sparse, from weight shapes."""
    state = _float_state(model)[0]
    plan = {}
    for layer, s in sparsity.items():
        weight, b = state.get(f"{layer}.weight"), bits.get(layer)
        if weight is None or b is None:
            continue
        numel = weight.numel()
        n = numel - int(zeroed_count(numel, s))
        if bool(stores_sparse(numel, n, b, weight.shape[0])):
            plan[layer] = n
    return plan


def encode(
    model: nn.Module, bits: Mapping[str, int], survivors: Mapping[str, int] | None = None
) -> tuple[dict[str, torch.Tensor], SparseMeta]:
    """Packed quantized weights with their scales, and every other float tensor, once.

    Args:
        model: The (pruned) model.
        bits: Weight bits (below 32) per conv/linear layer name.
        survivors: Stored survivors per layer stored sparse (:func:`sparse_plan`).

    Returns:
        The payload tensors by name, contiguous, on the CPU (before entropy coding), and
        each sparse layer's ``[n, encoding, width]``.

    Raises:
        ValueError: If a sparse layer has more non-zero weights than it stores.
    """
    tensors: dict[str, torch.Tensor] = {}
    sparse: SparseMeta = {}
    for key, value in _float_state(model)[0].items():
        layer, _, leaf = key.rpartition(".")
        if leaf == "weight" and layer in bits:
            q, scale = quantize_per_channel(value, bits[layer])
            tensors[key + SCALE_SUFFIX] = scale.cpu().contiguous()
            if survivors and layer in survivors:
                try:
                    coded = encode_sparse(q, survivors[layer], bits[layer])
                except ValueError as exc:
                    raise ValueError(f"layer {layer}: {exc}") from None
                tensors[key] = _bytes_tensor(coded.values)
                tensors[key + POSITIONS_SUFFIX] = _bytes_tensor(coded.positions)
                sparse[layer] = [coded.n, coded.encoding, coded.width]
            else:
                tensors[key] = pack(q, bits[layer])
        else:
            tensors[key] = value.to(torch.float32).cpu().contiguous().clone()
    return tensors, sparse


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, np.uint8).copy())


def entropy_code(
    tensors: Mapping[str, torch.Tensor], sparse: SparseMeta
) -> tuple[dict[str, torch.Tensor], CodedMeta]:
    """Entropy-code each sparse layer's two byte streams where that makes them smaller."""
    out, coded = dict(tensors), {}
    for layer in sparse:
        for key in (f"{layer}.weight", f"{layer}.weight{POSITIONS_SUFFIX}"):
            raw = tensors[key].numpy().tobytes()
            small = smaller_or_none(raw, ARTIFACT_CODEC)
            if small is not None:
                out[key], coded[key] = _bytes_tensor(small), [ARTIFACT_CODEC, len(raw)]
    return out, coded


def stream_sizes(model: nn.Module, bits: Mapping[str, int], sparse: SparseMeta) -> dict[str, int]:
    """Raw bytes of each sparse layer's two streams, from the rebuilt model's shapes.

    Raises:
        ValueError: If a sparse layer is not a quantized weight of the model, or stores
            more survivors than it has weights.
    """
    state = _float_state(model)[0]
    out = {}
    for layer, (n, _, _) in sparse.items():
        weight, b = state.get(f"{layer}.weight"), bits.get(layer)
        if weight is None or b is None or not 0 <= int(n) <= weight.numel():
            raise ValueError(f"sparse layer {layer!r} does not fit the model")
        out[f"{layer}.weight"] = (int(n) * b + 7) // 8
        out[f"{layer}.weight{POSITIONS_SUFFIX}"] = int(position_bytes(weight.numel(), int(n)))
    return out


def entropy_decode(
    tensors: Mapping[str, torch.Tensor], coded: CodedMeta, sizes: Mapping[str, int]
) -> dict[str, torch.Tensor]:
    """Invert :func:`entropy_code`; ``sizes`` are :func:`stream_sizes` (never expanded past).

    Raises:
        KeyError: If a coded key is missing.
        ValueError: If a coded key is not a sparse stream, claims another raw length, or
            does not decode.
    """
    out = dict(tensors)
    for key, (codec, size) in coded.items():
        if sizes.get(key) != size:
            raise ValueError(f"coded stream {key!r} claims {size} bytes, not {sizes.get(key)}")
        data = tensors[key].numpy().tobytes()
        out[key] = _bytes_tensor(decompress(data, str(codec), int(size)))
    return out


def expected_keys(
    model: nn.Module, bits: Mapping[str, int], sparse: Mapping[str, object] | None = None
) -> set[str]:
    """The payload names :func:`encode` writes for ``model`` at ``bits``."""
    floats = set(_float_state(model)[0])
    weights = {k for k in floats if k.rpartition(".")[2] == "weight"}
    return (
        floats
        | {k + SCALE_SUFFIX for k in weights if k.rpartition(".")[0] in bits}
        | {k + POSITIONS_SUFFIX for k in weights if k.rpartition(".")[0] in (sparse or {})}
    )


def decode_into(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    bits: Mapping[str, int],
    sparse: SparseMeta | None = None,
) -> None:
    """Load payload ``tensors`` (as :func:`encode` wrote them, decoded) into ``model``.

    Raises:
        KeyError: If a stored name is missing.
        ValueError: If a tensor has another shape than the model's.
        RuntimeError: If the state dict does not load.
    """
    own, alias = _float_state(model)
    state = model.state_dict()
    values: dict[str, torch.Tensor] = {}
    for key, have in own.items():
        layer, _, leaf = key.rpartition(".")
        if leaf == "weight" and layer in bits:
            q = _weight_ints(tensors, key, bits[layer], have.numel(), (sparse or {}).get(layer))
            value = dequantize_per_channel(q.view(have.shape), tensors[key + SCALE_SUFFIX])
        else:
            value = tensors[key]
        if value.shape != have.shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} vs {tuple(have.shape)}")
        values[key] = value.to(have.dtype)
    state.update(values)
    state.update({key: values[name] for key, name in alias.items()})
    model.load_state_dict(state)


def _weight_ints(
    tensors: Mapping[str, torch.Tensor],
    key: str,
    bits: int,
    numel: int,
    sparse: list[int | str] | None,
) -> torch.Tensor:
    """A quantized weight's integers, from its dense packing or its sparse streams."""
    if sparse is None:
        return unpack(tensors[key], bits, numel)
    n, encoding, width = sparse
    layer = SparseLayer(
        int(n),
        str(encoding),
        int(width),
        tensors[key + POSITIONS_SUFFIX].numpy().tobytes(),
        tensors[key].numpy().tobytes(),
    )
    return decode_sparse(layer, numel, bits)
