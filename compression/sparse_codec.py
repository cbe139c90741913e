"""A sparse layer's streams: positions (bitmask or relative indices) and packed survivors.

The sizes are those of :mod:`autoshrink.compression.sparsity`'s storage rule, to the byte:
a layer of ``N`` weights with ``n`` stored survivors at ``bits`` bits takes
``position_bytes(N, n)`` for its positions and ``ceil(n * bits / 8)`` for its values. The
stored survivors are every non-zero quantized weight plus, when there are fewer than ``n``
of those (a survivor may quantize to zero), the first zero positions, so that exactly ``n``
are stored and the layer decodes to the same integers.

>>> q = torch.tensor([0, 3, 0, 0, -1, 0, 0, 0], dtype=torch.int8)
>>> layer = encode_sparse(q, n=2, bits=4)
>>> torch.equal(decode_sparse(layer, 8, 4), q)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autoshrink.compression.packing import pack, padding_bits_set, unpack
from autoshrink.compression.sparsity import (
    BITMASK,
    RELATIVE,
    best_index_width,
    position_bytes,
    relative_fields,
)


@dataclass(frozen=True)
class SparseLayer:
    """One sparse layer's raw streams (before entropy coding) and how positions are coded.

    Attributes:
        n: Stored survivors.
        encoding: ``mask`` (bitmask) or ``rel`` (relative indices).
        width: Bits per relative-index field (0 for a bitmask).
        positions: The position stream.
        values: The survivors' quantized values, bit-packed in position order.
    """

    n: int
    encoding: str
    width: int
    positions: bytes
    values: bytes


def pack_fields(fields: np.ndarray, width: int) -> bytes:
    """Pack unsigned integers below ``2**width`` (1..16) LSB first into one bit stream."""
    as_u16 = fields.astype("<u2").view(np.uint8).reshape(-1, 2)
    bits = np.unpackbits(as_u16, axis=1, bitorder="little")[:, :width]
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_fields(data: bytes, width: int, count: int) -> np.ndarray:
    """Invert :func:`pack_fields` for ``count`` fields."""
    raw = np.frombuffer(data, np.uint8)
    bits = np.unpackbits(raw, count=count * width, bitorder="little").reshape(count, width)
    return bits.astype(np.int64) @ (np.int64(1) << np.arange(width, dtype=np.int64))


def stored_positions(q: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` positions stored: every non-zero, then the first zeros to make up ``n``.

    Raises:
        ValueError: If more than ``n`` values are non-zero.
    """
    nonzero = np.flatnonzero(q)
    if len(nonzero) > n:
        raise ValueError(f"{len(nonzero)} non-zero weights, but its sparsity stores only {n}")
    fill = np.flatnonzero(q == 0)[: n - len(nonzero)]
    return np.sort(np.concatenate([nonzero, fill]))


def _relative(positions: np.ndarray, numel: int, width: int) -> bytes:
    """The gap code, padded with zero fields to its worst case for ``(numel, n)``."""
    span = (1 << width) - 1
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    fillers = gaps // span
    fields = np.full(int(fillers.sum()) + len(gaps), span, np.int64)
    fields[np.cumsum(fillers + 1) - 1] = gaps % span
    total = int(relative_fields(numel, len(positions), width))
    fields = np.concatenate([fields, np.zeros(total - len(fields), np.int64)])
    return pack_fields(fields, width)


def _positions_from_relative(data: bytes, numel: int, n: int, width: int) -> np.ndarray:
    """The positions of a gap code; every field after the ``n``-th entry must be zero."""
    span = (1 << width) - 1
    total = int(relative_fields(numel, n, width))
    if padding_bits_set(data, total * width):
        raise ValueError("position stream has non-zero padding bits")
    fields = unpack_fields(data, width, total)
    entry = fields < span
    ends = np.flatnonzero(entry)
    if len(ends) >= n and fields[int(ends[n - 1]) + 1 if n else 0 :].any():
        raise ValueError("position stream has data after its last survivor")
    step = np.where(entry, fields + 1, span)
    return (np.cumsum(step) - 1)[entry][:n]


def encode_sparse(q: torch.Tensor, n: int, bits: int) -> SparseLayer:
    """Encode a quantized weight (any shape, C order) as ``n`` stored survivors."""
    flat = q.detach().reshape(-1).cpu().numpy()
    numel = flat.size
    positions = stored_positions(flat, n)
    width = best_index_width(numel, n)
    rel_bytes = (int(relative_fields(numel, n, width)) * width + 7) // 8
    if int(position_bytes(numel, n)) == rel_bytes and rel_bytes < (numel + 7) // 8:
        encoding, stream = RELATIVE, _relative(positions, numel, width)
    else:
        mask = np.zeros(numel, bool)
        mask[positions] = True
        encoding, width = BITMASK, 0
        stream = np.packbits(mask, bitorder="little").tobytes()
    values = pack(torch.from_numpy(flat[positions].copy()), bits).numpy().tobytes()
    return SparseLayer(n, encoding, width, stream, values)


def decode_sparse(layer: SparseLayer, numel: int, bits: int) -> torch.Tensor:
    """The flat int8 weight of ``numel`` values that :func:`encode_sparse` encoded.

    Raises:
        ValueError: If a stream has the wrong length, names a position out of range, or
            has stray bits in its padding (so it is not what :func:`encode_sparse` wrote).
    """
    want = int(position_bytes(numel, layer.n))
    if len(layer.positions) != want:
        raise ValueError(f"position stream has {len(layer.positions)} bytes, expected {want}")
    if layer.encoding == RELATIVE:
        positions = _positions_from_relative(layer.positions, numel, layer.n, layer.width)
    else:
        if padding_bits_set(layer.positions, numel):
            raise ValueError("position bitmask has bits set past its last weight")
        mask = np.unpackbits(
            np.frombuffer(layer.positions, np.uint8), count=numel, bitorder="little"
        )
        positions = np.flatnonzero(mask)
    if len(positions) != layer.n or (layer.n and int(positions[-1]) >= numel):
        raise ValueError(f"positions do not give {layer.n} survivors in {numel} weights")
    values = unpack(torch.frombuffer(bytearray(layer.values), dtype=torch.uint8), bits, layer.n)
    out = torch.zeros(numel, dtype=torch.int8)
    out[torch.from_numpy(positions.astype(np.int64))] = values
    return out
