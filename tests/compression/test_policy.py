from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from autoshrink.compression.errors import PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import (
    POLICY_VERSION,
    Policy,
    UnitPolicy,
    act_bits,
    kept_channels,
    layer_bits,
    uniform_policy,
    validate,
)
from autoshrink.compression.units import UnitGraph, build_units


@pytest.fixture(scope="module")
def graph() -> UnitGraph:
    model = build_model(ModelSpec("resnet20", num_classes=10, in_channels=1))
    return build_units(model, torch.zeros(1, 1, 8, 8))


def test_round_trip_through_json_file(graph: UnitGraph, tmp_path: Path) -> None:
    policy = Policy(
        units={
            u.name: UnitPolicy(keep=0.25 + 0.05 * i, bits=2 + i % 7, channels=u.c_out)
            for i, u in enumerate(graph.units)
        },
        layers={graph.layers[0].name: 8},
        round_to=2,
        meta={"model": "resnet20", "budgets": {"flops": 0.2}},
    )
    loaded = Policy.load(policy.save(tmp_path / "p.json"))
    assert loaded == policy
    assert json.loads((tmp_path / "p.json").read_text())["version"] == POLICY_VERSION


def test_layer_bits_override_then_unit_then_float(graph: UnitGraph) -> None:
    unit = graph.units[1]
    first = graph.layers[0].name
    policy = Policy(units={unit.name: UnitPolicy(bits=3, act_bits=6)}, layers={first: 8})
    bits = layer_bits(policy, graph)
    assert set(bits) == {layer.name for layer in graph.layers}
    for name in unit.layers:
        assert bits[name] == (8 if name == first else 3)
    assert bits[first] == 8
    owned = {n for u in graph.units for n in u.layers}
    fixed = [layer.name for layer in graph.layers if layer.name not in owned]
    assert fixed, "the classifier's output channels belong to no unit"
    assert all(bits[n] == 32 for n in fixed)
    assert act_bits(policy, graph) == dict.fromkeys(unit.layers, 6)


def test_kept_channels_use_the_units_rounding(graph: UnitGraph) -> None:
    policy = uniform_policy(graph, keep=0.5, bits=4)
    kept = kept_channels(policy, graph)
    assert kept == {u.name: u.kept(0.5) for u in graph.units}
    assert kept_channels(Policy(), graph) == {u.name: u.c_out for u in graph.units}


def test_validate_lists_every_mismatch(graph: UnitGraph) -> None:
    good = uniform_policy(graph, keep=0.5)
    validate(good, graph)
    units = dict(good.units)
    first = graph.units[0]
    units[first.name] = UnitPolicy(keep=0.5, channels=first.c_out + 1)
    del units[graph.units[1].name]
    units["no.such.layer"] = UnitPolicy()
    with pytest.raises(PolicyError) as exc:
        validate(Policy(units=units, layers={"ghost": 8}), graph)
    msg = str(exc.value)
    for needle in ("no.such.layer", graph.units[1].name, f"{first.c_out} channels", "ghost"):
        assert needle in msg
    validate(Policy(units={first.name: UnitPolicy(0.5)}), graph, allow_missing=True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "malformed"),
        ('{"type": "other", "version": 1, "data": {}}', "not an autoshrink policy"),
        ('{"type": "autoshrink.Policy", "version": 99, "data": {"units": {}}}', "newer"),
        (
            '{"type": "autoshrink.Policy", "version": 1, "data": {"units": {"a": {"keep": -0.5}}}}',
            "(0, 1]",
        ),
        (
            '{"type": "autoshrink.Policy", "version": 1, "data": {"units": {"a": {"keep": NaN}}}}',
            "(0, 1]",
        ),
        (
            '{"type": "autoshrink.Policy", "version": 1, "data": {"units": {"a": {"bits": 0}}}}',
            "2..8 or 32",
        ),
        (
            '{"type": "autoshrink.Policy", "version": 1, "data": {"units": {"a": {"bits": 64}}}}',
            "2..8 or 32",
        ),
        (
            '{"type": "autoshrink.Policy", "version": 1, "data": {"units": {"a": {"keep": "1"}}}}',
            "number",
        ),
    ],
)
def test_bad_policy_json_is_one_clear_error(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as exc:
        Policy.from_json(text)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unit_policy_checks_its_values() -> None:
    for keep in (0.0, 1.5, math.nan, math.inf):
        with pytest.raises(PolicyError):
            UnitPolicy(keep=keep)
    for bits in (1, 9, 16, 64):
        with pytest.raises(PolicyError):
            UnitPolicy(bits=bits)
    assert UnitPolicy(keep=1, bits=8).keep == 1
