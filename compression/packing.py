"""Bit packing of signed low-bit integers into bytes.

A tensor of ``numel`` signed integers at ``bits`` bits packs into exactly
``ceil(numel * bits / 8)`` bytes: two 4-bit values share a byte, four 2-bit values share a
byte, and odd widths (3, 5, 6, 7) straddle byte boundaries. Values are stored in two's
complement, least significant bit first, as one continuous little-endian bit stream; the
last byte is zero-padded. Everything is vectorised (numpy ``packbits``), with no Python
loop over elements.

>>> q = torch.tensor([-7, 0, 3, 7, -1], dtype=torch.int8)
>>> packed = pack(q, 4)
>>> packed.numel()
3
>>> torch.equal(unpack(packed, 4, q.numel()), q)
True
"""

from __future__ import annotations

import numpy as np
import torch

MIN_BITS = 2
MAX_BITS = 8


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` values take when packed at ``bits`` bits: ``ceil(numel*bits/8)``."""
    return (numel * bits + 7) // 8


def padding_bits_set(data: np.ndarray | bytes, used_bits: int) -> bool:
    """Whether any bit after the first ``used_bits`` (LSB first) of ``data`` is set."""
    raw = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    full, rest = divmod(used_bits, 8)
    tail = raw[full + (1 if rest else 0) :]
    return bool(tail.any()) or bool(rest and full < len(raw) and raw[full] >> rest)


def _check(bits: int) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"can only pack {MIN_BITS}..{MAX_BITS} bits, got {bits}")


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed integers in ``[-2**(bits-1), 2**(bits-1) - 1]`` into a uint8 tensor.

    Args:
        q: Integer tensor of any shape (flattened in C order); values must fit ``bits``.
        bits: Bit width, 2..8.

    Returns:
        A 1-D uint8 tensor of ``packed_nbytes(q.numel(), bits)`` bytes.

    Raises:
        ValueError: If ``bits`` is out of range or a value does not fit.
    """
    _check(bits)
    flat = q.detach().reshape(-1).to(torch.int16)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if flat.numel() and (int(flat.min()) < lo or int(flat.max()) > hi):
        raise ValueError(f"values outside [{lo}, {hi}] cannot be packed at {bits} bits")
    # Two's complement in the low `bits` bits, as unsigned bytes.
    unsigned = (flat & ((1 << bits) - 1)).to(torch.uint8).cpu().numpy()
    if bits == 8:
        return torch.from_numpy(unsigned.copy())
    # (numel, bits) matrix of single bits, LSB first, then one stream of bytes.
    bit_matrix = np.unpackbits(unsigned[:, None], axis=1, bitorder="little")[:, :bits]
    packed = np.packbits(bit_matrix.reshape(-1), bitorder="little")
    return torch.from_numpy(packed)


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Invert :func:`pack`: recover ``numel`` signed values as an int8 tensor.

    Args:
        packed: The uint8 tensor :func:`pack` returned.
        bits: The bit width it was packed with, 2..8.
        numel: How many values it holds.

    Returns:
        A 1-D int8 tensor of ``numel`` values; reshape it to the original shape.

    Raises:
        ValueError: If ``packed`` is not 1-D uint8 of exactly ``packed_nbytes(numel, bits)``
            bytes, or the padding bits of its last byte are not zero (:func:`pack` writes
            zeros there, so anything else is not its output).
    """
    _check(bits)
    expected = packed_nbytes(numel, bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != expected:
        raise ValueError(
            f"packed data has shape {tuple(packed.shape)} of {packed.dtype}, "
            f"want {expected} uint8 for {numel} values at {bits} bits"
        )
    raw = packed.detach().cpu().numpy()
    if padding_bits_set(raw, numel * bits):
        raise ValueError("packed data has non-zero padding bits")
    if bits == 8:
        return torch.from_numpy(raw.view(np.int8).copy())
    stream = np.unpackbits(raw, count=numel * bits, bitorder="little").reshape(numel, bits)
    weights = (1 << np.arange(bits, dtype=np.int16)).astype(np.int16)
    unsigned = stream.astype(np.int16) @ weights
    # Sign-extend from `bits` bits.
    signed = unsigned - ((unsigned >> (bits - 1)) & 1) * (1 << bits)
    return torch.from_numpy(signed.astype(np.int8))
