"""Analytic, exact MACs, parameters and bytes of a compressed model: no forward pass.

Every channel count of every layer is affine in the channels removed per unit (see
:class:`~autoshrink.compression.units.Coupling`), so a cost is a few small integer
matrix-vector products. The result equals what is counted on the model that
:func:`~autoshrink.compression.prune.prune` returns: MACs as ``FlopCounterMode`` flops // 2
on the graph's input shape, params as ``sum(p.numel())``, bytes as :func:`tensor_bytes`
summed over every parameter and floating-point buffer.

>>> from autoshrink.compression.models import ModelSpec, build_model
>>> from autoshrink.compression.units import build_units
>>> graph = build_units(build_model(ModelSpec("smallcnn")), torch.zeros(1, 3, 32, 32))
>>> full, half = cost(graph), cost(graph, {u.name: 0.5 for u in graph.units})
>>> half.macs < full.macs and half.params < full.params
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch  # noqa: F401  (used by the doctest above)

from autoshrink.compression.errors import PolicyError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.sparsity import stored_weight_bytes, zeroed_count
from autoshrink.compression.unit_graph import UnitGraph

#: Bytes of the per-output-channel scale a quantized weight carries (one fp32 each).
SCALE_BYTES = 4


@dataclass(frozen=True)
class Cost:
    """What a (compressed) model costs.

    Args:
        macs: Multiply-accumulates of one forward pass on the graph's input shape.
        params: Parameter elements.
        bytes: Payload size: packed low-bit weights with their scales, the rest fp32.
    """

    macs: int
    params: int
    bytes: int


def tensor_bytes(numel: int, bits: int, out_channels: int) -> int:
    """Stored size of one tensor: THE size rule shared by cost model and artifact.

    A conv/linear weight at ``bits < 32`` packs into ``ceil(numel * bits / 8)`` bytes plus
    one fp32 scale per output channel; anything else is fp32.

    >>> tensor_bytes(1000, 4, 10), tensor_bytes(1000, 32, 10)
    (540, 4000)
    """
    if bits >= FLOAT_BITS:
        return 4 * numel
    return (numel * bits + 7) // 8 + SCALE_BYTES * out_channels


class _Tables:
    """Name-to-index maps and stacked coefficients, built once per graph."""

    def __init__(self, graph: UnitGraph) -> None:
        c = graph.coupling
        self.unit_index = {u.name: i for i, u in enumerate(graph.units)}
        self.unit_names = frozenset(self.unit_index)
        self.defaults = [(u.name, u.c_out) for u in graph.units]
        self.layer_index = {layer.name: i for i, layer in enumerate(graph.layers)}
        self.layer_names = frozenset(self.layer_index)
        self.channels = c.unit_channels
        self.groups = c.unit_groups
        self.float_bits = np.full(len(graph.layers), FLOAT_BITS, np.int64)
        self.bias = c.layer_bias.astype(np.int64)
        self.norm_bytes_per_c = 4 * (c.norm_params + c.norm_fbufs)
        # One matrix-vector product gives every layer's out and in channels and every norm
        # layer's channels. Float64 so that it runs on BLAS; all entries and results are
        # small integers, hence exact.
        self.n_layers = len(graph.layers)
        self.stack = np.concatenate([c.layer_out_a, c.layer_in_a, c.norm_a]).astype(np.float64)
        self.base = np.concatenate([c.layer_out0, c.layer_in0, c.norm_c0])


def _tables(graph: UnitGraph) -> _Tables:
    tables = graph.cache.get("cost_tables")
    if tables is None:
        tables = graph.cache["cost_tables"] = _Tables(graph)
    return tables


def removed_channels(graph: UnitGraph, kept: Mapping[str, int]) -> np.ndarray:
    """Channels removed per unit (in unit order) for realised kept counts.

    Raises:
        PolicyError: On an unknown unit, or a count outside ``1..N`` or off the unit's
            convolution groups.
    """
    t = _tables(graph)
    if not kept.keys() <= t.unit_names:
        for name in kept:
            graph.unit(name)  # raises the PolicyError that lists the units
    values = np.array([kept.get(name, n) for name, n in t.defaults])
    if len(values) and values.dtype.kind not in "iu":
        bad = next(k for k, v in kept.items() if isinstance(v, bool) or not _is_int(v))
        raise PolicyError(f"kept channels of unit {bad} must be an integer, got {kept[bad]!r}")
    removed = t.channels - values.astype(np.int64)
    wrong = (removed < 0) | (removed >= t.channels) | (removed % t.groups != 0)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        u = graph.units[i]
        raise PolicyError(
            f"unit {u.name} keeps {int(values[i])} channels; it needs 1..{u.c_out}"
            + (f" in multiples of {u.channel_groups}" if u.channel_groups > 1 else "")
        )
    return removed


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _bits_vector(graph: UnitGraph, bits: Mapping[str, int] | None) -> np.ndarray:
    t = _tables(graph)
    if not bits:
        return t.float_bits
    if not bits.keys() <= t.layer_names:
        bad = next(name for name in bits if name not in t.layer_index)
        raise PolicyError(f"no conv or linear layer named {bad!r} in the unit graph")
    vec = np.array([bits.get(name, FLOAT_BITS) for name in t.layer_index])
    if vec.dtype.kind not in "iu" or not ((vec >= 1) & (vec <= FLOAT_BITS)).all():
        bad = next(k for k, b in bits.items() if not _is_int(b) or not 1 <= b <= FLOAT_BITS)
        raise PolicyError(f"bits of layer {bad} must be an integer in 1..32, got {bits[bad]!r}")
    return vec


def _sparsity_vector(graph: UnitGraph, sparsity: Mapping[str, float] | None) -> np.ndarray:
    t = _tables(graph)
    vec = np.zeros(t.n_layers, np.float64)
    for name, s in (sparsity or {}).items():
        if name not in t.layer_index:
            raise PolicyError(f"no conv or linear layer named {name!r} in the unit graph")
        vec[t.layer_index[name]] = s
    return vec


def _layer_dims(graph: UnitGraph, kept: Mapping[str, int]) -> tuple[np.ndarray, ...]:
    """Removed channels per unit, then out channels, weights and norm channels per layer."""
    c, t = graph.coupling, _tables(graph)
    removed = removed_channels(graph, kept)
    dims = t.base - (t.stack @ removed.astype(np.float64)).astype(np.int64)
    out, cin, norm = dims[: t.n_layers], dims[t.n_layers : 2 * t.n_layers], dims[2 * t.n_layers :]
    ipg = np.where(c.layer_dw, 1, cin // c.layer_groups)
    return removed, out, out * ipg * c.layer_kk, norm, out * ipg


def cost_from_channels(
    graph: UnitGraph,
    kept: Mapping[str, int],
    bits: Mapping[str, int] | None = None,
    sparsity: Mapping[str, float] | None = None,
) -> Cost:
    """The cost of the model with ``kept[unit]`` channels per unit (missing: all kept).

    This is the hot path of the budget clamp: a handful of numpy operations, no Python loop
    over layers. MACs and params are dense (what a CPU executes, what the layers hold);
    bytes follow the storage rule (:func:`~autoshrink.compression.sparsity.
    stored_weight_bytes`), so with ``sparsity`` they are the artifact's stored bytes before
    entropy coding.

    Args:
        graph: The model's units.
        kept: Realised channels per unit name.
        bits: Weight bits per layer name (missing: 32, i.e. float).
        sparsity: Fine-grained sparsity per layer name (missing: 0).

    Raises:
        PolicyError: On unknown names or out-of-range values.
    """
    c, t = graph.coupling, _tables(graph)
    removed, out, weights, norm, per_position = _layer_dims(graph, kept)
    biases = int(t.bias @ out)
    b = _bits_vector(graph, bits)
    if sparsity:
        survivors = weights - zeroed_count(weights, _sparsity_vector(graph, sparsity))
        packed = stored_weight_bytes(weights, survivors, b, out)
    else:
        packed = np.where(b < FLOAT_BITS, (weights * b + 7) // 8 + SCALE_BYTES * out, 4 * weights)
    return Cost(
        macs=int(c.layer_mcoef @ per_position) + c.other_macs - int(c.unit_macs @ removed),
        params=c.const_params + int(weights.sum()) + biases + int(c.norm_params @ norm),
        bytes=c.const_fbytes + int(packed.sum()) + 4 * biases + int(t.norm_bytes_per_c @ norm),
    )


def nonzero_macs(
    graph: UnitGraph, kept: Mapping[str, int], sparsity: Mapping[str, float] | None = None
) -> int:
    """Theoretical MACs with zeroed weights skipped (dense MACs where nothing is zeroed).

    Each layer's weight MACs scale with its survivors; nothing else changes. A CPU runs the
    dense MACs: this is what a sparse kernel could at best save.
    """
    c = graph.coupling
    removed, _, weights, _, per_position = _layer_dims(graph, kept)
    survivors = weights - zeroed_count(weights, _sparsity_vector(graph, sparsity))
    share = np.where(weights > 0, survivors / np.maximum(weights, 1), 1.0)
    sparse_layers = round(float((c.layer_mcoef * per_position * share).sum()))
    return sparse_layers + c.other_macs - int(c.unit_macs @ removed)


def cost(
    graph: UnitGraph,
    keep: Mapping[str, float] | None = None,
    bits: Mapping[str, int] | None = None,
) -> Cost:
    """The cost of the model at keep-ratio ``keep[unit]`` per unit (missing: 1.0).

    Channels are rounded by :meth:`Unit.kept`, exactly as pruning rounds them.

    Args:
        graph: The model's units.
        keep: Keep-ratio in (0, 1] per unit name.
        bits: Weight bits per layer name (missing: 32, i.e. float).

    Raises:
        PolicyError: On unknown names or out-of-range values.
    """
    kept = {name: graph.unit(name).kept(k) for name, k in (keep or {}).items()}
    return cost_from_channels(graph, kept, bits)
