"""Turn Torch-Pruning's dependency groups into a :class:`UnitGraph` (private to ``units``).

One traced forward pass (DepGraph) gives, for each group, the channel indices of every
coupled module that follow each root channel. One more forward pass, with hooks and
FlopCounterMode, gives the layers' execution order, output sizes and the total MACs.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops

from autoshrink.compression._assemble import assemble, norm_channels
from autoshrink.compression._ops import grad_fn_name, nearest_layer, norm_tensor_ptrs, op_problem
from autoshrink.compression._pristine import untouched
from autoshrink.compression._tp_compat import (
    GROUP_LIMITS,
    GroupTooLarge,
    bounded_group,
    map_indices_per_node,
    tolerant_index_mapping,
)
from autoshrink.compression.attention import (
    Heads,
    find_heads,
    head_items,
    inner_macs,
    module_flops,
)
from autoshrink.compression.counting import run_counted
from autoshrink.compression.errors import UnsupportedModelError, first_line
from autoshrink.compression.unit_graph import (
    CONV_TYPES,
    LAYER_TYPES,
    NORM_TYPES,
    UnitGraph,
)

logger = logging.getLogger(__name__)
#: Seconds between progress lines while grouping a large model's channels.
PROGRESS_EVERY_S = 10.0


@dataclass
class _Probe:
    """What one hooked forward pass saw of every conv/linear layer."""

    order: list[str] = field(default_factory=list)
    shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    macs: int = 0
    module_flops: dict[str, int] = field(default_factory=dict)


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
        counter = run_counted(model, x)[1]
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
    probe.module_flops = module_flops(counter.get_flop_counts())
    return probe


def _trace(model: nn.Module, x: torch.Tensor, norm_ptrs: frozenset[int]) -> tuple[Any, set[int]]:
    """DepGraph of ``model``, and the ids of the nodes whose index mapping failed."""
    dg = tp.DependencyGraph()
    try:
        with torch.enable_grad(), warnings.catch_warnings(), tolerant_index_mapping():
            warnings.simplefilter("ignore")  # its recursion/unknown-op notes: we judge ourselves
            dg.build_dependency(model, example_inputs=(x,), verbose=False)
    except Exception as exc:  # torch-pruning crashes on some graphs
        named = getattr(dg, "_module2name", {})
        # Nodes are stored from the output backwards: report the one nearest the input.
        for node in reversed(list(getattr(dg, "module2node", {}).values())):
            if isinstance(node.module, nn.Module) and node.module in named:
                continue
            why = op_problem(node, norm_ptrs)
            if why is not None:
                raise UnsupportedModelError(
                    f"cannot prune this model: torch-pruning fails on {why} "
                    f"{_where(node, dg)} ({type(exc).__name__}: {exc})"
                ) from exc
        raise UnsupportedModelError(
            f"torch-pruning cannot trace this model: {type(exc).__name__}: {exc}"
        ) from exc
    return dg, map_indices_per_node(dg)


def _members(dg: Any, module: nn.Module, fn: Any, names: dict[Any, str]) -> set[str]:
    """The named modules whose output channels a group holds, found without its indices."""
    stack, seen, reached = [(dg.module2node[module], fn)], set(), {module}
    while stack:
        node, fn = stack.pop()
        for dep in node.dependencies:
            key = (id(dep.target), dep.handler)
            if dep.is_triggered_by(fn) and key not in seen:
                seen.add(key)
                if getattr(dep.handler, "__name__", "") == "prune_out_channels":
                    reached.add(dep.target.module)
                stack.append((dep.target, dep.handler))
    return {names[m] for m in reached if isinstance(m, nn.Module) and m in names}


def _where(node: Any, dg: Any) -> str:
    layer = nearest_layer(node, dg)
    return "before the first layer" if layer is None else f"after layer {layer!r}"


def _dim(node: Any, dep: Any, module: nn.Module) -> str:
    if isinstance(module, LAYER_TYPES):
        if node.type == ops.OPTYPE.DEPTHWISE_CONV:
            return "dw"
        return "out" if dep.handler.__name__ == "prune_out_channels" else "in"
    return "c"


def _module_problem(module: nn.Module, name: str) -> str | None:
    """Why a named module cannot be cut as part of a group (None: it can)."""
    if not isinstance(module, (*LAYER_TYPES, *NORM_TYPES, nn.PReLU)):
        return f"layer {name} of type {type(module).__name__}"
    if isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats:
        return f"layer {name} (InstanceNorm with running stats)"  # torch-pruning misses them
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return f"layer {name} (LayerNorm over more than the channels)"
    return None


def _items(
    group: Any, dg: Any, names: dict[Any, str], norm_ptrs: frozenset[int], broken: set[int]
) -> tuple[list[_Item], bool, str | None]:
    """Classify a group's items: (items, whether it reaches the output, first problem)."""
    items: list[_Item] = []
    reaches_output, problem = False, None
    # Torch-Pruning's dim for a parameter outside known modules: its last non-singleton one.
    pdims = {id(u.parameters): int(u.pruning_dim) for u in dg.unwrapped_parameters}
    for item in group:
        dep, node = item.dep, item.dep.target
        module = node.module
        if node.type == ops.OPTYPE.OUTPUT:
            reaches_output = True
            continue
        if node.type == ops.OPTYPE.PARAMETER:  # e.g. ConvNeXt's layer scale, ViT's cls token
            pname, pdim = dg._param_to_name.get(module), pdims.get(id(module))
            if pname is None or pdim is None or any(r is None for r in item.root_idxs):
                problem = problem or f"parameter {pname or '?'}"
                continue
            root = np.asarray(item.root_idxs, dtype=np.int64)
            items.append(_Item(pname, f"p{pdim}", np.asarray(item.idxs, np.int64), root, 0))
            continue
        if id(node) in broken:
            op = f"op {grad_fn_name(node)} (torch-pruning cannot map its channels)"
            problem = problem or f"{op} {_where(node, dg)}"
            continue
        name = names.get(module) if isinstance(module, nn.Module) else None
        if name is None:
            why = op_problem(node, norm_ptrs)
            if problem is None and why is not None:
                problem = f"{why} {_where(node, dg)}"
            continue
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            continue
        why = _module_problem(module, name)
        if why is not None:
            problem = problem or why
            continue
        dim = _dim(node, dep, module)
        if dim != "in" and not node.outputs:  # its channels are the model's output
            reaches_output = True
        if any(r is None for r in item.root_idxs):
            problem = problem or f"layer {name} (channels without a root)"
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


