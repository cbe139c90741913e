"""The exactness check the tests share: cost model against counts on really pruned models."""

from __future__ import annotations

import random

import torch
from torch import nn

from autoshrink.compression.cost import Cost, cost
from autoshrink.compression.counting import count_bytes, count_macs, count_params
from autoshrink.compression.prune import prune
from autoshrink.compression.units import UnitGraph, build_units

BITS = (2, 3, 4, 5, 6, 7, 8, 32)


def assert_exact(model: nn.Module, x: torch.Tensor, policies: int = 3, seed: int = 0) -> UnitGraph:
    """Build the units, then check ``policies`` seeded random joint policies exactly.

    Each policy is pruned with the l1 scorer (Torch-Pruning's, through the real groups),
    counted with FlopCounterMode, ``sum(numel)`` and the payload rule, and run once.
    """
    graph = build_units(model, x)
    assert cost(graph) == Cost(count_macs(model, x), count_params(model), count_bytes(model))
    with torch.no_grad():
        want_shape = model(x).shape
    rng = random.Random(seed)
    for i in range(policies):
        keep = {u.name: rng.uniform(0.05, 1.0) for u in graph.units}
        bits = {layer.name: rng.choice(BITS) for layer in graph.layers}
        pruned = prune(model, graph, keep, importance="l1").eval()
        got = Cost(count_macs(pruned, x), count_params(pruned), count_bytes(pruned, bits))
        assert got == cost(graph, keep, bits), f"policy {i}"
        with torch.no_grad():
            assert pruned(x).shape == want_shape
    return graph
