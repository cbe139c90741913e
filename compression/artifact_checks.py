"""Loading an artifact's tensors into its rebuilt model, each checked before it is used.

The file's SHA-256 is a checksum, not a signature: anyone can edit a tensor and compute
it again. So every payload tensor is checked against what the header and the rebuilt
model promise before anything is decoded: its name, its dtype (float32 for floats and
scales, uint8 for packed and coded bytes), its shape (one scale per output channel, a
packed weight's exact byte count, a raw sparse stream's exact length) and, for floats,
that every value is finite (and every scale non-negative). A coded stream must then decode
to exactly its promised length, and the streams to exactly the promised positions, with
no stray bits in their padding (:mod:`autoshrink.compression.sparse_codec`). Whatever does
not hold is one :class:`CheckpointError` line naming the file and the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from autoshrink.compression.artifact_header import ArtifactHeader
from autoshrink.compression.artifact_payload import (
    POSITIONS_SUFFIX,
    SCALE_SUFFIX,
    decode_into,
    entropy_decode,
    expected_keys,
    float_tensors,
    stream_sizes,
)
from autoshrink.compression.errors import AutoshrinkError, CheckpointError
from autoshrink.compression.packing import packed_nbytes
from autoshrink.compression.quantize import set_activation_quant_


def restore(
    path: Path, model: nn.Module, tensors: Mapping[str, torch.Tensor], head: ArtifactHeader
) -> None:
    """Check ``tensors`` against ``head`` and ``model``, then load them into ``model``.

    Raises:
        CheckpointError: One line naming the file and the first tensor that is missing,
            unexpected, of the wrong dtype or shape, not finite, or does not decode.
    """
    expected = expected_keys(model, head.weight_bits, head.sparse)
    if set(tensors) != expected:
        odd = sorted(set(tensors) ^ expected)
        raise CheckpointError(
            f"{path} does not match its rebuilt architecture: {len(odd)} tensor(s) missing "
            f"or unexpected (e.g. {odd[0]!r})"[:300]
        )
    try:
        sizes = stream_sizes(model, head.weight_bits, head.sparse)
    except ValueError as exc:
        raise CheckpointError(
            f"{path} does not match its rebuilt architecture: {exc}"[:300]
        ) from None
    try:
        check_payload(model, tensors, head, sizes)
    except ValueError as exc:
        raise CheckpointError(f"{path} has a malformed tensor: {exc}"[:300]) from None
    try:
        decoded = entropy_decode(tensors, head.coded, sizes)
        decode_into(model, decoded, head.weight_bits, head.sparse)
        set_activation_quant_(model, head.act_quant)
    except (KeyError, ValueError, RuntimeError, AutoshrinkError) as exc:
        one_line = " ".join(str(exc).split())[:200]
        raise CheckpointError(
            f"{path} does not match its rebuilt architecture: {one_line}"
        ) from None


def check_payload(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    head: ArtifactHeader,
    sizes: Mapping[str, int],
) -> None:
    """Every stored tensor has the dtype, shape and finite values the header promises.

    Args:
        model: The rebuilt, pruned model (its shapes are the promise).
        tensors: The payload as read, before entropy decoding.
        head: The artifact's header (bits, sparse layers, coded streams).
        sizes: The raw length of each sparse stream (``stream_sizes``).

    Raises:
        ValueError: Naming the first tensor that breaks its promise.
    """
    for key, have in float_tensors(model).items():
        layer, _, leaf = key.rpartition(".")
        bits = head.weight_bits.get(layer) if leaf == "weight" else None
        if bits is None:
            _expect(tensors[key], key, torch.float32, tuple(have.shape))
            continue
        scale = _expect(
            tensors[key + SCALE_SUFFIX], key + SCALE_SUFFIX, torch.float32, (have.shape[0],)
        )
        if bool((scale < 0).any()):
            raise ValueError(f"{key + SCALE_SUFFIX} has a negative scale")
        if layer not in head.sparse:
            _expect(tensors[key], key, torch.uint8, (packed_nbytes(have.numel(), bits),))
            continue
        for stream in (key, key + POSITIONS_SUFFIX):
            coded = stream in head.coded
            _expect(tensors[stream], stream, torch.uint8, None if coded else (sizes[stream],))


def _expect(
    value: torch.Tensor, key: str, dtype: torch.dtype, shape: tuple[int, ...] | None
) -> torch.Tensor:
    """``value`` if it has ``dtype`` and ``shape`` (None: any 1-D) and, if float, is finite."""
    if value.dtype != dtype:
        raise ValueError(f"{key} is {value.dtype}, not {dtype}")
    if (shape is None and value.dim() != 1) or (shape is not None and tuple(value.shape) != shape):
        want = "1-D" if shape is None else str(shape)
        raise ValueError(f"{key} has shape {tuple(value.shape)}, not {want}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{key} holds NaN or infinite values")
    return value