def _balance(items: list[_Item], modules: dict[str, Any], n: int) -> int | None:
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


def width(m: nn.Module | nn.Parameter, dim: str) -> int:
    """The real number of channels of ``m`` along a plan entry's dimension.

    ``m`` may be a parameter outside any known module (plan dim ``p<d>``: its dim ``d``).
    """
    if isinstance(m, nn.Parameter):
        return int(m.shape[int(dim[1:])])
    if dim == "c":
        return norm_channels(m)
    linear = isinstance(m, nn.Linear)
    attr = ("in_features" if linear else "in_channels") if dim == "in" else None
    attr = attr or ("out_features" if linear else "out_channels")
    return int(getattr(m, attr))


def _plan_problem(
    items: list[_Item], modules: dict[str, Any], n: int, claimed: dict[Any, np.ndarray]
) -> str | None:
    """Why a group's channel plan cannot be realised exactly (None: it can)."""
    for it in items:
        full = width(modules[it.module], it.dim)
        if it.target.size and (it.target.min() < 0 or it.target.max() >= full):
            return (
                f"layer {it.module}: torch-pruning maps its channels to indices beyond its "
                f"{full} (a split concatenated back?)"
            )
        taken = claimed.get((it.module, it.dim))
        if taken is not None and taken[it.target].any():
            return f"layer {it.module}: its channels are claimed by another unit too"
        per = _per_channel(it, n)
        if per is None:
            return f"layer {it.module}: the unit's channels reach it unevenly (a partial slice?)"
        it.per_channel = per
    return None


def _claim(items: list[_Item], modules: dict[str, Any], claimed: dict[Any, Any]) -> None:
    for it in items:
        key = (it.module, it.dim)
        if key not in claimed:
            claimed[key] = np.zeros(width(modules[it.module], it.dim), bool)
        claimed[key][it.target] = True


@dataclass
class _Found:
    """What the walk over the roots has decided so far."""

    units: list[tuple[str, int, int, list[_Item]]] = field(default_factory=list)
    frozen: dict[str, str] = field(default_factory=dict)
    visited: set[str] = field(default_factory=set)
    claimed: dict[Any, np.ndarray] = field(default_factory=dict)
    head_macs: dict[str, int] = field(default_factory=dict)
    heads: list[Heads] = field(default_factory=list)


