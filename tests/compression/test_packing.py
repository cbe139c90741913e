from __future__ import annotations

import math

import pytest
import torch

from autoshrink.compression.packing import pack, packed_nbytes, unpack


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("numel", [1, 3, 7, 13, 101, 1001])
def test_round_trip_every_width_and_odd_lengths(bits: int, numel: int) -> None:
    gen = torch.Generator().manual_seed(bits * 1000 + numel)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = torch.randint(lo, hi + 1, (numel,), generator=gen, dtype=torch.int8)
    q[0], q[-1] = lo, hi  # both extremes, including the most negative value
    packed = pack(q, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(numel * bits / 8) == packed_nbytes(numel, bits)
    assert torch.equal(unpack(packed, bits, numel), q)


def test_four_bits_take_half_a_byte_each() -> None:
    q = torch.tensor([1, -2, 3, -4], dtype=torch.int8)
    packed = pack(q, 4)
    assert packed.tolist() == [0x1 | (0xE << 4), 0x3 | (0xC << 4)]  # LSB first, two's compl.


def test_shape_is_flattened_in_c_order() -> None:
    q = torch.arange(-3, 3, dtype=torch.int8).reshape(2, 3)
    assert torch.equal(unpack(pack(q, 3), 3, 6).view(2, 3), q)


def test_empty_tensor() -> None:
    q = torch.zeros(0, dtype=torch.int8)
    assert pack(q, 5).numel() == 0
    assert unpack(pack(q, 5), 5, 0).numel() == 0


@pytest.mark.parametrize("bits", [1, 9])
def test_rejects_widths_outside_2_to_8(bits: int) -> None:
    with pytest.raises(ValueError, match="bits"):
        pack(torch.zeros(4, dtype=torch.int8), bits)


def test_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="outside"):
        pack(torch.tensor([2], dtype=torch.int8), 2)


def test_unpack_rejects_wrong_byte_count() -> None:
    with pytest.raises(ValueError, match="want 2 uint8"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, 4)
