from __future__ import annotations

import numpy as np
import pytest
import torch

from autoshrink.compression.apply import apply_policy
from autoshrink.compression.cost import cost
from autoshrink.compression.counting import count_bytes, count_macs, count_params
from autoshrink.compression.errors import PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy, layer_bits
from autoshrink.compression.quantize import fake_quantize
from autoshrink.compression.units import build_units


@pytest.mark.parametrize("name", ["resnet20", "smallcnn"])
def test_apply_prunes_then_quantizes_exactly_as_costed(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, num_classes=10, in_channels=1))
    x = torch.randn(2, 1, 8, 8)
    reference = model(x).detach().clone()
    graph = build_units(model, x[:1])
    rng = np.random.default_rng(0)
    units = {
        u.name: UnitPolicy(keep=float(rng.uniform(0.1, 1.0)), bits=int(rng.choice([2, 4, 8, 32])))
        for u in graph.units
    }
    policy = Policy(units=units, layers={graph.layers[-1].name: 8})
    small = apply_policy(model, graph, policy)
    assert torch.equal(model(x), reference)  # the original is untouched
    assert small(x).shape == (2, 10)
    bits = layer_bits(policy, graph)
    expected = cost(graph, policy.keep(), bits)
    quantized = {k: b for k, b in bits.items() if b < 32}
    assert count_macs(small, x[:1]) == expected.macs
    assert count_params(small) == expected.params
    assert count_bytes(small, quantized) == expected.bytes
    layers = dict(small.named_modules())
    for layer, b in quantized.items():
        weight = layers[layer].weight.detach()
        assert torch.allclose(fake_quantize(weight, b), weight, atol=1e-6)  # on the b-bit grid


def test_apply_refuses_foreign_units() -> None:
    model = build_model(ModelSpec("smallcnn", num_classes=10, in_channels=1))
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    with pytest.raises(PolicyError, match="unknown units"):
        apply_policy(model, graph, Policy(units={"nope": UnitPolicy(keep=0.5)}))
