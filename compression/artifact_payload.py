"""An artifact's tensors: a model's stored state as named payload tensors, and back.

Each conv/linear weight with ``b < 32`` bits goes as ``b``-bit packed bytes plus one
float32 scale per output channel (key ``<weight>#scale``); every other floating-point
entry of the state dict in float32. A tensor that several names share (CoaT's position
encoders) is stored once, under its first name, as :func:`~.counting.count_bytes` counts
it; loading gives every name the same values. Non-persistent buffers are not in a state
dict, so they are not stored: the rebuilt model makes its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from autoshrink.compression.packing import pack, unpack
from autoshrink.compression.quantize import dequantize_per_channel, quantize_per_channel

SCALE_SUFFIX = "#scale"


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


def encode(model: nn.Module, bits: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Packed quantized weights with their scales, and every other float tensor, once.

    Args:
        model: The (pruned) model.
        bits: Weight bits (below 32) per conv/linear layer name.

    Returns:
        The payload tensors by name, contiguous, on the CPU.
    """
    tensors: dict[str, torch.Tensor] = {}
    for key, value in _float_state(model)[0].items():
        layer, _, leaf = key.rpartition(".")
        if leaf == "weight" and layer in bits:
            q, scale = quantize_per_channel(value, bits[layer])
            tensors[key] = pack(q, bits[layer])
            tensors[key + SCALE_SUFFIX] = scale.cpu().contiguous()
        else:
            tensors[key] = value.to(torch.float32).cpu().contiguous().clone()
    return tensors


def expected_keys(model: nn.Module, bits: Mapping[str, int]) -> set[str]:
    """The payload names :func:`encode` writes for ``model`` at ``bits``."""
    floats = set(_float_state(model)[0])
    return floats | {
        k + SCALE_SUFFIX
        for k in floats
        if k.rpartition(".")[2] == "weight" and k.rpartition(".")[0] in bits
    }


def decode_into(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], bits: Mapping[str, int]
) -> None:
    """Load payload ``tensors`` (as :func:`encode` wrote them) into ``model``'s state.

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
            q = unpack(tensors[key], bits[layer], have.numel()).view(have.shape)
            value = dequantize_per_channel(q, tensors[key + SCALE_SUFFIX])
        else:
            value = tensors[key]
        if value.shape != have.shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} vs {tuple(have.shape)}")
        values[key] = value.to(have.dtype)
    state.update(values)
    state.update({key: values[name] for key, name in alias.items()})
    model.load_state_dict(state)
