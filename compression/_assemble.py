"""The cost model's tables from the accepted groups (private to ``_depgraph``).

Given the probe (execution order, output shapes, total MACs) and each unit's plan items,
build the :class:`Coupling` matrices, the :class:`Layer` and :class:`Unit` records and the
merged channel plan of a :class:`UnitGraph`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn

from autoshrink.compression.counting import stored_buffers
from autoshrink.compression.errors import UnsupportedModelError
from autoshrink.compression.unit_graph import (
    CONV_TYPES,
    Coupling,
    Layer,
    PlanEntry,
    Unit,
    UnitGraph,
)

if TYPE_CHECKING:
    from autoshrink.compression._depgraph import _Item, _Probe

logger = logging.getLogger(__name__)


class _Geo(NamedTuple):
    """The static shape of a conv/linear layer."""

    kind: str
    c_in: int
    c_out: int
    kernel: int  # the largest kernel side
    kk: int  # kernel elements
    stride: int
    groups: int


def _geometry(m: nn.Module) -> _Geo:
    if isinstance(m, nn.Linear):
        return _Geo("linear", m.in_features, m.out_features, 1, 1, 1, 1)
    assert isinstance(m, CONV_TYPES)
    ks = tuple(int(k) for k in m.kernel_size)
    st = tuple(int(s) for s in m.stride)
    return _Geo("conv", m.in_channels, m.out_channels, max(ks), math.prod(ks), max(st), m.groups)


def norm_channels(m: nn.Module) -> int:
    for attr in ("num_features", "num_channels", "num_parameters"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[-1])
    raise UnsupportedModelError(f"cannot tell the channels of {type(m).__name__}")


def _per_channel_tensors(m: nn.Module, c: int) -> list[torch.Tensor]:
    """The parameters and float buffers of a norm layer that have one entry per channel."""
    tensors = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
    return [t for t in tensors if t.shape == (c,) and t.is_floating_point()]


def _norm_tables(
    parts: dict[str, Any], rows: dict[str, np.ndarray], pdims: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[int]]:
    """Per norm-like entry: channels, parameter and float-buffer elements per channel.

    A norm module has one element per channel in each per-channel tensor; a parameter cut
    along dim ``d`` (a layer scale, a position embedding) has ``numel / shape[d]``.
    Returns those three columns and the ids of the tensors they cover.
    """
    c0, params, fbufs, ids = [], [], [], set()
    for name in rows:
        part = parts[name]
        if isinstance(part, nn.Parameter):
            c = int(part.shape[pdims[name]])
            c0.append(c)
            params.append(part.numel() // c)
            fbufs.append(0)
            ids.add(id(part))
            continue
        c = norm_channels(part)
        tensors = _per_channel_tensors(part, c)
        c0.append(c)
        params.append(sum(isinstance(t, nn.Parameter) for t in tensors))
        fbufs.append(sum(not isinstance(t, nn.Parameter) for t in tensors))
        ids.update(id(t) for t in tensors)
    return np.array(c0, np.int64), np.array(params, np.int64), np.array(fbufs, np.int64), ids


class _Rows(NamedTuple):
    """Per-unit channel counts of each layer and norm entry, from the plan items."""

    dw: np.ndarray
    out_a: np.ndarray
    in_a: np.ndarray
    norm_rows: dict[str, np.ndarray]
    pdims: dict[str, int]
    owner: dict[str, str]


def _unit_rows(order: list[str], found: list[tuple[str, int, int, list[_Item]]]) -> _Rows:
    """Tally each unit's plan items into the layer and norm-entry coupling rows.

    Args:
        order: The conv/linear layer names in execution order.
        found: Per unit: root, channels, channel groups and plan items.

    Returns:
        The depthwise flags, output/input coupling matrices, norm rows, parameter cut
        dims and the unit owning each layer's output channels.
    """
    n_units = len(found)
    lidx = {name: i for i, name in enumerate(order)}
    dw = np.zeros(len(order), bool)
    out_a = np.zeros((len(order), n_units), np.int64)
    in_a = np.zeros((len(order), n_units), np.int64)
    norm_rows: dict[str, np.ndarray] = {}
    pdims: dict[str, int] = {}
    owner: dict[str, str] = {}
    for u, (root, _, _, items) in enumerate(found):
        for it in items:
            if it.dim.startswith("p"):
                pdims[it.module] = int(it.dim[1:])
            if it.dim == "c" or it.dim.startswith("p"):
                norm_rows.setdefault(it.module, np.zeros(n_units, np.int64))[u] += it.per_channel
            elif it.dim == "in":
                in_a[lidx[it.module], u] += it.per_channel
            else:
                out_a[lidx[it.module], u] += it.per_channel
                dw[lidx[it.module]] |= it.dim == "dw"
                owner.setdefault(it.module, root)
    return _Rows(dw, out_a, in_a, norm_rows, pdims, owner)


def _coupling(
    model: nn.Module,
    modules: dict[str, Any],
    probe: _Probe,
    geo: dict[str, _Geo],
    found: list[tuple[str, int, int, list[_Item]]],
) -> tuple[Coupling, dict[str, str]]:
    """The cost model's tables, and which unit owns each layer's output channels."""
    n_units, order = len(found), probe.order
    dw, out_a, in_a, norm_rows, pdims, owner = _unit_rows(order, found)
    # FlopCounterMode counts batch x output positions x kernel x c_out x c_in/groups per call.
    positions = [
        sum(math.prod(s) // (s[-1] if geo[n].kind == "linear" else s[1]) for s in probe.shapes[n])
        for n in order
    ]
    variable: set[int] = set()
    for name in order:
        m = modules[name]
        variable.update(id(t) for t in (m.weight, getattr(m, "bias", None)) if t is not None)
    norm_c0, norm_params, norm_fbufs, norm_ids = _norm_tables(modules, norm_rows, pdims)
    variable |= norm_ids
    stored = (*model.parameters(), *stored_buffers(model))
    const = [t for t in stored if id(t) not in variable]
    layer = np.array([(g.c_out, g.c_in, g.groups, g.kk) for g in geo.values()], np.int64)
    coupling = Coupling(
        unit_channels=np.array([n for _, n, _, _ in found], np.int64),
        unit_offsets=np.cumsum([0] + [n for _, n, _, _ in found])[:-1].astype(np.int64),
        unit_groups=np.array([g for _, _, g, _ in found], np.int64),
        layer_out0=layer[:, 0],
        layer_in0=layer[:, 1],
        layer_groups=layer[:, 2],
        layer_dw=dw,
        layer_kk=layer[:, 3],
        layer_mcoef=np.array(positions, np.int64) * layer[:, 3],
        layer_bias=np.array([getattr(modules[n], "bias", None) is not None for n in order]),
        layer_out_a=out_a,
        layer_in_a=in_a,
        norm_names=tuple(norm_rows),
        norm_c0=norm_c0,
        norm_params=norm_params,
        norm_fbufs=norm_fbufs,
        norm_a=np.array(list(norm_rows.values()), np.int64).reshape(len(norm_rows), n_units),
        const_params=sum(t.numel() for t in model.parameters() if id(t) not in variable),
        const_fbytes=4 * sum(t.numel() for t in const if t.is_floating_point()),
        other_macs=0,
        unit_macs=np.zeros(n_units, np.int64),
    )
    return coupling, owner


def assemble(
    model: nn.Module,
    modules: dict[str, Any],
    probe: _Probe,
    found: list[tuple[str, int, int, list[_Item]]],
    round_to: int,
    input_shape: tuple[int, ...],
    head_macs: dict[str, int] | None = None,
) -> UnitGraph:
    """The :class:`UnitGraph` of the accepted groups.

    Args:
        model: The traced model.
        modules: Its modules and parameters by name.
        probe: What the hooked forward pass saw.
        found: Per unit: root, channels, channel groups and plan items.
        round_to: The requested channel rounding.
        input_shape: The example input's shape.
        head_macs: Per attention-head unit root, the MACs outside any layer that each head
            costs (its attention matmuls).
    """
    geo = {name: _geometry(modules[name]) for name in probe.order}
    c, owner = _coupling(model, modules, probe, geo, found)
    per_head = head_macs or {}
    unit_macs = np.array([per_head.get(root, 0) for root, _, _, _ in found], np.int64)
    ipg = np.where(c.layer_dw, 1, c.layer_in0 // c.layer_groups)
    macs = c.layer_mcoef * c.layer_out0 * ipg
    params = c.layer_out0 * ipg * c.layer_kk + c.layer_bias * c.layer_out0
    other_macs = probe.macs - int(macs.sum())
    if other_macs:
        logger.info("%d MACs outside conv/linear modules are assumed fixed", other_macs)
    c = replace(c, other_macs=other_macs, unit_macs=unit_macs.reshape(len(found)))
    layers = {
        name: Layer(
            name,
            g.kind,
            g.c_in,
            g.c_out,
            g.kernel,
            g.stride,
            g.groups,
            owner.get(name),
            fmap=_fmap(probe.shapes[name][0], g.kind),
            macs=int(macs[i]),
            params=int(params[i]),
        )
        for i, (name, g) in enumerate(geo.items())
    }
    units = _units(probe.order, found, layers, owner, round_to)
    return UnitGraph(tuple(units), tuple(layers.values()), input_shape, c, _plan(found, c))


def _units(
    order: list[str],
    found: list[tuple[str, int, int, list[_Item]]],
    layers: dict[str, Layer],
    owner: dict[str, str],
    round_to: int,
) -> list[Unit]:
    """The :class:`Unit` records, each summing the cost of the layers it owns.

    Args:
        order: The conv/linear layer names in execution order.
        found: Per unit: root, channels, channel groups and plan items.
        layers: The layer records by name.
        owner: The unit root owning each layer's output channels.
        round_to: The requested channel rounding.

    Returns:
        One unit per entry of ``found``, in the same order.
    """
    units = []
    for u, (root, n, g, items) in enumerate(found):
        own = [root] + [name for name in order if owner.get(name) == root != name]
        lead = layers[root]
        units.append(
            Unit(
                name=root,
                index=u,
                kind=lead.kind,
                depthwise=any(it.dim == "dw" for it in items),
                c_in=lead.c_in,
                c_out=n,
                kernel=lead.kernel,
                stride=lead.stride,
                groups=lead.groups,
                fmap=lead.fmap,
                macs=sum(layers[o].macs for o in own),
                params=sum(layers[o].params for o in own),
                layers=tuple(own),
                round_to=math.lcm(round_to, g),
                channel_groups=g,
                width=lead.c_out // n,
            )
        )
    return units


def _plan(found: list[tuple[str, int, int, list[_Item]]], c: Coupling) -> tuple[PlanEntry, ...]:
    """The merged channel plan: one entry per (module, dim) across all units.

    Args:
        found: Per unit: root, channels, channel groups and plan items.
        c: The coupling tables, for each unit's offset into the merged channel axis.

    Returns:
        The plan entries, targets and roots concatenated in unit order.
    """
    parts: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for u, (_, _, _, items) in enumerate(found):
        for it in items:
            parts.setdefault((it.module, it.dim), []).append(
                (it.target, it.root + c.unit_offsets[u])
            )
    return tuple(
        PlanEntry(mod, dim, np.concatenate([t for t, _ in p]), np.concatenate([r for _, r in p]))
        for (mod, dim), p in parts.items()
    )


def _fmap(shape: tuple[int, ...], kind: str) -> int:
    return math.prod(shape[1:-1]) if kind == "linear" else math.prod(shape[2:])
