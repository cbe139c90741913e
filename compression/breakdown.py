"""What each unit costs, before and after a policy: the exact cost model, split by unit.

:func:`~autoshrink.compression.cost.cost_from_channels` sums the whole model; this splits
the same sums into rows. A conv or linear layer counts in the unit that owns its output
channels (its weights and bias, and its MACs, which also shrink when the unit feeding it
is pruned); a norm layer counts in the one unit its channels follow; an attention head
unit holds its heads' matmuls too. What no unit owns
is a row of its own: each fixed layer (the classifier, the layers of frozen units), then
``other`` (norms shared by several units, parameters and MACs outside any layer). The
rows add up to the model's cost exactly.

>>> from autoshrink.compression.models import ModelSpec, build_model
>>> from autoshrink.compression.units import build_units
>>> graph = build_units(build_model(ModelSpec("resnet20", 10, 1)), torch.zeros(1, 1, 8, 8))
>>> table = breakdown(graph, {"conv1": 8}, {"conv1": 8})
>>> table.rows[0].name, table.rows[0].kept, table.rows[0].channels
('conv1', 8, 16)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch  # noqa: F401  (used by the doctest above)

from autoshrink.compression.cost import SCALE_BYTES, Cost, removed_channels
from autoshrink.compression.errors import PolicyError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.sparsity import stored_weight_bytes, zeroed_count
from autoshrink.compression.unit_graph import UnitGraph

#: Row kinds: a prunable unit, a layer no unit owns, and the remainder.
UNIT, FIXED, OTHER = "unit", "fixed", "other"


@dataclass(frozen=True)
class Row:
    """One row of a breakdown.

    Args:
        name: The unit's name (its leading layer), the fixed layer's name, or ``other``.
        kind: :data:`UNIT`, :data:`FIXED` or :data:`OTHER`.
        layers: The conv and linear layers the row holds, leader first.
        channels: Output channels at full width (0 for ``other``); heads, for a unit of
            attention heads.
        kept: Output channels (or heads) kept.
        bits: The weight bits most of its unpinned layers have (of all its layers if
            every one is pinned; None for ``other``).
        pinned: Layers whose bits are pinned by the policy, with those bits.
        before: Cost at full width and float.
        after: Cost under the policy.
        sparsity: The fine-grained sparsity most of its unpinned layers have.
    """

    name: str
    kind: str
    layers: tuple[str, ...]
    channels: int
    kept: int
    bits: int | None
    pinned: dict[str, int]
    before: Cost
    after: Cost
    sparsity: float = 0.0

    @property
    def keep(self) -> float:
        """Kept channels over all channels (1.0 for a row without channels)."""
        return self.kept / self.channels if self.channels else 1.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, ``keep`` included."""
        data = asdict(self)
        data["layers"] = list(self.layers)
        return {**data, "keep": self.keep}


