"""The per-unit breakdown: its rows add up to the exact cost model, before and after."""

from __future__ import annotations

import pytest
import torch

from autoshrink.compression.breakdown import FIXED, OTHER, UNIT, breakdown
from autoshrink.compression.cost import cost_from_channels
from autoshrink.compression.errors import PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import kept_channels, layer_bits, uniform_policy
from autoshrink.compression.units import build_units


@pytest.mark.parametrize("name", ["resnet20", "smallcnn", "mobilenet_v2"])
def test_rows_add_up_to_the_cost_model(name):
    graph = build_units(build_model(ModelSpec(name, 10, 3)), torch.zeros(1, 3, 32, 32))
    first, last = graph.layers[0].name, graph.layers[-1].name
    policy = uniform_policy(graph, keep=0.4, bits=4, pinned={first: 8, last: 8})
    kept, bits = kept_channels(policy, graph), layer_bits(policy, graph)
    table = breakdown(graph, kept, bits, policy.layers)
    assert table.before == cost_from_channels(graph, {})
    assert table.after == cost_from_channels(graph, kept, bits)
    for metric in ("macs", "params", "bytes"):
        for side in ("before", "after"):
            assert sum(getattr(getattr(r, side), metric) for r in table.rows) == getattr(
                getattr(table, side), metric
            ), (metric, side)
    # every layer and norm of these models has an owner: there is no remainder row
    assert OTHER not in {r.kind for r in table.rows}
    units = [r for r in table.rows if r.kind == UNIT]
    assert [r.name for r in units] == list(graph.unit_names)
    assert [r.kept for r in units] == [kept[u.name] for u in graph.units]
    assert all(r.bits == 4 for r in units if set(r.layers) - set(r.pinned))
    # the first layer is pinned inside its unit; the classifier, owned by none, is a row
    assert units[0].pinned == {first: 8} and units[0].layers[0] == first
    (fixed,) = [r for r in table.rows if r.kind == FIXED]
    assert fixed.name == last and fixed.pinned == {last: 8} and fixed.bits == 8
    assert all(r.after.macs <= r.before.macs for r in table.rows)


def test_unknown_layers_and_bad_bits_are_policy_errors():
    graph = build_units(build_model(ModelSpec("smallcnn", 10, 1)), torch.zeros(1, 1, 8, 8))
    with pytest.raises(PolicyError, match="no conv or linear layer named 'ghost'"):
        breakdown(graph, {}, {"ghost": 4})
    with pytest.raises(PolicyError, match=r"must be an integer in 1\.\.32"):
        breakdown(graph, {}, {graph.layers[0].name: 64})
    with pytest.raises(PolicyError):
        breakdown(graph, {graph.units[0].name: 0}, {})
