"""Real channel removal: a new, smaller model with each unit cut to its kept channels.

Pruning follows the plan that :func:`~autoshrink.compression.units.build_units` recorded
from Torch-Pruning's dependency groups: for every coupled module, which of its channels go
with which channels of each unit. So pruning never re-traces the model. It copies the model,
turns each unit's kept count into channel indices (its top-scoring channels), and cuts every
affected module once, with Torch-Pruning's per-layer pruning functions, in the original
channel coordinates. The result equals pruning group by group with ``Group.prune()``.

>>> from autoshrink.compression.models import ModelSpec, build_model
>>> from autoshrink.compression.units import build_units
>>> model = build_model(ModelSpec("resnet20", in_channels=1))
>>> graph = build_units(model, torch.zeros(1, 1, 8, 8))
>>> small = prune(model, graph, {u.name: 0.5 for u in graph.units})
>>> small.conv1.out_channels, model.conv1.out_channels
(8, 16)
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_pruning.pruner import function as tpf

from autoshrink.compression.attention import Heads, set_heads
from autoshrink.compression.cost import removed_channels
from autoshrink.compression.errors import PolicyError, UnsupportedModelError
from autoshrink.compression.importance import channel_scores, check_importance
from autoshrink.compression.unit_graph import UnitGraph

_Cut = Callable[[nn.Module, list[int]], nn.Module]
_ATOMS = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device)
# The tensors each pruning function replaces with a smaller copy (so they need no copying).
_REPLACED = {
    "out": ("weight", "bias"),
    "dw": ("weight", "bias"),
    "in": ("weight",),
    "c": ("weight", "bias", "running_mean", "running_var"),
}


#: (module type, dimension) -> Torch-Pruning's pruning function; the most derived type wins.
#: ``out`` cuts output channels, ``in`` input channels, ``c`` a norm's (or PReLU's) channels.
#: Subclasses such as timm's ``BatchNormAct2d``, ``GroupNormAct`` and ``LayerNorm2d`` find
#: their base class here; the activation inside them has no channels of its own.
CUTTERS: dict[tuple[type[nn.Module], str], _Cut] = {
    (nn.Conv1d, "out"): tpf.prune_conv_out_channels,
    (nn.Conv2d, "out"): tpf.prune_conv_out_channels,
    (nn.Conv3d, "out"): tpf.prune_conv_out_channels,
    (nn.Conv1d, "in"): tpf.prune_conv_in_channels,
    (nn.Conv2d, "in"): tpf.prune_conv_in_channels,
    (nn.Conv3d, "in"): tpf.prune_conv_in_channels,
    (nn.Linear, "out"): tpf.prune_linear_out_channels,
    (nn.Linear, "in"): tpf.prune_linear_in_channels,
    (nn.modules.batchnorm._BatchNorm, "c"): tpf.prune_batchnorm_out_channels,
    (nn.GroupNorm, "c"): tpf.prune_groupnorm_out_channels,
    (nn.LayerNorm, "c"): tpf.prune_layernorm_out_channels,
    (nn.modules.instancenorm._InstanceNorm, "c"): tpf.prune_instancenorm_out_channels,
    (nn.PReLU, "c"): tpf.prune_prelu_out_channels,
}


def _cutter(module: nn.Module, dim: str) -> _Cut:
    """Torch-Pruning's pruning function for one dimension of one module (:data:`CUTTERS`)."""
    if dim == "dw":  # a depthwise conv loses its output and its groups together
        return tpf.prune_depthwise_conv_out_channels
    for cls in type(module).__mro__:
        cut = CUTTERS.get((cls, dim))
        if cut is not None:
            return cut
    raise UnsupportedModelError(f"no pruning function for {type(module).__name__}")