def _add_heads(
    found: _Found, heads: Heads, parts: dict[str, Any], probe: _Probe, why: str | None
) -> None:
    """Make one attention block's heads a unit (see :mod:`.attention`), or freeze them."""
    root, n = heads.qkv, heads.num_heads
    found.visited.add(root)
    items = [_Item(m, d, t, r, 0) for m, d, t, r, _ in head_items(heads)]
    macs = inner_macs(probe.module_flops, heads, probe.order)
    why = why or _plan_problem(items, parts, n, found.claimed)
    if why is None and (macs is None or macs % n):
        why = f"its attention MACs ({macs}) do not split evenly over its {n} heads"
    if why is not None:
        found.frozen[root] = why
        return
    _claim(items, parts, found.claimed)
    found.units.append((root, n, 1, items))
    found.head_macs[root] = (macs or 0) // n
    found.heads.append(heads)


def _add_group(
    found: _Found, dg: Any, root: str, ctx: tuple[dict[str, Any], dict[Any, str], Any, Any]
) -> None:
    """Make the DepGraph group led by ``root`` a unit, freeze it, or skip it (classifier)."""
    parts, names, ignored, (norm_ptrs, broken) = ctx
    module = parts[root]
    pruner = dg.get_pruner_of_module(module)
    n = int(pruner.get_out_channels(module))
    try:
        with tolerant_index_mapping(again=False), bounded_group(GROUP_LIMITS):
            group = dg.get_pruning_group(module, pruner.prune_out_channels, list(range(n)))
    except GroupTooLarge as exc:  # its other members would be as large as roots: skip them
        found.visited.update(_members(dg, module, pruner.prune_out_channels, names))
        found.frozen[root] = f"torch-pruning follows its channels through {exc}"
        return
    except Exception as exc:  # torch-pruning's index mapping fails on this group
        found.visited.add(root)
        found.frozen[root] = f"torch-pruning cannot group its channels ({first_line(exc)})"
        return
    items, reaches_output, problem = _items(group, dg, names, norm_ptrs, broken)
    owned = [it.module for it in items if it.dim in ("out", "dw", "c")]
    found.visited.update(owned)
    if reaches_output or n < 2:
        return
    why = next((ignored[o] for o in owned if o in ignored), None)
    why = why or problem or _plan_problem(items, parts, n, found.claimed)
    g = _balance(items, parts, n) if why is None else None
    if g is None:
        found.frozen[root] = why or "its grouped convs cannot be pruned balanced"
        return
    _claim(items, parts, found.claimed)
    found.units.append((root, n, g, items))


def analyse(
    model: nn.Module, x: torch.Tensor, round_to: int, ignored: Mapping[str, str]
) -> UnitGraph:
    """Trace ``model`` on ``x`` and build its :class:`UnitGraph` (see ``build_units``).

    A group that cannot be pruned exactly is frozen, with its reason, instead of refused.
    ``ignored`` maps module names to the reason they are fixed. The heads of an attention
    block of a known form (:mod:`.attention`) are a unit of their own.
    """
    model.eval()
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    parts: dict[str, Any] = {**dict(model.named_parameters()), **modules}
    norm_ptrs = norm_tensor_ptrs(model)
    with untouched(model):  # each pass starts from the model as the user gave it
        probe = _probe(model, x, names)
    heads = find_heads(model, set(probe.order))
    with untouched(model):
        dg, broken = _trace(model, x, norm_ptrs)
    found = _Found()
    start = last = time.monotonic()  # for the log only: what is found never depends on it
    for i, root in enumerate(probe.order):
        if root in found.visited or modules[root] not in dg.module2node:
            continue
        if root in heads:
            _add_heads(found, heads[root], parts, probe, ignored.get(root))
        else:
            _add_group(found, dg, root, (parts, names, ignored, (norm_ptrs, broken)))
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            n, spent = len(probe.order), last - start
            logger.info("grouping channels: %d of %d layers done in %.0f s", i + 1, n, spent)
    shape = tuple(int(s) for s in x.shape)
    graph = assemble(model, parts, probe, found.units, round_to, shape, found.head_macs)
    return replace(graph, frozen=found.frozen, heads=tuple(found.heads))
