"""Entropy coding of byte streams: zstd (the artifact's choice) and rANS, side by side.

- ``zstd`` (:mod:`zstandard`, level 19): LZ77 plus Huffman/FSE entropy stages; a few
  bytes of frame header.
- ``ans`` (:mod:`constriction`'s range-ANS ``AnsCoder``, an optional dependency): an
  order-0 model of the stream's bytes, whose counts are stored in front of the code.

A coded stream is kept only when it is smaller than the raw one
(:func:`smaller_or_none`), so coding never makes an artifact larger than its bound.
``benchmarks/bench_deep.py --coders`` measures both on the same streams; docs/benchmarks.md
states the numbers behind the choice of zstd.

>>> data = bytes(1000)
>>> decompress(compress(data, "zstd"), "zstd", len(data)) == data
True
"""

from __future__ import annotations

import numpy as np

CODECS: tuple[str, ...] = ("zstd", "ans")
#: The coder the artifact uses.
ARTIFACT_CODEC = "zstd"
ZSTD_LEVEL = 19
#: ANS model precision: counts are scaled so that they sum to 2**_ANS_BITS (each fits u16).
_ANS_BITS = 15


def compress(data: bytes, codec: str) -> bytes:
    """Entropy-code ``data`` with ``codec`` (``zstd`` or ``ans``)."""
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False).compress(data)
    if codec == "ans":
        return _ans_compress(data)
    raise ValueError(f"unknown codec {codec!r}; known: {CODECS}")


def decompress(blob: bytes, codec: str, size: int) -> bytes:
    """Invert :func:`compress`; ``size`` is the raw length.

    Raises:
        ValueError: On an unknown codec or a stream that does not decode to ``size`` bytes.
    """
    if codec == "zstd":
        import zstandard

        try:  # a bounded read: a frame that claims more than `size` is never expanded
            with zstandard.ZstdDecompressor().stream_reader(blob) as reader:
                out = reader.read(size + 1)
        except zstandard.ZstdError as exc:
            raise ValueError(f"corrupt zstd stream: {exc}") from None
    elif codec == "ans":
        out = _ans_decompress(blob, size)
    else:
        raise ValueError(f"unknown codec {codec!r}; known: {CODECS}")
    if len(out) != size:
        raise ValueError(f"coded stream gives {len(out)} bytes, expected {size}")
    return out


def smaller_or_none(data: bytes, codec: str) -> bytes | None:
    """The coded stream if it is smaller than ``data``, else None (store it raw)."""
    coded = compress(data, codec)
    return coded if len(coded) < len(data) else None


# --- rANS -----------------------------------------------------------------------------------
def _ans_counts(data: bytes) -> np.ndarray:
    """Byte counts scaled to sum to ``2**_ANS_BITS``, every present byte at least 1."""
    raw = np.bincount(np.frombuffer(data, np.uint8), minlength=256).astype(np.float64)
    total = 1 << _ANS_BITS
    counts = np.where(raw > 0, np.maximum(1, np.floor(raw / raw.sum() * total)), 0)
    counts[int(np.argmax(counts))] += total - counts.sum()  # the largest absorbs rounding
    return counts.astype(np.int64)


def _ans_model(counts: np.ndarray) -> object:
    import constriction

    probabilities = counts.astype(np.float64) / counts.sum()
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def _ans_compress(data: bytes) -> bytes:
    """A 32-byte bitmap of the bytes present, their u16 counts, then the ANS words."""
    import constriction

    if not data:
        return b""
    counts = _ans_counts(data)
    present = counts > 0
    table = np.packbits(present, bitorder="little").tobytes()
    table += counts[present].astype("<u2").tobytes()
    coder = constriction.stream.stack.AnsCoder()
    symbols = np.frombuffer(data, np.uint8).astype(np.int32)
    coder.encode_reverse(symbols, _ans_model(counts))
    return table + coder.get_compressed().astype("<u4").tobytes()


def _ans_decompress(blob: bytes, size: int) -> bytes:
    import constriction

    if size == 0:
        return b""
    present = np.unpackbits(np.frombuffer(blob[:32], np.uint8), bitorder="little").astype(bool)
    n = int(present.sum())
    counts = np.zeros(256, np.int64)
    counts[present] = np.frombuffer(blob[32 : 32 + 2 * n], "<u2")
    words = np.frombuffer(blob[32 + 2 * n :], "<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    symbols = coder.decode(_ans_model(counts), size)
    return np.asarray(symbols, np.uint8).tobytes()