@dataclass(frozen=True)
class Breakdown:
    """Rows that add up to the whole model's cost, before and after."""

    rows: tuple[Row, ...]
    before: Cost
    after: Cost
    frozen: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``rows``, ``total`` (before and after) and ``frozen``."""
        return {
            "rows": [row.to_dict() for row in self.rows],
            "total": {"before": asdict(self.before), "after": asdict(self.after)},
            "frozen": dict(self.frozen),
        }


@dataclass(frozen=True)
class _Parts:
    """Per-layer and per-norm MACs, params and bytes of one configuration."""

    out: np.ndarray
    layer: np.ndarray  # (layers, 3): macs, params, bytes
    norm: np.ndarray  # (norms, 3)
    heads: np.ndarray  # (units,): MACs of the attention matmuls a head unit keeps

    def total(self, graph: UnitGraph) -> Cost:
        c = graph.coupling
        macs, params, size = self.layer.sum(axis=0) + self.norm.sum(axis=0)
        # other_macs holds every head's matmuls at full width: count the kept ones instead.
        outside = c.other_macs - int(c.unit_macs @ c.unit_channels) + int(self.heads.sum())
        return Cost(int(macs) + outside, int(params) + c.const_params, int(size) + c.const_fbytes)


def _parts(
    graph: UnitGraph,
    kept: Mapping[str, int],
    bits: Mapping[str, int],
    sparsity: Mapping[str, float] | None = None,
) -> _Parts:
    """The cost model's sums, kept apart per layer and per norm (integer arithmetic)."""
    c = graph.coupling
    removed = removed_channels(graph, kept)
    out = c.layer_out0 - c.layer_out_a @ removed
    cin = c.layer_in0 - c.layer_in_a @ removed
    norm = c.norm_c0 - c.norm_a @ removed
    ipg = np.where(c.layer_dw, 1, cin // c.layer_groups)
    weights = out * ipg * c.layer_kk
    biases = c.layer_bias.astype(np.int64) * out
    b = np.array([bits.get(layer.name, FLOAT_BITS) for layer in graph.layers], np.int64)
    packed = np.where(b < FLOAT_BITS, (weights * b + 7) // 8 + SCALE_BYTES * out, 4 * weights)
    if sparsity:
        s = np.array([sparsity.get(layer.name, 0.0) for layer in graph.layers])
        packed = stored_weight_bytes(weights, weights - zeroed_count(weights, s), b, out)
    layer = np.stack([c.layer_mcoef * out * ipg, weights + biases, packed + 4 * biases], axis=1)
    norm_cost = np.stack(
        [np.zeros_like(norm), c.norm_params * norm, 4 * (c.norm_params + c.norm_fbufs) * norm],
        axis=1,
    )
    heads = c.unit_macs * (c.unit_channels - removed)
    return _Parts(out, layer.reshape(-1, 3), norm_cost.reshape(-1, 3), heads)


def _check_bits(graph: UnitGraph, bits: Mapping[str, int]) -> None:
    names = set(graph.layer_names)
    for name, b in bits.items():
        if name not in names:
            raise PolicyError(f"no conv or linear layer named {name!r} in the model")
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= FLOAT_BITS:
            raise PolicyError(f"bits of layer {name} must be an integer in 1..32, got {b!r}")


def breakdown(
    graph: UnitGraph,
    kept: Mapping[str, int],
    bits: Mapping[str, int],
    pinned: Mapping[str, int] | None = None,
    sparsity: Mapping[str, float] | None = None,
) -> Breakdown:
    """Split the model's exact cost by unit, at full width and under a policy.

    Args:
        graph: The model's units.
        kept: Realised channels per unit name (missing: all kept).
        bits: Weight bits per layer name (missing: 32, float).
        pinned: Layers whose bits the policy pins (its ``layers``), marked in the rows.
        sparsity: Fine-grained sparsity per layer name (missing: none).

    Returns:
        One row per unit in order, then one per fixed layer, then ``other`` if it is not
        zero; the totals equal :func:`~autoshrink.compression.cost.cost_from_channels`.

    Raises:
        PolicyError: On unknown names or out-of-range counts or bits.
    """
    _check_bits(graph, bits)
    pinned = dict(pinned or {})
    sparsity = dict(sparsity or {})
    full, now = _parts(graph, {}, {}), _parts(graph, kept, bits, sparsity)
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    owner = _norm_owners(graph)
    rows: list[Row] = []
    members = [[index[n] for n in u.layers] for u in graph.units]
    members += [[i] for i, layer in enumerate(graph.layers) if layer.unit is None]
    width = [u.width for u in graph.units] + [1] * (len(members) - len(graph.units))
    for r, idx in enumerate(members):
        norms = np.flatnonzero(owner == r) if r < len(graph.units) else np.array([], int)
        names = tuple(graph.layers[i].name for i in idx)
        free = [n for n in names if n not in pinned] or list(names)
        layer_bits = [bits.get(n, FLOAT_BITS) for n in free]
        rows.append(
            Row(
                name=graph.units[r].name if r < len(graph.units) else names[0],
                kind=UNIT if r < len(graph.units) else FIXED,
                layers=names,
                channels=int(full.out[idx[0]]) // width[r],
                kept=int(now.out[idx[0]]) // width[r],
                bits=Counter(layer_bits).most_common(1)[0][0],
                pinned={n: pinned[n] for n in names if n in pinned},
                before=_cost(full, idx, norms, r),
                after=_cost(now, idx, norms, r),
                sparsity=Counter(sparsity.get(n, 0.0) for n in free).most_common(1)[0][0],
            )
        )
    before, after = full.total(graph), now.total(graph)
    rest_before = _minus(before, [r.before for r in rows])
    rest_after = _minus(after, [r.after for r in rows])
    if rest_before != Cost(0, 0, 0) or rest_after != Cost(0, 0, 0):
        rows.append(Row(OTHER, OTHER, (), 0, 0, None, {}, rest_before, rest_after))
    return Breakdown(tuple(rows), before, after, dict(graph.frozen))


def _norm_owners(graph: UnitGraph) -> np.ndarray:
    """The unit index each norm layer's channels follow, or -1 when not exactly one."""
    a = graph.coupling.norm_a != 0
    if a.size == 0:
        return np.full(len(a), -1)
    return np.where(a.sum(axis=1) == 1, a.argmax(axis=1), -1)


def _cost(parts: _Parts, layers: list[int], norms: np.ndarray, row: int) -> Cost:
    macs, params, size = parts.layer[layers].sum(axis=0) + parts.norm[norms].sum(axis=0)
    attention = int(parts.heads[row]) if row < len(parts.heads) else 0
    return Cost(int(macs) + attention, int(params), int(size))


def _minus(total: Cost, rows: list[Cost]) -> Cost:
    return Cost(
        total.macs - sum(r.macs for r in rows),
        total.params - sum(r.params for r in rows),
        total.bytes - sum(r.bytes for r in rows),
    )
