"""Prune a model once for real and hold the cost model to it (private to ``units``).

Which groups Torch-Pruning can follow is judged op by op in ``_ops``; this is the check
behind that judgement. Every unit is cut to about half its channels (scattered ones, so
that an index mapping that is off shows), the pruned model runs once under
FlopCounterMode, and its MACs, parameters, bytes and every layer's width must equal the
cost model's. A unit that breaks the forward pass or the numbers is found by bisection and
frozen, so a graph that :func:`~autoshrink.compression.units.build_units` returns never
promises a cost that pruning cannot realise.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from autoshrink.compression._pristine import untouched
from autoshrink.compression.cost import cost_from_channels, removed_channels
from autoshrink.compression.counting import count_bytes, count_params, run_counted
from autoshrink.compression.errors import first_line
from autoshrink.compression.unit_graph import Unit, UnitGraph

logger = logging.getLogger(__name__)


def _target(unit: Unit) -> int:
    """A kept count below the unit's width: about half, else the smallest allowed."""
    kept = unit.kept(0.5)
    return kept if kept < unit.c_out else unit.kept(1e-9)


def _widths(model: nn.Module, graph: UnitGraph) -> list[np.ndarray]:
    """Out and in channels of every layer (-1: in of depthwise), channels of every norm."""
    from autoshrink.compression._assemble import norm_channels
    from autoshrink.compression._depgraph import width

    modules = dict(model.named_modules())
    outs = [width(modules[layer.name], "out") for layer in graph.layers]
    ins = [width(modules[layer.name], "in") for layer in graph.layers]
    params = dict(model.named_parameters())
    dims = {e.module: e.dim for e in graph.plan}
    norms = [
        width(params[n], dims[n]) if dims[n].startswith("p") else norm_channels(modules[n])
        for n in graph.coupling.norm_names
    ]
    dw = graph.coupling.layer_dw
    return [np.array(outs, np.int64), np.where(dw, -1, np.array(ins, np.int64)), np.array(norms)]


def _mismatch(
    model: nn.Module, graph: UnitGraph, kept: dict[str, int], x: torch.Tensor, shape: object
) -> str:
    """What differs between the pruned model and the cost model ('' if nothing)."""
    from autoshrink.compression.prune import prune_channels

    gen = torch.Generator().manual_seed(0)
    scores = {u.name: torch.rand(u.c_out, generator=gen) for u in graph.units}
    try:
        pruned = prune_channels(model, graph, kept, scores=scores).eval()
        out, counter = run_counted(pruned, x)
    except Exception as exc:  # whatever breaks is the finding, reported in one line
        return f"pruning it breaks the forward pass ({first_line(exc)})"
    want = cost_from_channels(graph, kept)
    got = (int(counter.get_total_flops()) // 2, count_params(pruned), count_bytes(pruned))
    if got != (want.macs, want.params, want.bytes):
        return f"pruned, it costs {got}, not the cost model's {tuple(want.__dict__.values())}"
    if getattr(out, "shape", None) != shape:
        return "pruning it changes the shape of the model output"
    c = graph.coupling
    r = removed_channels(graph, kept)
    expected = (
        c.layer_out0 - c.layer_out_a @ r,
        np.where(c.layer_dw, -1, c.layer_in0 - c.layer_in_a @ r),  # dw: in follows out
        c.norm_c0 - c.norm_a @ r,
    )
    for have, should in zip(_widths(pruned, graph), expected, strict=True):
        if not np.array_equal(have, should):
            return "pruning it leaves a layer at another width than the cost model's"
    return ""


def _failing(
    model: nn.Module, graph: UnitGraph, x: torch.Tensor, names: list[str], shape: object
) -> dict[str, str]:
    why = _mismatch(model, graph, {n: _target(graph.unit(n)) for n in names}, x, shape)
    if not why or len(names) == 1:
        return {names[0]: why} if why else {}
    half = len(names) // 2
    found = {
        **_failing(model, graph, x, names[:half], shape),
        **_failing(model, graph, x, names[half:], shape),
    }
    # Each half alone is fine, together they are not: none of them can be trusted.
    return found or {n: f"pruned with other units, {why}" for n in names}


def failing_units(model: nn.Module, graph: UnitGraph, x: torch.Tensor) -> dict[str, str]:
    """The units whose real pruning disagrees with the cost model, with the reason.

    ``model`` must be in eval mode.
    """
    names = [u.name for u in graph.units if _target(u) < u.c_out]
    if not names:
        return {}
    with torch.no_grad(), untouched(model):  # pruning copies the model: leave no cache
        shape = getattr(model(x), "shape", None)
    found = _failing(model, graph, x, names, shape)
    for name, why in found.items():
        logger.info("unit %s is frozen: %s", name, why)
    return found
