"""Prunable units: Torch-Pruning dependency groups, with stable names and static features.

A *unit* is one pruning decision. It is a DepGraph group: the conv/linear layer that leads it
(its first layer in execution order, whose name is the unit's name) plus every layer whose
channels must shrink with it, across residual adds, depthwise convs, concats and flattens.
:func:`build_units` traces the model once and records, for every unit, which channels of
which tensors follow each of its channels. That coupling table is all the cost model
(:mod:`autoshrink.compression.cost`) and the pruner (:mod:`autoshrink.compression.prune`)
need: neither traces the model again.

Groups that reach the model output (the classifier) are fixed. A group that holds an
ignored layer, or that cannot be pruned exactly, is *frozen*: it stays at full width and
:attr:`UnitGraph.frozen` records why, in one line, while the other groups stay prunable. Grouped
(non-depthwise) convs, as in RegNet-X, are pruned balanced: the same channels in every
convolution group, so a unit's kept count is a multiple of its ``channel_groups``.

>>> from autoshrink.compression.models import ModelSpec, build_model
>>> model = build_model(ModelSpec("resnet20", num_classes=10, in_channels=1))
>>> graph = build_units(model, torch.zeros(1, 1, 8, 8))
>>> graph.units[0].name, graph.units[0].c_out, graph.units[0].kept(0.5)
('conv1', 16, 8)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from autoshrink.compression.errors import UnsupportedModelError
from autoshrink.compression.unit_graph import (
    CONV_TYPES,
    DIMS,
    LAYER_TYPES,
    NORM_TYPES,
    Coupling,
    Layer,
    PlanEntry,
    Unit,
    UnitGraph,
)

__all__ = [
    "CONV_TYPES",
    "DIMS",
    "LAYER_TYPES",
    "NORM_TYPES",
    "Coupling",
    "Layer",
    "PlanEntry",
    "Unit",
    "UnitGraph",
    "build_units",
]


def build_units(
    model: nn.Module,
    example_input: torch.Tensor,
    round_to: int = 1,
    ignored_layers: Iterable[str | nn.Module] | None = None,
    verify: bool = True,
) -> UnitGraph:
    """Find the prunable units of ``model`` with Torch-Pruning's DepGraph.

    The model is traced once on ``example_input`` (on the CPU). It is left as it was
    found: its training mode, and whatever its forward caches (timm's LeViT keeps its
    attention biases), are put back after every pass, so it stays deep-copyable. The units
    depend on the model alone, never on how long tracing takes: a large model is slow, and
    logs its progress, but gets the units it would get on a quiet machine.

    The layer producing the model output, and every group coupled to it, is fixed. A group
    that holds an ``ignored_layers`` entry, or one that cannot be pruned exactly (a channel
    shuffle, an unknown module with parameters, a split concatenated back, a group too
    large for Torch-Pruning to follow), is frozen: it stays at full width and
    :attr:`UnitGraph.frozen` says why. With
    ``verify``, the units are then pruned once for real and every unit whose pruned model
    disagrees with the cost model is frozen too.

    Args:
        model: The model; it is not modified, caches included.
        example_input: A CPU input batch; MACs are counted for exactly this shape.
        round_to: Channel granularity of every unit (e.g. 8 for SIMD-friendly widths).
        ignored_layers: Modules, or their names, whose output channels stay fixed.
        verify: Check the cost model on one really pruned model (one forward pass).

    Returns:
        The units in execution order of their leading layers.

    Raises:
        UnsupportedModelError: If the model cannot be traced, or no unit is left to prune
            (naming a frozen unit's leading layer and why).
    """
    from autoshrink.compression._depgraph import analyse
    from autoshrink.compression._pristine import untouched
    from autoshrink.compression._verify import failing_units

    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise UnsupportedModelError(f"round_to must be a positive integer, got {round_to!r}")
    ignored = _ignored(model, ignored_layers)
    with untouched(model):  # tracing switches to eval mode, and may fill a model's caches
        graph = analyse(model, example_input, round_to, ignored)
        while verify and (bad := failing_units(model, graph, example_input)):
            ignored.update(bad)
            graph = analyse(model, example_input, round_to, ignored)
    if not graph.units and graph.frozen:
        root, why = next(iter(graph.frozen.items()))
        raise UnsupportedModelError(
            f"no prunable unit left: all {len(graph.frozen)} are frozen, e.g. the one led by "
            f"layer {root!r}: {why}"
        )
    return graph


def _ignored(model: nn.Module, ignored_layers: Iterable[str | nn.Module] | None) -> dict[str, str]:
    """Resolve ``ignored_layers`` to every module name they cover, with the reason.

    Args:
        model: The model the layers belong to.
        ignored_layers: Modules, or their names, whose output channels stay fixed.

    Returns:
        Each ignored module's name, and of every module below it, mapped to why it is frozen.

    Raises:
        UnsupportedModelError: If an entry is not a module of the model.
    """
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    ignored: dict[str, str] = {}
    for item in ignored_layers or ():
        name = names.get(item) if isinstance(item, nn.Module) else item
        if not isinstance(name, str) or name not in modules:
            raise UnsupportedModelError(f"ignored layer {item!r} is not a module of the model")
        prefix = f"{name}." if name else ""
        for sub, _ in modules[name].named_modules():
            ignored[prefix + sub if sub else name] = f"it holds {name}, an ignored layer"
    return ignored