def _copy_module(module: nn.Module, memo: dict[int, Any], share: set[int]) -> nn.Module:
    """``copy.deepcopy`` for module trees, minus its generic per-attribute overhead.

    Tensors in ``share`` are not copied: the pruning functions replace them right after.
    Anything that is not a plain module, parameter, buffer or atom goes through deepcopy.
    """
    if id(module) in memo:
        return memo[id(module)]
    cls = type(module)
    if getattr(cls, "__deepcopy__", None) is not None:  # e.g. parametrized modules
        return copy.deepcopy(module, memo)
    new = cls.__new__(cls)
    memo[id(module)] = new
    state: dict[str, Any] = {}
    for key, value in module.__dict__.items():
        if key in ("_parameters", "_buffers"):
            state[key] = {
                k: t if t is None or id(t) in share else copy.deepcopy(t, memo)
                for k, t in value.items()
            }
        elif key == "_modules":
            state[key] = {
                k: None if m is None else _copy_module(m, memo, share) for k, m in value.items()
            }
        elif isinstance(value, _ATOMS) or (
            type(value) is tuple and all(isinstance(v, _ATOMS) for v in value)
        ):
            state[key] = value
        elif type(value) in (dict, OrderedDict, set, list) and not value:
            state[key] = type(value)()
        else:
            state[key] = copy.deepcopy(value, memo)
    new.__dict__.update(state)
    return new


