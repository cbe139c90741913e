"""The cost model is exact: analytic MACs, params and bytes equal counts on pruned models."""

from __future__ import annotations

import math
import pickle
import random
import timeit

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from autoshrink.compression.cost import Cost, cost, cost_from_channels, tensor_bytes
from autoshrink.compression.counting import count_bytes, count_macs, count_params
from autoshrink.compression.errors import PolicyError
from autoshrink.compression.importance import channel_scores
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.prune import prune
from autoshrink.compression.units import UnitGraph, build_units

BITS = (2, 3, 4, 5, 6, 7, 8, 32)
NUM_CLASSES = 10
# Small inputs keep the suite fast; at 64x64 the torchvision models keep a few pixels.
MODELS = [
    ("resnet20", (1, 3, 32, 32)),
    ("smallcnn", (1, 3, 32, 32)),
    ("resnet18", (1, 3, 64, 64)),
    ("mobilenet_v2", (1, 3, 64, 64)),
    ("mobilenet_v3_small", (1, 3, 64, 64)),
    ("efficientnet_b0", (1, 3, 64, 64)),
    ("regnet_x_400mf", (1, 3, 64, 64)),
    ("resnet50", (1, 3, 64, 64)),
    ("resnet56", (1, 3, 32, 32)),
    ("densenet121", (1, 3, 32, 32)),
    ("vgg11_bn", (1, 3, 32, 32)),
]  # each model takes < 30 s on one thread, so none needs the slow mark
VECTORS_PER_ROUNDING = 10  # x2 roundings = 20 random policies per model


def _policy(graph: UnitGraph, seed: str) -> tuple[dict[str, float], dict[str, int]]:
    rng = random.Random(seed)
    keep = {u.name: rng.uniform(0.05, 1.0) for u in graph.units}
    bits = {layer.name: rng.choice(BITS) for layer in graph.layers}
    return keep, bits


@pytest.mark.parametrize(("name", "shape"), MODELS)
def test_cost_equals_counts_on_the_pruned_model(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, num_classes=NUM_CLASSES))
    x = torch.zeros(shape)
    full = Cost(count_macs(model, x), count_params(model), count_bytes(model))
    for round_to in (1, 8):
        graph = build_units(model, x, round_to=round_to)
        assert graph.units, f"{name} has no prunable unit"
        assert cost(graph) == full
        scores = channel_scores(graph, model, "random", seed=round_to)
        for i in range(VECTORS_PER_ROUNDING):
            keep, bits = _policy(graph, f"{name}/{round_to}/{i}")
            if i == 0:  # the floor everywhere: the most aggressive policy
                keep = dict.fromkeys(keep, 0.05)
            pruned = prune(model, graph, keep, scores=scores)
            want = cost(graph, keep, bits)
            got = Cost(count_macs(pruned, x), count_params(pruned), count_bytes(pruned, bits))
            assert got == want, f"{name} round_to={round_to} policy {i}"
            assert want.macs < full.macs and want.params < full.params
            kept = {u.name: u.kept(keep[u.name]) for u in graph.units}
            assert cost_from_channels(graph, kept, bits) == want
            modules = dict(pruned.named_modules())
            for u in graph.units:
                root = modules[u.name]
                assert (
                    getattr(root, "out_channels", getattr(root, "out_features", None))
                    == kept[u.name]
                )
            with torch.no_grad():
                out = pruned(torch.randn(2, *shape[1:]))
            assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


def test_tensor_bytes_is_the_packed_size_plus_scales() -> None:
    for numel, bits, c_out in [(1000, 4, 10), (27, 3, 3), (1, 2, 1), (4096, 8, 64)]:
        assert tensor_bytes(numel, bits, c_out) == math.ceil(numel * bits / 8) + 4 * c_out
        assert tensor_bytes(numel, 32, c_out) == 4 * numel


def test_count_bytes_counts_float_buffers_but_not_integer_ones() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8))
    weight = 8 * 3 * 9
    bn = 4 * 8  # weight, bias, running_mean, running_var; num_batches_tracked is an int
    assert count_bytes(model) == 4 * (weight + bn)
    assert count_bytes(model, {"0": 4}) == math.ceil(weight * 4 / 8) + 4 * 8 + 4 * bn
    with pytest.raises(PolicyError, match="no conv or linear layer named '1'"):
        count_bytes(model, {"1": 4})


@pytest.fixture(scope="module")
def resnet20_graph() -> UnitGraph:
    model = build_model(ModelSpec("resnet20", num_classes=NUM_CLASSES, in_channels=1))
    return build_units(model, torch.zeros(1, 1, 8, 8))


def test_cost_rejects_what_is_not_in_the_graph(resnet20_graph: UnitGraph) -> None:
    g = resnet20_graph
    with pytest.raises(PolicyError, match="unknown unit 'nope'"):
        cost(g, {"nope": 0.5})
    with pytest.raises(PolicyError, match=r"no conv or linear layer named 'conv1\.bn'"):
        cost(g, bits={"conv1.bn": 4})
    with pytest.raises(PolicyError, match="bits of layer conv1"):
        cost(g, bits={"conv1": 0})
    with pytest.raises(PolicyError, match="keeps 0 channels"):
        cost_from_channels(g, {"conv1": 0})
    with pytest.raises(PolicyError, match="keeps 17 channels"):
        cost_from_channels(g, {"conv1": 17})
    with pytest.raises(PolicyError, match="must be an integer"):
        cost_from_channels(g, {"conv1": 7.5})  # type: ignore[dict-item]


def test_graph_pickles_with_its_costs(resnet20_graph: UnitGraph) -> None:
    keep = {u.name: 0.5 for u in resnet20_graph.units}
    clone = pickle.loads(pickle.dumps(resnet20_graph))
    assert cost(clone, keep) == cost(resnet20_graph, keep)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_cost_never_grows_when_a_unit_shrinks(
    data: st.DataObject, resnet20_graph: UnitGraph
) -> None:
    g = resnet20_graph
    kept = {u.name: data.draw(st.integers(1, u.c_out), label=u.name) for u in g.units}
    unit = data.draw(st.sampled_from(g.units))
    bits = {layer.name: data.draw(st.sampled_from(BITS)) for layer in g.layers}
    before = cost_from_channels(g, kept, bits)
    smaller = dict(kept, **{unit.name: max(1, kept[unit.name] - 1)})
    after = cost_from_channels(g, smaller, bits)
    assert after.macs <= before.macs and after.params <= before.params
    assert after.bytes <= before.bytes


def test_cost_from_channels_is_fast() -> None:
    model = build_model(ModelSpec("resnet56", num_classes=NUM_CLASSES))
    graph = build_units(model, torch.zeros(1, 3, 32, 32))
    kept = {u.name: u.kept(0.5) for u in graph.units}
    bits = {layer.name: 4 for layer in graph.layers}
    best = min(timeit.repeat(lambda: cost_from_channels(graph, kept, bits), number=200, repeat=5))
    assert best / 200 < 2e-3  # typically ~0.1 ms; generous for a shared CPU
