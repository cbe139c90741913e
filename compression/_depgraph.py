"""Turn Torch-Pruning's dependency groups into a :class:`UnitGraph` (private to ``units``).

One traced forward pass (DepGraph) gives, for each group, the channel indices of every
coupled module that follow each root channel. One more forward pass, with hooks and
FlopCounterMode, gives the layers' execution order, output sizes and the total MACs.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torch_pruning import ops

from autoshrink.compression.errors import UnsupportedModelError
from autoshrink.compression.units import (
    CONV_TYPES,
    LAYER_TYPES,
    NORM_TYPES,
    Coupling,
    Layer,
    PlanEntry,
    Unit,
    UnitGraph,
)

logger = logging.getLogger(__name__)

# Autograd ops that act on each channel separately (or broadcast over them): pruning a
# channel before them removes exactly that channel after them. Anything else inside a
# prunable group (a transpose, a channel shuffle, a reduction over channels) is refused.
_CHANNELWISE = re.compile(
    r"^(Relu|Hardtanh|Hardswish|Hardsigmoid|Sigmoid|Silu|Gelu|Tanh|LeakyRelu|Elu|Celu|Selu"
    r"|Softplus|Mish|Threshold|Add|Sub|Mul|Div|Neg|Clamp|ClampMin|ClampMax|Pow|Exp|Sqrt"
    r"|Rsqrt|Abs|Log|Reciprocal|Clone|Alias|ToCopy|NativeDropout|Softmax|LogSoftmax|Where"
    r"|(Adaptive)?(Max|Avg)Pool\dD(WithIndices)?|Upsample\w+|ConstantPadNd"
    r"|(Reflection|Replication)Pad\dD)Backward\d*$"
)
_REDUCTIONS = re.compile(r"^(Mean|Sum|Amax|Amin|Squeeze|Unsqueeze)Backward\d*$")
_STRUCTURAL = (ops.OPTYPE.CONCAT, ops.OPTYPE.SPLIT, ops.OPTYPE.RESHAPE, ops.OPTYPE.SLICE)


@dataclass
class _Probe:
    """What one hooked forward pass saw of every conv/linear layer."""

    order: list[str] = field(default_factory=list)
    shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    macs: int = 0


@dataclass
class _Item:
    module: str
    dim: str
    target: np.ndarray
    root: np.ndarray
    per_channel: int


def _probe(model: nn.Module, x: torch.Tensor, names: dict[nn.Module, str]) -> _Probe:
    probe = _Probe()

    def hook(module: nn.Module, _: Any, out: Any) -> None:
        name = names[module]
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            raise UnsupportedModelError(f"layer {name}: transposed convs are not supported")
        if name not in probe.shapes:
            probe.order.append(name)
            probe.shapes[name] = []
        probe.shapes[name].append(tuple(out.shape))

    kinds = (*LAYER_TYPES, nn.modules.conv._ConvTransposeNd)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    except UnsupportedModelError:
        raise
    except Exception as exc:  # the model itself fails on this input: say so in one line
        raise UnsupportedModelError(
            f"the model fails on an input of shape {tuple(x.shape)}: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    probe.macs = int(counter.get_total_flops()) // 2
    return probe


def _grad_fn_name(node: Any) -> str:
    fn = node.grad_fn
    return str(fn.name()) if hasattr(fn, "name") else type(fn).__name__


def _op_problem(node: Any) -> str | None:
    """Why a non-module node cannot sit inside a prunable group, or None if it can."""
    if node.type in _STRUCTURAL or node.type == ops.OPTYPE.OUTPUT or not node.inputs:
        return None
    if node.type != ops.OPTYPE.ELEMENTWISE:
        return f"op {_grad_fn_name(node)} ({node.type.name.lower()})"
    name = _grad_fn_name(node)
    if _CHANNELWISE.match(name):
        return None
    fn = node.grad_fn
    if _REDUCTIONS.match(name):
        dims = getattr(fn, "_saved_dim", None)
        sizes = getattr(fn, "_saved_self_sym_sizes", None)
        if dims is not None and sizes is not None:
            dims = dims if isinstance(dims, tuple | list) else (dims,)
            rank = max(len(sizes), 1)
            if all(_signed(d) % rank not in (0, 1) for d in dims):
                return None
        return f"op {name} (a reduction over channels)"
    if name == "TransposeBackward0":  # fine between spatial dims, given as positive numbers
        if {_signed(fn._saved_dim0), _signed(fn._saved_dim1)}.isdisjoint({-2, -1, 0, 1}):
            return None
    if name == "PermuteBackward0" and tuple(fn._saved_dims[:2]) == (0, 1):
        return None
    return f"op {name} (it may reorder or mix channels)"


def _signed(dim: int) -> int:
    """Autograd stores negative dims as unsigned 64-bit values: undo that."""
    dim = int(dim)
    return dim - 2**64 if dim >= 2**63 else dim


def _nearest_layer(node: Any, dg: Any) -> str:
    """Name of the closest named module upstream of ``node`` (for error messages)."""
    seen, queue = set(), [node]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        name = dg._module2name.get(current.module)
        if name and current is not node:
            return str(name)
        queue.extend(current.inputs)
    return "the model input"


def _unsupported(node: Any, dg: Any, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"cannot prune through {why} after layer {_nearest_layer(node, dg)!r}; "
        "pass that layer in ignored_layers to keep its channels fixed"
    )


def _trace(model: nn.Module, x: torch.Tensor) -> Any:
    dg = tp.DependencyGraph()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its recursion/unknown-op notes: we judge ourselves
            dg.build_dependency(model, example_inputs=(x,), verbose=False)
    except Exception as exc:  # torch-pruning crashes on some graphs (e.g. channel shuffle)
        named = getattr(dg, "_module2name", {})
        # Nodes are stored from the output backwards: report the one nearest the input.
        for node in reversed(list(getattr(dg, "module2node", {}).values())):
            if isinstance(node.module, nn.Module) and node.module in named:
                continue
            why = _op_problem(node)
            if why is not None:
                raise UnsupportedModelError(
                    f"cannot prune this model: torch-pruning fails on {why} after layer "
                    f"{_nearest_layer(node, dg)!r} ({type(exc).__name__}: {exc})"
                ) from exc
        raise UnsupportedModelError(
            f"torch-pruning cannot trace this model: {type(exc).__name__}: {exc}"
        ) from exc
    return dg


def _items(group: Any, dg: Any, names: dict[Any, str]) -> tuple[list[_Item], bool, Any]:
    """Classify a group's items: (items, whether it reaches the output, first problem)."""
    items: list[_Item] = []
    reaches_output, problem = False, None
    for item in group:
        dep, node = item.dep, item.dep.target
        module = node.module
        if node.type == ops.OPTYPE.OUTPUT:
            reaches_output = True
            continue
        if node.type == ops.OPTYPE.PARAMETER:
            problem = problem or (node, f"parameter {dg._param_to_name.get(module, '?')}")
            continue
        name = names.get(module) if isinstance(module, nn.Module) else None
        if name is None:
            why = _op_problem(node)
            if problem is None and why is not None:
                problem = (node, why)
            continue
        if isinstance(module, LAYER_TYPES):
            if node.type == ops.OPTYPE.DEPTHWISE_CONV:
                dim = "dw"
            else:
                dim = "out" if dep.handler.__name__ == "prune_out_channels" else "in"
        elif isinstance(module, (*NORM_TYPES, nn.PReLU)):
            if isinstance(module, nn.PReLU) and module.num_parameters == 1:
                continue
            if isinstance(module, nn.modules.instancenorm._InstanceNorm) and (
                module.track_running_stats
            ):  # torch-pruning would leave its running statistics at full width
                problem = problem or (node, f"layer {name} (InstanceNorm with running stats)")
                continue
            dim = "c"
        else:
            problem = problem or (node, f"layer {name} of type {type(module).__name__}")
            continue
        if dim != "in" and not node.outputs:  # its channels are the model's output
            reaches_output = True
        if any(r is None for r in item.root_idxs):
            problem = problem or (node, f"layer {name} (channels without a root)")
            continue
        root = np.asarray(item.root_idxs, dtype=np.int64)
        target = np.asarray(item.idxs, dtype=np.int64)
        items.append(_Item(name, dim, target, root, 0))
    return items, reaches_output, problem