def _cut_parameter(model: nn.Module, name: str, dim: int, idxs: list[int]) -> None:
    """Remove ``idxs`` along ``dim`` of a parameter outside any known module (plan ``p<d>``)."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    keep = torch.tensor(sorted(set(range(old.shape[dim])) - set(idxs)), dtype=torch.long)
    new = old.detach().index_select(dim, keep.to(old.device)).clone()
    setattr(parent, attr, nn.Parameter(new, requires_grad=old.requires_grad))


def _pruned_copy(
    model: nn.Module,
    modules: dict[str, nn.Module],
    cuts: list[tuple[str, str, list[int]]],
    heads: tuple[Heads, ...] = (),
) -> nn.Module:
    share = {
        id(t)
        for name, dim, _ in cuts
        if dim in _REPLACED
        for attr in _REPLACED[dim]
        if isinstance(t := getattr(modules[name], attr, None), Tensor)
    }
    pruned = _copy_module(model, {}, share)
    new_modules = dict(pruned.named_modules())
    with torch.no_grad():
        for name, dim, idxs in cuts:
            if dim.startswith("p"):
                _cut_parameter(pruned, name, int(dim[1:]), idxs)
            else:
                _cutter(modules[name], dim)(new_modules[name], idxs)
    set_heads(pruned, heads)
    # Safety net: whatever a pruning function did not replace after all gets its own copy,
    # so that the pruned model never shares storage with the original.
    original = {id(t) for t in (*model.parameters(), *model.buffers())}
    for m in new_modules.values():
        for store in (m._parameters, m._buffers):
            for k, t in store.items():
                if t is not None and id(t) in original:
                    store[k] = copy.deepcopy(t)
    return pruned


def cut_channels(
    model: nn.Module, cuts: list[tuple[str, str, list[int]]], heads: tuple[Heads, ...] = ()
) -> nn.Module:
    """A copy of ``model`` without the given channels: the pruned architecture alone.

    Args:
        model: The model; it is not modified.
        cuts: ``(module or parameter name, plan dim, channel indices)`` to remove, each
            name and dimension once.
        heads: The attention blocks whose head count then follows their ``qkv``.

    Raises:
        UnsupportedModelError: If a module has no pruning function for the dimension.
    """
    return _pruned_copy(model, dict(model.named_modules()), cuts, heads)


def keep_mask(
    graph: UnitGraph, kept: Mapping[str, int], scores: Mapping[str, Tensor]
) -> np.ndarray:
    """Which channels of all units stay, as one boolean vector in unit order.

    Each unit keeps its ``kept`` highest-scoring channels (ties: the lower index). A unit
    balanced over ``g`` convolution groups ranks the mean score of the ``g`` channels that
    share a position in their group and keeps the same positions in every group.

    Raises:
        PolicyError: On bad counts or missing/mis-shaped scores.
    """
    removed = removed_channels(graph, kept)
    mask = np.ones(int(graph.coupling.unit_channels.sum()), bool)
    for u, r, start in zip(graph.units, removed, graph.coupling.unit_offsets, strict=True):
        if r == 0:
            continue
        s = scores.get(u.name)
        if s is None or tuple(s.shape) != (u.c_out,):
            got = None if s is None else tuple(s.shape)
            raise PolicyError(f"scores of unit {u.name} must have shape ({u.c_out},), got {got}")
        g = u.channel_groups
        local = np.asarray(s.detach().cpu(), dtype=np.float64).reshape(g, -1).mean(0)
        top = np.argsort(-local, kind="stable")[: (u.c_out - int(r)) // g]
        unit_mask = np.zeros(local.shape[0], bool)
        unit_mask[top] = True
        mask[start : start + u.c_out] = np.tile(unit_mask, g)
    return mask


def _check_matches(model: nn.Module, graph: UnitGraph) -> dict[str, nn.Module]:
    """The model's modules by name, once its layers are checked against the graph's."""
    modules = dict(model.named_modules())
    for layer in graph.layers:
        m = modules.get(layer.name)
        shape = (getattr(m, "in_channels", None), getattr(m, "out_channels", None))
        if isinstance(m, nn.Linear):
            shape = (m.in_features, m.out_features)
        if shape != (layer.c_in, layer.c_out):
            raise UnsupportedModelError(
                f"the model does not match the unit graph: layer {layer.name} is "
                f"{shape[0]}->{shape[1]}, the graph expects {layer.c_in}->{layer.c_out}"
            )
    return modules


def prune_channels(
    model: nn.Module,
    graph: UnitGraph,
    kept: Mapping[str, int],
    importance: str = "l1",
    batch: tuple[Tensor, Tensor] | None = None,
    scores: Mapping[str, Tensor] | None = None,
) -> nn.Module:
    """A pruned copy of ``model`` with ``kept[unit]`` channels per unit (missing: all).

    Args:
        model: The model ``graph`` was built from (or one of the same architecture); it is
            not modified.
        graph: Its units.
        kept: Realised channels per unit name, e.g. from :meth:`Unit.kept`.
        importance: Scorer used when ``scores`` is None (see :mod:`.importance`).
        batch: ``(inputs, labels)`` for the gradient-based scorers.
        scores: Precomputed :func:`channel_scores`, e.g. cached across episodes.

    Returns:
        A new model, in the original's training mode, with smaller tensors.

    Raises:
        PolicyError: On unknown units, out-of-range counts, or bad scores.
        UnsupportedModelError: If ``model`` does not have the graph's layers.
    """
    modules = _check_matches(model, graph)
    removed = removed_channels(graph, kept)
    if scores is None and removed.any():
        check_importance(importance, batch)
        scores = channel_scores(graph, model, importance, batch)
    mask = keep_mask(graph, kept, scores or {})
    cuts = []
    for entry in graph.plan:
        idxs = entry.target[~mask[entry.root]]
        if idxs.size:
            cuts.append((entry.module, entry.dim, idxs.tolist()))
    return _pruned_copy(model, modules, cuts, graph.heads)


def prune(
    model: nn.Module,
    graph: UnitGraph,
    keep: Mapping[str, float],
    importance: str = "l1",
    batch: tuple[Tensor, Tensor] | None = None,
    scores: Mapping[str, Tensor] | None = None,
) -> nn.Module:
    """A pruned copy of ``model`` at keep-ratio ``keep[unit]`` per unit (missing: 1.0).

    Channels are rounded by :meth:`Unit.kept`, the rule the cost model uses, so
    ``cost(graph, keep)`` is exactly what the returned model costs.

    Args:
        model: The model ``graph`` was built from; it is not modified.
        graph: Its units.
        keep: Keep-ratio in (0, 1] per unit name.
        importance: Scorer used when ``scores`` is None: l1, l2, taylor, hessian, bn, random.
        batch: ``(inputs, labels)`` for taylor and hessian.
        scores: Precomputed :func:`channel_scores`, e.g. cached across episodes.

    Raises:
        PolicyError: On unknown units, a keep-ratio outside (0, 1], or bad scores.
    """
    kept = {name: graph.unit(name).kept(k) for name, k in keep.items()}
    return prune_channels(model, graph, kept, importance, batch, scores)