def _per_channel(item: _Item, n: int) -> int | None:
    """Target channels per root channel, if every root channel has the same number."""
    counts = np.bincount(item.root, minlength=n)
    if len(counts) != n or counts.min() != counts.max() or counts[0] == 0:
        return None
    if len(np.unique(item.target)) != len(item.target):
        return None
    return int(counts[0])


def _balance(items: list[_Item], modules: dict[str, nn.Module], n: int) -> int | None:
    """Convolution (or norm) groups a unit must stay balanced over; None if impossible."""
    g = 1
    for it in items:
        m = modules[it.module]
        k = m.groups if isinstance(m, CONV_TYPES) and it.dim in ("out", "in") else 1
        k = m.num_groups if isinstance(m, nn.GroupNorm) else k
        if k > 1:
            # Balanced within the unit is balanced within the layer only if the unit spans
            # all of the layer's channels, in order.
            full = m.in_channels if it.dim == "in" else getattr(m, "out_channels", n)
            full = m.num_channels if isinstance(m, nn.GroupNorm) else full
            if it.target.size != full or not np.array_equal(it.target, it.root):
                return None
            g = math.lcm(g, k)
    return g if n % g == 0 and n // g > 1 else None


def analyse(model: nn.Module, x: torch.Tensor, round_to: int, ignored: set[str]) -> UnitGraph:
    """Trace ``model`` on ``x`` and build its :class:`UnitGraph` (see ``build_units``)."""
    model.eval()
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    probe = _probe(model, x, names)
    dg = _trace(model, x)
    units: list[tuple[str, int, int, list[_Item]]] = []
    visited: set[str] = set()
    for root in probe.order:
        module = modules[root]
        if root in visited or module not in dg.module2node:
            continue
        pruner = dg.get_pruner_of_module(module)
        n = int(pruner.get_out_channels(module))
        try:
            group = dg.get_pruning_group(module, pruner.prune_out_channels, list(range(n)))
        except Exception as exc:  # torch-pruning's index mapping fails on this group
            raise UnsupportedModelError(
                f"torch-pruning cannot group the channels of layer {root}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        items, reaches_output, problem = _items(group, dg, names)
        owned = [it.module for it in items if it.dim in ("out", "dw", "c")]
        visited.update(owned)
        if reaches_output or n < 2 or any(o in ignored for o in owned):
            continue
        if problem:
            raise _unsupported(problem[0], dg, problem[1])
        for it in items:
            per = _per_channel(it, n)
            if per is None:
                raise UnsupportedModelError(
                    f"layer {it.module}: channels of unit {root} reach it unevenly "
                    "(e.g. through a partial slice), so its cost is not exact"
                )
            it.per_channel = per
        g = _balance(items, modules, n)
        if g is None:
            logger.info("unit %s is fixed: its grouped convs cannot be pruned balanced", root)
            continue
        units.append((root, n, g, items))
    return _assemble(model, modules, probe, units, round_to, tuple(int(s) for s in x.shape))


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


def _norm_channels(m: nn.Module) -> int:
    for attr in ("num_features", "num_channels", "num_parameters"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    raise UnsupportedModelError(f"cannot tell the channels of {type(m).__name__}")


def _per_channel_tensors(m: nn.Module, c: int) -> list[torch.Tensor]:
    """The parameters and float buffers of a norm layer that have one entry per channel."""
    tensors = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
    return [t for t in tensors if t.shape == (c,) and t.is_floating_point()]


def _coupling(
    model: nn.Module,
    modules: dict[str, nn.Module],
    probe: _Probe,
    geo: dict[str, _Geo],
    found: list[tuple[str, int, int, list[_Item]]],
) -> tuple[Coupling, dict[str, str]]:
    """The cost model's tables, and which unit owns each layer's output channels."""
    n_units, order = len(found), probe.order
    lidx = {name: i for i, name in enumerate(order)}
    dw = np.zeros(len(order), bool)
    out_a = np.zeros((len(order), n_units), np.int64)
    in_a = np.zeros((len(order), n_units), np.int64)
    norm_rows: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    for u, (root, _, _, items) in enumerate(found):
        for it in items:
            if it.dim == "c":
                norm_rows.setdefault(it.module, np.zeros(n_units, np.int64))[u] += it.per_channel
            elif it.dim == "in":
                in_a[lidx[it.module], u] += it.per_channel
            else:
                out_a[lidx[it.module], u] += it.per_channel
                dw[lidx[it.module]] |= it.dim == "dw"
                owner.setdefault(it.module, root)
    # FlopCounterMode counts batch x output positions x kernel x c_out x c_in/groups per call.
    positions = [
        sum(math.prod(s) // (s[-1] if geo[n].kind == "linear" else s[1]) for s in probe.shapes[n])
        for n in order
    ]
    variable: set[int] = set()
    for name in order:
        m = modules[name]
        variable.update(id(t) for t in (m.weight, getattr(m, "bias", None)) if t is not None)
    norm_tensors = {
        n: _per_channel_tensors(modules[n], _norm_channels(modules[n])) for n in norm_rows
    }
    for tensors in norm_tensors.values():
        variable.update(id(t) for t in tensors)
    const = [t for t in (*model.parameters(), *model.buffers()) if id(t) not in variable]
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
        norm_c0=np.array([_norm_channels(modules[n]) for n in norm_rows], np.int64),
        norm_params=np.array(
            [sum(isinstance(t, nn.Parameter) for t in ts) for ts in norm_tensors.values()], np.int64
        ),
        norm_fbufs=np.array(
            [sum(not isinstance(t, nn.Parameter) for t in ts) for ts in norm_tensors.values()],
            np.int64,
        ),
        norm_a=np.array(list(norm_rows.values()), np.int64).reshape(len(norm_rows), n_units),
        const_params=sum(t.numel() for t in model.parameters() if id(t) not in variable),
        const_fbytes=4 * sum(t.numel() for t in const if t.is_floating_point()),
        other_macs=0,
    )
    return coupling, owner


def _assemble(
    model: nn.Module,
    modules: dict[str, nn.Module],
    probe: _Probe,
    found: list[tuple[str, int, int, list[_Item]]],
    round_to: int,
    input_shape: tuple[int, ...],
) -> UnitGraph:
    geo = {name: _geometry(modules[name]) for name in probe.order}
    c, owner = _coupling(model, modules, probe, geo, found)
    ipg = np.where(c.layer_dw, 1, c.layer_in0 // c.layer_groups)
    macs = c.layer_mcoef * c.layer_out0 * ipg
    params = c.layer_out0 * ipg * c.layer_kk + c.layer_bias * c.layer_out0
    other_macs = probe.macs - int(macs.sum())
    if other_macs:
        logger.info("%d MACs outside conv/linear modules are assumed fixed", other_macs)
    c = replace(c, other_macs=other_macs)
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
    units = []
    for u, (root, n, g, items) in enumerate(found):
        own = [root] + [name for name in probe.order if owner.get(name) == root != name]
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
            )
        )
    parts: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for u, (_, _, _, items) in enumerate(found):
        for it in items:
            parts.setdefault((it.module, it.dim), []).append(
                (it.target, it.root + c.unit_offsets[u])
            )
    plan = tuple(
        PlanEntry(mod, dim, np.concatenate([t for t, _ in p]), np.concatenate([r for _, r in p]))
        for (mod, dim), p in parts.items()
    )
    return UnitGraph(tuple(units), tuple(layers.values()), input_shape, c, plan)


def _fmap(shape: tuple[int, ...], kind: str) -> int:
    return math.prod(shape[1:-1]) if kind == "linear" else math.prod(shape[2:])
